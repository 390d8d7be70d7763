"""Image data for the attention workload: digits from scikit-learn, MNIST/CIFAR-10 from disk, never downloaded."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest

from backends import datasets
from backends.datasets import DatasetUnavailable, load_images


def test_digits_are_standardised_and_split_the_same_way_every_time():
    data = load_images("digits")
    assert data.train_x.shape == (1348, 1, 8, 8) and data.test_x.shape == (449, 1, 8, 8)
    assert data.train_x.dtype == np.float32 and data.train_y.dtype == np.int64
    assert abs(float(data.train_x.mean())) < 1e-5 and abs(float(data.train_x.std()) - 1) < 1e-5
    assert set(np.unique(data.test_y)) == set(range(10)) and data.num_classes == 10
    load_images.cache_clear()
    again = load_images("digits")
    np.testing.assert_array_equal(again.test_y, data.test_y)


def _idx(path, array: np.ndarray, code: int) -> None:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(str(path) + ".gz", "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPERBENCH_DATA", str(tmp_path))
    monkeypatch.delenv("DEEPERBENCH_DOWNLOAD", raising=False)
    load_images.cache_clear()
    yield tmp_path
    load_images.cache_clear()


def test_mnist_is_read_from_torchvisions_layout_without_torchvision(data_root):
    raw = data_root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (6, 28, 28)), rng.integers(0, 256, (4, 28, 28))
    _idx(raw / "train-images-idx3-ubyte", train, 8)
    _idx(raw / "t10k-images-idx3-ubyte", test, 8)
    _idx(raw / "train-labels-idx1-ubyte", np.arange(6), 8)
    _idx(raw / "t10k-labels-idx1-ubyte", np.arange(4), 8)
    data = load_images("mnist")
    assert data.train_x.shape == (6, 1, 28, 28) and data.image_size == 28 and data.channels == 1
    np.testing.assert_array_equal(data.test_y, np.arange(4))
    # standardised with the training images' statistics: the pixel order survives
    np.testing.assert_array_equal(
        np.argsort(data.test_x.ravel(), kind="stable"), np.argsort(test.ravel(), kind="stable")
    )


def test_cifar10_is_read_from_its_python_batches(data_root):
    folder = data_root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (2, 3072)).astype(np.uint8), b"labels": [1, 2]}, fh)
    data = load_images("cifar10")
    assert data.train_x.shape == (10, 3, 32, 32) and data.test_x.shape == (2, 3, 32, 32) and data.channels == 3


def test_missing_data_is_not_downloaded(data_root, monkeypatch):
    monkeypatch.setattr(datasets, "_download", lambda *a: pytest.fail("tried to download"))
    with pytest.raises(DatasetUnavailable, match="DEEPERBENCH_DOWNLOAD=1"):
        load_images("mnist")
    with pytest.raises(DatasetUnavailable):
        load_images("cifar10")


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="dataset='imagenet': allowed digits, mnist, cifar10"):
        load_images("imagenet")
