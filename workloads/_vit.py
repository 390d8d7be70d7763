"""What the ViT workloads share: the input side of a ViT's configuration, and the image arrays on the device.

References: thesis chapter 5 (Sinkformers' ViT) and chapter 6 (the sparse-MoE ViT).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from backends import Backend
from backends.datasets import ImageData
from core.workload import Skip


class ViTParams(Protocol):
    """The parameters a ViT workload reads here."""

    dataset: str
    patch: int
    width: int
    train_size: int | None
    batch: int
    eval_batch: int
    dtype: str


def vit_input(params: ViTParams, image_size: int, channels: int, num_classes: int) -> dict[str, int]:
    """``ViTConfig``'s input fields for ``params`` on a data set of ``image_size`` square images.

    Args:
        params: a trial's parameters (``dataset``, ``patch`` side in pixels, ``width``).
        image_size: the data set's image side, in pixels.
        channels: colour channels of the images.
        num_classes: labels of the data set.

    Returns:
        image_size, channels, num_classes, patch and width, to pass on to ``ViTConfig``.

    Raises:
        Skip: the patch side does not divide the image side.
    """
    if image_size % params.patch:
        raise Skip(f"patch={params.patch} does not divide the {params.dataset} image side {image_size}")
    return dict(
        image_size=image_size, channels=channels, num_classes=num_classes, patch=params.patch, width=params.width
    )


class ImageArrays(NamedTuple):
    """A data set's images on the device: the training subset, the test set and the fixed evaluation batch."""

    n_train: int
    device: Any
    train_x: Any
    train_y: Any
    test_x: Any
    eval_x: Any


def image_arrays(params: ViTParams, data: ImageData, backend: Backend, kind: str) -> ImageArrays:
    """The first ``train_size`` training images, the test images and the first ``eval_batch`` of them on the device.

    Args:
        params: a trial's parameters (``train_size``, ``batch``, ``eval_batch``, ``dtype``).
        data: the loaded data set.
        backend: the trial's backend.
        kind: the device kind the trial runs on (``ctx.device``).

    Returns:
        The arrays (images in ``dtype``, labels as integers) and the device they are on.

    Raises:
        Skip: the batch is larger than the training images.
    """
    n_train = min(params.train_size or len(data.train_y), len(data.train_y))
    if params.batch > n_train:
        raise Skip(f"batch={params.batch} is larger than the {n_train} training images")
    device = backend.device(kind)
    return ImageArrays(
        n_train,
        device,
        backend.asarray(data.train_x[:n_train], device, params.dtype),
        backend.asarray(data.train_y[:n_train], device),
        backend.asarray(data.test_x, device, params.dtype),
        backend.asarray(data.test_x[: params.eval_batch], device, params.dtype),
    )
