"""Image classification data as NumPy arrays: digits (shipped with scikit-learn), MNIST, CIFAR-10.

Framework-free. MNIST and CIFAR-10 are read from torchvision's on-disk layout under the data
root (``$DEEPERBENCH_DATA``, else ``~/.cache/deeperbench/data``); they are downloaded through
torchvision only when ``download=True`` (or ``$DEEPERBENCH_DOWNLOAD=1``), never by default.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import pickle
from pathlib import Path

import numpy as np

DATASETS = {"digits": (8, 1), "mnist": (28, 1), "cifar10": (32, 3)}
"""Name -> (image side, channels)."""


class DatasetUnavailable(FileNotFoundError):
    """The data set is not on disk and downloading was not allowed."""


@dataclasses.dataclass(frozen=True)
class ImageData:
    """Standardised images (N, C, H, W) float32 and labels (N,) int64, split into train and test."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])


def data_root() -> Path:
    """Where MNIST and CIFAR-10 are looked for: ``$DEEPERBENCH_DATA`` or ``~/.cache/deeperbench/data``."""
    return Path(os.environ.get("DEEPERBENCH_DATA", "~/.cache/deeperbench/data")).expanduser()


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the training images, applied to both splits."""
    axes = (0, 2, 3)
    mean, std = train.mean(axis=axes, keepdims=True), train.std(axis=axes, keepdims=True)
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)


def _digits(test_fraction: float) -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float64)[:, None] / 16.0
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))  # a fixed split, whatever the trial seed
    n_test = round(test_fraction * len(labels))
    test, train = order[:n_test], order[n_test:]
    train_x, test_x = _standardise(images[train], images[test])
    return ImageData("digits", train_x, labels[train], test_x, labels[test], 10)


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), plain or gzipped."""
    candidates = [path, path.with_name(path.name + ".gz")]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise DatasetUnavailable(f"{path} (or .gz) not found")
    raw = (gzip.open if found.suffix == ".gz" else open)(found, "rb").read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _mnist(root: Path) -> ImageData:
    raw = root / "MNIST" / "raw"
    images = {
        s: _read_idx(raw / f"{s}-images-idx3-ubyte").astype(np.float64)[:, None] / 255.0 for s in ("train", "t10k")
    }
    labels = {s: _read_idx(raw / f"{s}-labels-idx1-ubyte").astype(np.int64) for s in ("train", "t10k")}
    train_x, test_x = _standardise(images["train"], images["t10k"])
    return ImageData("mnist", train_x, labels["train"], test_x, labels["t10k"], 10)


def _cifar10(root: Path) -> ImageData:
    folder = root / "cifar-10-batches-py"

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = folder / name
        if not path.is_file():
            raise DatasetUnavailable(f"{path} not found")
        with open(path, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        return d[b"data"].reshape(-1, 3, 32, 32).astype(np.float64) / 255.0, np.asarray(d[b"labels"], np.int64)

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = batch("test_batch")
    train_x, test_x = _standardise(np.concatenate([p[0] for p in parts]), test_x)
    return ImageData("cifar10", train_x, np.concatenate([p[1] for p in parts]), test_x, test_y, 10)


def _download(name: str, root: Path) -> None:
    """Fetch ``name`` with torchvision into ``root`` (imported only here, only when asked)."""
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[name]
    for train in (True, False):
        cls(str(root), train=train, download=True)


def with_pixel_noise(data: ImageData, std: float, *, seed: int = 0) -> ImageData:
    """``data`` with Gaussian noise of standard deviation ``std`` added to every (standardised) pixel.

    One fixed draw per image from ``seed``, independent of any trial's seed, so every trial sees the
    same noisy images: a harder task of the same shapes (digits at ``std = 1`` has a pixel
    signal-to-noise ratio of 1), for comparisons that saturate on the clean images.

    Args:
        data: the images. std: >= 0, in units of the pixels' standard deviation. seed: the noise's seed.

    Returns:
        ImageData of the same shapes, float32 (``data`` itself when ``std == 0``).
    """
    if not std >= 0:
        raise ValueError(f"std={std!r}: expected >= 0")
    if std == 0:
        return data
    rng = np.random.default_rng(np.random.SeedSequence([seed, 13]))
    noisy = [(x + std * rng.standard_normal(x.shape)).astype(np.float32) for x in (data.train_x, data.test_x)]
    return dataclasses.replace(data, train_x=noisy[0], test_x=noisy[1])


@functools.lru_cache(maxsize=4)
def load_images(name: str, *, download: bool | None = None, test_fraction: float = 0.25) -> ImageData:
    """Load a data set as standardised NumPy images; cached per process.

    Args:
        name: ``digits`` (scikit-learn's 1,797 8x8 digits, split 75/25 with a fixed seed),
            ``mnist`` or ``cifar10`` (their standard splits, from torchvision's layout on disk).
        download: allow torchvision to download a missing MNIST/CIFAR-10; None reads
            ``$DEEPERBENCH_DOWNLOAD`` (``1`` allows it). Tests never download.
        test_fraction: share of digits held out for testing (digits only).

    Returns:
        ImageData with images (N, C, H, W) float32 and labels (N,) int64.

    Raises:
        DatasetUnavailable: MNIST/CIFAR-10 is not on disk and downloading is not allowed.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r}: allowed {', '.join(DATASETS)}")
    if name == "digits":
        return _digits(test_fraction)
    root = data_root()
    loader = {"mnist": _mnist, "cifar10": _cifar10}[name]
    try:
        return loader(root)
    except DatasetUnavailable as missing:
        allowed = os.environ.get("DEEPERBENCH_DOWNLOAD") == "1" if download is None else download
        if not allowed:
            raise DatasetUnavailable(
                f"{name} is not under {root} ({missing}); set DEEPERBENCH_DATA to where "
                "torchvision stored it, or DEEPERBENCH_DOWNLOAD=1 to download it"
            ) from None
    _download(name, root)
    return loader(root)
