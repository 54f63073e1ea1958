"""Safe readers for the standard distribution formats of the paper's data sets (§6.1).

Every reader checks structure before trusting it and raises :class:`~dropoutlab.errors.DataError`
naming the file, what was expected and how to get a good copy:

* :func:`read_pickle_arrays`: Python pickles (MNIST's ``mnist.pkl.gz``, CIFAR "python version"
  batches) through :class:`RestrictedUnpickler`, which admits numpy arrays, their dtypes and the
  plain containers pickles are built from, and nothing else (no arbitrary callables).
* :func:`read_idx`: the IDX files of MNIST and Fashion-MNIST (optionally gzipped).
* :func:`read_cifar_binary`: CIFAR-10/100 "binary version" records.
* :func:`read_svhn_mat`: SVHN's cropped-digit ``.mat`` files (format 2).
* :func:`sha256_file`: checksums for files whose exact content we know.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

from dropoutlab.errors import DataError

__all__ = [
    "RestrictedUnpickler",
    "read_cifar_binary",
    "read_idx",
    "read_pickle_arrays",
    "read_svhn_mat",
    "sha256_file",
]

# The only globals a pickle of numpy arrays needs. numpy 2 moved ``numpy.core`` to
# ``numpy._core``; old pickles (MNIST's is a Python 2 pickle) name the old path.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    # Python 3 writes ``bytes`` in protocol ≤ 2 pickles as _codecs.encode(text, "latin1"):
    # a pure string-to-bytes function, harmless to admit.
    ("_codecs", "encode"): codecs.encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers and refuses everything else.

    A pickle can name any importable callable and call it while loading; this one resolves only
    the handful of numpy names that reconstruct arrays, so a tampered file cannot run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global only if it is one of the numpy array constructors."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays are allowed"
            ) from None


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_bytes(path: Path, how_to_get: str) -> bytes:
    """All bytes of ``path``, transparently gunzipped when the name ends in ``.gz``."""
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist; {how_to_get}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"data file {str(path)!r} is truncated or corrupt ({err}); {how_to_get}"
        ) from None


def read_pickle_arrays(path: Path, how_to_get: str) -> Any:
    """Unpickle ``path`` (gzipped if it ends in ``.gz``) admitting only numpy arrays.

    Python 2 pickles are read with ``encoding="latin1"``, the documented way to load numpy
    arrays pickled by Python 2; dictionary keys stay ``bytes``.

    Raises:
        DataError: the file is missing, truncated, not a pickle, or names anything but numpy
            arrays.
    """
    raw = _read_bytes(path, how_to_get)
    try:
        return RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
            struct.error, AttributeError) as err:
        raise DataError(
            f"data file {str(path)!r} is not a valid pickle of numpy arrays ({err}); {how_to_get}"
        ) from None


# IDX type byte → numpy dtype (multi-byte types are big-endian).
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8",
}


def read_idx(path: Path, how_to_get: str, *, ndim: int) -> np.ndarray:
    """Read an IDX file (MNIST / Fashion-MNIST format): magic, dimensions, then row-major data.

    Args:
        path: The file, optionally gzipped (``.gz``).
        how_to_get: The fix to print in errors.
        ndim: The expected number of dimensions (3 for images, 1 for labels).

    Raises:
        DataError: missing, truncated or mislabelled file.
    """
    raw = _read_bytes(path, how_to_get)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"data file {str(path)!r} is not an IDX file (bad magic number); {how_to_get}"
        )
    if raw[3] != ndim:
        raise DataError(
            f"data file {str(path)!r} has {raw[3]} dimensions, expected {ndim}; {how_to_get}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"data file {str(path)!r} is truncated (short header); {how_to_get}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"data file {str(path)!r} holds {len(raw) - header} data bytes, expected {expected} "
            f"for shape {shape}: truncated or tampered; {how_to_get}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def read_cifar_binary(path: Path, how_to_get: str, *, label_bytes: int) -> tuple[np.ndarray, ...]:
    """Read a CIFAR "binary version" file: records of label byte(s) then 3×32×32 uint8 pixels.

    Args:
        path: ``data_batch_N.bin``/``test_batch.bin`` (CIFAR-10, ``label_bytes=1``) or
            ``train.bin``/``test.bin`` (CIFAR-100, ``label_bytes=2``: coarse then fine label).
        how_to_get: The fix to print in errors.
        label_bytes: Label bytes per record.

    Returns:
        ``(images, labels)`` with images (N, 3, 32, 32) uint8 and labels (N,) int64 (the fine
        label for CIFAR-100).
    """
    raw = _read_bytes(path, how_to_get)
    record = label_bytes + 3 * 32 * 32
    if not raw or len(raw) % record:
        raise DataError(
            f"data file {str(path)!r} has {len(raw)} bytes, expected a positive multiple of the "
            f"{record}-byte CIFAR record: truncated or not a CIFAR binary file; {how_to_get}"
        )
    table = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    labels = table[:, label_bytes - 1].astype(np.int64)
    images = table[:, label_bytes:].reshape(-1, 3, 32, 32)
    return images, labels


def read_svhn_mat(path: Path, how_to_get: str) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN format-2 ``.mat`` file (``X``: 32×32×3×N uint8, ``y``: N×1, 10 means 0).

    Returns:
        ``(images, labels)``: images (N, 3, 32, 32) uint8, labels (N,) int64 in 0..9.
    """
    from scipy.io import loadmat  # scipy comes with scikit-learn; imported only when used

    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist; {how_to_get}")
    try:
        mat = loadmat(str(path))
    except Exception as err:  # scipy raises a zoo of types for bad files
        raise DataError(
            f"data file {str(path)!r} is not a readable .mat file ({err}); {how_to_get}"
        ) from None
    x, y = mat.get("X"), mat.get("y")
    if (not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray) or x.ndim != 4
            or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]):
        raise DataError(
            f"data file {str(path)!r} lacks SVHN arrays X (32, 32, 3, N) and y (N, 1); "
            f"{how_to_get}"
        )
    labels = y.reshape(-1).astype(np.int64) % 10  # SVHN stores digit 0 as label 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels
