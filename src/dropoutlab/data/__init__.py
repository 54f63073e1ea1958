"""Data sets as device tensors with fixed splits and seeded stratified subsets (§6.1, Fig. 10).

:func:`load` turns a :class:`~dropoutlab.config.DataConfig` into a :class:`Dataset` whose six
tensors already live on the training device, so the training loop only slices them.

Conventions (for every data set; :mod:`dropoutlab.data.sources` documents each split):

* ``*_x`` are float32 and **flattened to (N, D)**; ``input_shape`` holds the image shape
  (C, H, W) and the conv net reshapes its input to it, the MLP and autoencoder use it as is.
  Pixels are in [0, 1] as in the paper's MNIST nets; ``standardize=True`` instead subtracts the
  training split's per-feature mean and divides by its overall standard deviation (for a
  user's file, dataset ``"file"``, by each feature's own standard deviation).
* ``*_y`` are int64 class indices.
* ``train_size``: a stratified subset of that many training examples drawn with
  :func:`stratified_subset` and the **run seed** (Figure 10's data-set-size experiment), so
  seeds differ in both the subset and the initialisation.
* ``merge_validation``: the paper's protocol "tune on validation, then train on train +
  validation" (§6.1.1, Appendix B.1). The validation split is appended to training (before any
  ``train_size`` subset is drawn) and the validation tensors are empty.

MNIST is cached as ``.npz`` under :func:`~dropoutlab.data.sources.default_cache_dir`
(``$DROPOUTLAB_CACHE``) once its checksum has been verified; the cache file name holds the
checksum. The cached arrays are checksummed too (:data:`MNIST_ARRAYS_SHA256`, over names,
dtypes, shapes and bytes), so a cache that fails to load, has the wrong shapes or has been
edited (labels shifted, say) is rebuilt from the verified source, with a warning. Every data
set's splits are checked before training (2-D inputs of the data set's width, one label per
row, labels in 0..classes-1), and a ``data_dir`` that is not an existing folder is refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dropoutlab.config import DataConfig
from dropoutlab.data import sources
from dropoutlab.data.sources import MNIST_SHA256, RawSplits, default_cache_dir
from dropoutlab.errors import DataError

__all__ = ["Dataset", "default_cache_dir", "load", "read_splits", "stratified_subset"]

log = logging.getLogger(__name__)

_FIELDS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")

# SHA-256 of the six MNIST arrays as read from the verified mnist.pkl.gz (see _arrays_digest);
# a test recomputes it from the source.
MNIST_ARRAYS_SHA256 = "3e96546c7f9ecd9aaf57832de48f7cc83a26bb19c0cc5d97e0f902ef03efe21e"
_verified_caches: set[tuple[str, int, int, int]] = set()  # (path, inode, size, mtime) checked


def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over each split's name, dtype, shape and bytes, in :data:`_FIELDS` order."""
    digest = hashlib.sha256()
    for name in _FIELDS:
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name} {array.dtype.str} {array.shape}\n".encode())
        digest.update(array.data)
    return digest.hexdigest()


@dataclass(frozen=True)
class Dataset:
    """A data set's fixed splits as tensors on one device.

    Attributes:
        train_x, val_x, test_x: float32 inputs, flattened to (N, D).
        train_y, val_y, test_y: int64 labels, (N,).
        input_shape: The shape of one example before flattening, e.g. (1, 28, 28).
        num_classes: Number of classes.
        name: The data set's name, e.g. ``"mnist"``.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int
    name: str

    @property
    def input_dim(self) -> int:
        """Number of input features D (the product of ``input_shape``)."""
        return int(np.prod(self.input_shape))

    def sizes(self) -> dict[str, int]:
        """Examples per split: ``{"train": ..., "val": ..., "test": ...}``."""
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


def stratified_subset(
    x: torch.Tensor, y: torch.Tensor, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded subset of ``size`` examples with class proportions kept (Figure 10).

    Each class contributes ``size × class share`` examples, rounded by largest remainder so the
    total is exactly ``size``; which examples are chosen, and their order, come from ``seed``.

    Args:
        x: Inputs (N, ...).
        y: Integer labels (N,).
        size: Number of examples wanted, 1 ≤ size ≤ N.
        seed: Seed of the draw (a numpy ``Generator``; the same seed gives the same subset).

    Returns:
        ``(x_subset, y_subset)`` on the inputs' device, in a seeded random order.

    Raises:
        ValueError: ``size`` is not an integer in [1, N], or ``x`` and ``y`` disagree in length.
    """
    n = len(y)
    if len(x) != n:
        raise ValueError(f"`x` and `y` must have the same length, got {len(x)} and {n}")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= n:
        raise ValueError(f"`size` must be an integer in [1, {n}], got size={size!r}")
    labels = y.cpu().numpy()
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / n
    take = np.floor(exact).astype(int)
    remainder_order = np.argsort(-(exact - take), kind="stable")
    take[remainder_order[: size - int(take.sum())]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k]
              for c, k in zip(classes, take, strict=True)]
    index = rng.permutation(np.concatenate(chosen))
    index_t = torch.from_numpy(index).to(y.device)
    return x[index_t], y[index_t]


def _cache_path(cache_dir: Path) -> Path:
    return cache_dir / f"mnist-{MNIST_SHA256[:16]}.npz"


def _read_mnist_cached(data_dir: str | None) -> RawSplits:
    """MNIST from the ``.npz`` cache if present and its arrays' checksum matches, else from
    the verified source (rewriting the cache)."""
    if data_dir is None:
        cache = _cache_path(default_cache_dir())
        if cache.is_file():
            problem = "is unreadable"
            try:
                info = cache.stat()
                stamp = (str(cache), info.st_ino, info.st_size, info.st_mtime_ns)
                with np.load(cache, allow_pickle=False) as stored:
                    arrays = {name: stored[name] for name in _FIELDS}
                if stamp in _verified_caches or _arrays_digest(arrays) == MNIST_ARRAYS_SHA256:
                    _verified_caches.add(stamp)
                    return RawSplits.from_parts([arrays[n] for n in _FIELDS], (1, 28, 28), 10)
                problem = ("does not match the verified source (checksum of its arrays "
                           "differs: edited, or written by another version)")
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                pass
            log.warning("MNIST cache %s %s; rebuilding it from the source", cache, problem)
    raw = sources.read_mnist(data_dir)
    if data_dir is None:
        _write_cache(_cache_path(default_cache_dir()), raw)
    return raw


def _write_cache(path: Path, raw: RawSplits) -> None:
    """Write the cache atomically (temp file + rename); a failure only costs speed later."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **{name: getattr(raw, name) for name in _FIELDS})
        os.replace(tmp, path)
    except OSError as err:
        log.warning("could not write the MNIST cache %s: %s", path, err)


def check_splits(raw: RawSplits, name: str) -> None:
    """Refuse splits training would crash on or silently mislearn from.

    Raises:
        DataError: an input split is not 2-D with the data set's width, a label split does not
            have one label per row, or a label lies outside ``0..num_classes-1``.
    """
    width = int(np.prod(raw.input_shape))
    for split in ("train", "val", "test"):
        x, y = getattr(raw, f"{split}_x"), getattr(raw, f"{split}_y")
        if x.ndim != 2 or x.shape[1] != width:
            raise DataError(f"{name} {split} inputs must have shape (N, {width}), got "
                            f"{x.shape}; the data files are damaged: restore or rebuild them")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{name} {split} labels must have shape ({len(x)},), one per row, "
                            f"got {y.shape}; the data files are damaged: restore or rebuild them")
        if y.size and (int(y.min()) < 0 or int(y.max()) >= raw.num_classes):
            raise DataError(f"{name} {split} labels must lie in 0..{raw.num_classes - 1}, got "
                            f"{int(y.min())}..{int(y.max())}; the data files are damaged: "
                            f"restore or rebuild them")


def read_splits(data: DataConfig) -> RawSplits:
    """The fixed splits of ``data.dataset`` as numpy arrays (cached for MNIST).

    Raises:
        DataError: ``data.data_dir`` is given but is not an existing folder, or a data file is
            missing, truncated or tampered with.
    """
    if data.data_dir is not None and not Path(data.data_dir).is_dir():
        found = "is a file" if Path(data.data_dir).exists() else "does not exist"
        raise DataError(f"`data.data_dir` must be an existing folder, got "
                        f"{data.data_dir!r}, which {found}; pass the folder that holds the "
                        f"data files, or leave it out")
    if data.dataset == "mnist":
        return _read_mnist_cached(data.data_dir)
    if data.dataset == "file":  # a user's .npz/.csv/.parquet, checksum checked (data/user.py)
        from dropoutlab.data import user

        assert data.path is not None  # DataConfig requires it for "file"
        return user.read_file(data.path, target=data.target, sha256=data.sha256)
    return sources.read_raw(data.dataset, data.data_dir)


def load(data: DataConfig, *, seed: int, device: str | torch.device = "cpu") -> Dataset:
    """Load ``data`` as tensors on ``device``, applying merge, subset and standardisation.

    Args:
        data: Which data set and how (see the module docstring for the conventions).
        seed: The run seed; it draws the ``train_size`` subset.
        device: Where the tensors live.

    Returns:
        A :class:`Dataset`.

    Raises:
        DataError: a data file is missing, truncated or tampered with.
        ValueError: ``train_size`` exceeds the training split.
    """
    raw = read_splits(data)
    check_splits(raw, data.dataset)
    arrays = {name: torch.from_numpy(np.ascontiguousarray(getattr(raw, name)))
              for name in _FIELDS}
    if data.merge_validation:
        arrays["train_x"] = torch.cat([arrays["train_x"], arrays["val_x"]])
        arrays["train_y"] = torch.cat([arrays["train_y"], arrays["val_y"]])
        arrays["val_x"] = arrays["val_x"][:0]
        arrays["val_y"] = arrays["val_y"][:0]
    if data.train_size is not None:
        available = len(arrays["train_y"])
        if data.train_size > available:
            raise DataError(
                f"`data.train_size` must be at most the {available} training examples of "
                f"{data.dataset}, got train_size={data.train_size}"
            )
        arrays["train_x"], arrays["train_y"] = stratified_subset(
            arrays["train_x"], arrays["train_y"], data.train_size, seed
        )
    if data.standardize:
        mean = arrays["train_x"].mean(dim=0, keepdim=True)
        # A user's table mixes units, so each of its features gets its own scale.
        std = (arrays["train_x"].std(dim=0, keepdim=True) if data.dataset == "file"
               else arrays["train_x"].std()).clamp_min(1e-6)
        for split in ("train_x", "val_x", "test_x"):
            arrays[split] = (arrays[split] - mean) / std
    tensors = {name: t.to(device) for name, t in arrays.items()}
    return Dataset(**tensors, input_shape=raw.input_shape, num_classes=raw.num_classes,
                   name=data.dataset)
