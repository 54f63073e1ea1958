"""A user's own data: ``.npz``, ``.csv`` or ``.parquet`` files, checked before they are trusted.

* ``.npz``: arrays ``x`` (N, ...) and ``y`` (N,), and optionally ``x_val``/``y_val`` and
  ``x_test``/``y_test`` (each pair both or neither). ``x`` of shape (N, C, H, W) or (N, H, W)
  keeps its image shape (for the conv net); any other shape is flattened to (N, D).
* ``.csv`` (a header row, comma separated) or ``.parquet``: one row per example, the label in
  the column named by ``target``, every other column a numeric feature.

Labels may be integers or strings; they are mapped to class indices 0..K−1 in sorted order of
the training labels. Where the file has no validation split, a **stratified 20 % of the
training rows, drawn with the fixed seed 0**, is held out (the same split for every run, so
runs compare on the same examples; :data:`VALIDATION_FRACTION`). Where it has no test split the
test split is empty and no test error is measured.

Every problem raises :class:`~dropoutlab.errors.DataError` naming the file and what is wrong:
an unknown suffix, a missing array or column, ragged rows, non-numeric features, missing values,
NaN or inf, a single class, more classes than a classifier can learn from, or validation/test
labels the training split does not have. The SHA-256 of the file goes into the run's config
(``data.sha256``); :func:`read_file` refuses a file whose content changed since.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dropoutlab.data.formats import sha256_file
from dropoutlab.data.sources import RawSplits
from dropoutlab.errors import DataError

__all__ = ["SUFFIXES", "VALIDATION_FRACTION", "FileSummary", "read_file", "summarize"]

log = logging.getLogger(__name__)

SUFFIXES = (".npz", ".csv", ".parquet")
VALIDATION_FRACTION = 0.2  # held out when the file has no validation split (seed 0, stratified)
SPLIT_SEED = 0  # fixed, not the run seed: every run of a search sees the same validation rows


@dataclass(frozen=True)
class FileSummary:
    """What a data file holds, for messages and reports."""

    path: str
    sha256: str
    sizes: dict[str, int]
    num_features: int
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]
    validation: str  # where the validation split came from, in words


def _fail(path: Path, what: str) -> DataError:
    return DataError(f"data file {str(path)!r}: {what}")


def _check_x(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    if x.dtype == object:
        raise _fail(path, f"array {name!r} holds Python objects (ragged rows?); save a "
                          "rectangular numeric array")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise _fail(path, f"array {name!r} is not numeric (dtype {x.dtype})")
    if x.ndim < 2 or x.shape[0] == 0 or math.prod(x.shape[1:]) == 0:
        raise _fail(path, f"array {name!r} must have shape (N, features...) with N >= 1, got "
                          f"{x.shape}")
    x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x.reshape(len(x), -1))
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise _fail(path, f"array {name!r} has {int(bad.sum())} NaN or inf values (first in "
                          f"row {row})")
    return x


def _check_y(path: Path, name: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.dtype == object:
        raise _fail(path, f"array {name!r} holds Python objects; save integer or string labels")
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != n:
        raise _fail(path, f"array {name!r} must have shape ({n},) to match its inputs, got "
                          f"{y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise _fail(path, f"array {name!r} has NaN or inf labels")
        if not np.all(y == np.round(y)):
            raise _fail(path, f"array {name!r} has non-integer labels (a regression target?); "
                              "tune classifies: give class labels")
        y = y.astype(np.int64)
    return y


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as stored:
            names = set(stored.files)
            for needed in ("x", "y"):
                if needed not in names:
                    raise _fail(path, f"missing array {needed!r} (it holds {sorted(names)}); "
                                      "an .npz needs x and y, optionally x_val/y_val, "
                                      "x_test/y_test")
            for split in ("val", "test"):
                if (f"x_{split}" in names) != (f"y_{split}" in names):
                    have, lack = ((f"x_{split}", f"y_{split}") if f"x_{split}" in names
                                  else (f"y_{split}", f"x_{split}"))
                    raise _fail(path, f"has {have!r} but is missing array {lack!r}")
            arrays = {name: stored[name] for name in
                      ("x", "y", "x_val", "y_val", "x_test", "y_test") if name in names}
    except DataError:
        raise
    except ValueError as err:  # object arrays need pickle, which we never allow
        raise _fail(path, f"cannot be read without pickle ({err}); save numeric arrays "
                          "(ragged rows are object arrays)") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise _fail(path, f"is not a readable .npz file ({err})") from None
    return arrays


def _to_float(path: Path, column: str, line: int, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        if not text.strip():
            raise _fail(path, f"missing value in feature column {column!r} on line {line}"
                        ) from None
        raise _fail(path, f"non-numeric feature {text!r} in column {column!r} on line {line}; "
                          "features must be numbers") from None
    if not math.isfinite(value):
        raise _fail(path, f"NaN or inf value {text!r} in column {column!r} on line {line}")
    return value


def _table_columns(path: Path, header: list[str], target: str | None) -> int:
    if target is None:
        raise _fail(path, f"a table needs --target (data.target): the label column, one of "
                          f"{header}")
    if target not in header:
        raise _fail(path, f"has no target column {target!r}; its columns are {header}")
    if len(header) < 2:
        raise _fail(path, "has no feature columns besides the target")
    return header.index(target)


def _read_csv(path: Path, target: str | None) -> dict[str, np.ndarray]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise _fail(path, "is empty (a .csv needs a header row)")
            header = [name.strip() for name in header]
            t = _table_columns(path, header, target)
            features = [name for i, name in enumerate(header) if i != t]
            rows: list[list[float]] = []
            labels: list[str] = []
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != len(header):
                    raise _fail(path, f"ragged rows: line {line} has {len(row)} fields, the "
                                      f"header has {len(header)}")
                label = row[t].strip()
                if not label:
                    raise _fail(path, f"missing label in column {target!r} on line {line}")
                labels.append(label)
                rows.append([_to_float(path, features[j], line, text) for j, text in
                             enumerate(row[:t] + row[t + 1:])])
    except UnicodeDecodeError as err:
        raise _fail(path, f"is not UTF-8 text ({err})") from None
    except csv.Error as err:
        raise _fail(path, f"is not a valid CSV file ({err})") from None
    if not rows:
        raise _fail(path, "has a header but no rows")
    y = np.array(labels)
    with contextlib.suppress(ValueError):  # integer labels sort as numbers ("9" < "10")
        y = y.astype(np.int64)
    return {"x": np.array(rows, dtype=np.float32), "y": y}


def _read_parquet(path: Path, target: str | None) -> dict[str, np.ndarray]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise _fail(path, "reading .parquet needs pyarrow: pip install pyarrow "
                          "(or save the table as .csv)") from None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise _fail(path, f"is not a readable parquet file ({err})") from None
    header = list(table.column_names)
    t = _table_columns(path, header, target)
    columns = []
    for i, name in enumerate(header):
        if i == t:
            continue
        column = table.column(name)
        kind = column.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                or pa.types.is_boolean(kind)):
            raise _fail(path, f"non-numeric feature column {name!r} (type {kind}); features "
                              "must be numbers")
        if column.null_count:
            raise _fail(path, f"missing values: {column.null_count} nulls in column {name!r}")
        columns.append(column.to_numpy(zero_copy_only=False).astype(np.float32))
    label_column = table.column(header[t])
    if label_column.null_count:
        raise _fail(path, f"missing labels: {label_column.null_count} nulls in column "
                          f"{header[t]!r}")
    y = label_column.to_numpy(zero_copy_only=False)
    if y.dtype == object:
        y = y.astype(str)
    x = np.stack(columns, axis=1) if columns else np.zeros((len(y), 0), np.float32)
    return {"x": x, "y": y}


def _stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a seeded stratified ``fraction`` of the rows: round(N·fraction) rows in
    all, each class its share by largest remainder, at least one per class."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    total = max(len(classes), round(len(y) * fraction))
    exact = counts * total / len(y)
    take = np.floor(exact).astype(int)
    order = np.argsort(-(exact - take), kind="stable")
    take[order[: total - int(take.sum())]] += 1
    take = np.clip(take, 1, counts - 1)
    mask = np.zeros(len(y), dtype=bool)
    for c, k in zip(classes, take, strict=True):
        mask[rng.permutation(np.flatnonzero(y == c))[:k]] = True
    return mask


def _input_shape(x: np.ndarray) -> tuple[int, ...]:
    if x.ndim == 4:
        return tuple(int(s) for s in x.shape[1:])
    if x.ndim == 3:
        return (1, int(x.shape[1]), int(x.shape[2]))
    return (int(math.prod(x.shape[1:])),)


def _parse(path: Path, target: str | None) -> tuple[RawSplits, tuple[str, ...], str]:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = _read_npz(path)
    elif suffix == ".csv":
        arrays = _read_csv(path, target)
    else:
        arrays = _read_parquet(path, target)
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (xn, yn) in {"train": ("x", "y"), "val": ("x_val", "y_val"),
                            "test": ("x_test", "y_test")}.items():
        if xn in arrays:
            x = _check_x(path, xn, arrays[xn])
            splits[split] = (x, _check_y(path, yn, arrays[yn], len(x)))
    shape = _input_shape(splits["train"][0])
    for split, (x, _) in splits.items():
        if _input_shape(x) != shape:
            raise _fail(path, f"the {split} inputs have shape {x.shape[1:]} per example, the "
                              f"training inputs {splits['train'][0].shape[1:]}")
    train_y = splits["train"][1]
    try:
        classes = np.unique(train_y)
    except TypeError:
        raise _fail(path, "labels mix numbers and text") from None
    n = len(train_y)
    if len(classes) < 2:
        raise _fail(path, f"has a single class ({classes[0]!r}) in its training labels; a "
                          "classifier needs at least two")
    if "val" not in splits and len(classes) * 2 > n:
        raise _fail(path, f"has more classes than labels: {len(classes)} classes for {n} "
                          "training rows (a stratified split needs at least two rows per "
                          "class; is the target a continuous value?)")
    if "val" not in splits:
        counts = np.unique(train_y, return_counts=True)
        if counts[1].min() < 2:
            lonely = counts[0][counts[1] < 2][:5].tolist()
            raise _fail(path, f"classes {lonely} have a single row: a stratified validation "
                              "split needs at least two rows per class (or give x_val/y_val)")
    if "val" in splits:
        validation = "the file's own validation split"
    else:
        mask = _stratified_holdout(train_y, VALIDATION_FRACTION, SPLIT_SEED)
        x = splits["train"][0]
        splits["val"] = (x[mask], train_y[mask])
        splits["train"] = (x[~mask], train_y[~mask])
        validation = (f"a stratified {VALIDATION_FRACTION * 100:.0f} % of the training rows "
                      f"held out (seed {SPLIT_SEED}): the file has no validation split")
    parts: list[np.ndarray] = []
    for split in ("train", "val", "test"):
        x, y = splits.get(split, (np.zeros((0, *splits["train"][0].shape[1:]), np.float32),
                                  train_y[:0]))
        unknown = np.setdiff1d(np.unique(y), classes)
        if unknown.size:
            raise _fail(path, f"has more classes than its training labels: the {split} split "
                              f"has labels {unknown[:5].tolist()} that training has not")
        parts += [np.ascontiguousarray(x.reshape(len(x), math.prod(shape)), dtype=np.float32),
                  np.asarray(np.searchsorted(classes, y), dtype=np.int64)]
    raw = RawSplits.from_parts(parts, shape, len(classes))
    return raw, tuple(str(c) for c in classes.tolist()), validation


def _checked_path(path: str | Path) -> Path:
    p = Path(path)
    if p.suffix.lower() not in SUFFIXES:
        raise DataError(f"data file {str(p)!r}: unknown format {p.suffix or '(no suffix)'!r}; "
                        f"expected one of {', '.join(SUFFIXES)}")
    if not p.is_file():
        raise DataError(f"data file {str(p)!r} does not exist" if not p.exists()
                        else f"data file {str(p)!r} is not a file")
    return p


def read_file(path: str | Path, *, target: str | None = None,
              sha256: str | None = None) -> RawSplits:
    """The splits of a user's data file (see the module docstring for the formats and checks).

    Args:
        path: A ``.npz``, ``.csv`` or ``.parquet`` file.
        target: The label column of a table (ignored for ``.npz``).
        sha256: The checksum the run's config recorded; a file whose content differs is
            refused (it changed since the config was made). None skips the check.

    Raises:
        DataError: the file is missing, unreadable, changed, or its content is unusable.
    """
    p = _checked_path(path)
    if sha256 is not None:
        digest = sha256_file(p)
        if digest != sha256:
            raise DataError(f"data file {str(p)!r} has changed since the config was made: its "
                            f"SHA-256 is {digest}, the config says {sha256}; make the config "
                            "again from this file (--data) or restore the file")
    return _parse(p, target)[0]


def summarize(path: str | Path, *, target: str | None = None) -> FileSummary:
    """Read and check a data file once, and describe it (the CLI prints this before running).

    Raises:
        DataError: as :func:`read_file`.
    """
    p = _checked_path(path)
    digest = sha256_file(p)
    raw, classes, validation = _parse(p, target)
    return FileSummary(path=str(p), sha256=digest,
                       sizes={"train": len(raw.train_y), "val": len(raw.val_y),
                              "test": len(raw.test_y)},
                       num_features=int(raw.train_x.shape[1]), input_shape=raw.input_shape,
                       classes=classes, validation=validation)
