"""adjoint_error's figures (Fig. 2.3c, Prop. 2.9-2.12, section 4.3.1, Fig. 2.4) and thesis settings.

References: thesis section 2.4, Fig. 2.3c; section 2.5.2, Fig. 2.4, appendix 2.B.1; section 4.3.1.
"""

from __future__ import annotations

from core.figures import LOG_XY, Figure, Setting, per_epoch
from workloads._adjoint_error_checks import ADJOINT as _ADJOINT

_ERRORS = {"p_train": False}
_TRAINED = {"p_train": True}
_RANDOM_VS_DEPTH = dict(facet="p_init", x_title="depth N", **LOG_XY)
"""The error grid against depth, log-log (a rate reads as a slope), a panel per initialisation."""
_PER_TENSOR = dict(series=("p_scheme", "tag"), where=_ERRORS | {"p_scheme": _ADJOINT, "p_dtype": "float64"})
"""A line per scheme and weight tensor, the float64 error grid."""
figures = (
    Figure(
        "Relative gradient error of the adjoint per parameter tensor vs depth, ResNet (Euler) vs HeunNet",
        "grad_mse_ratio",
        "p_depth",
        thesis="Fig. 2.3c",
        **_PER_TENSOR,
        y_title="mean (g_adj - g_bp)^2 / mean g_bp^2",
        **_RANDOM_VS_DEPTH,
    ),
    Figure(
        "Relative gradient error of the adjoint per residual-block tensor of the trained classifier vs depth",
        "grad_mse_ratio",
        "p_depth",
        thesis="Fig. 2.3c",
        series=("p_scheme", "tag"),
        facet="p_backward",
        where=_TRAINED,
        **LOG_XY,
        x_title="depth N (trained at N)",
        y_title="mean (g_adj - g_bp)^2 / mean g_bp^2",
    ),
    Figure(
        "Reconstruction error of the reversal vs depth (Prop. 2.9: O(1/N); Prop. 2.11: O(1/N^2) with smooth weights)",
        "recon_err",
        "p_depth",
        series=("p_scheme", "p_dtype"),
        where=_ERRORS | {"p_scheme": _ADJOINT},
        y_title="max_n ||x_n - x~_n|| / ||x_n||",
        **_RANDOM_VS_DEPTH,
    ),
    Figure(
        "Gradient relative error of the adjoint vs depth (Prop. 2.10: O(1/N); Prop. 2.12: O(1/N^2) with smooth weights)",
        "grad_rel_err",
        "p_depth",
        **_PER_TENSOR,
        y_title="||g_adj - g_bp|| / ||g_bp||",
        **_RANDOM_VS_DEPTH,
    ),
    Figure(
        "Momentum ResNet reversed by division by gamma vs with the information buffer (exactly 0, off the log axis)",
        "recon_err",
        "p_depth",
        series=("p_scheme", "p_gamma", "p_dtype"),
        where=_ERRORS | {"p_scheme": ("momentum", "momentum_reversible")},
        y_title="max_n ||x_n - x~_n|| / ||x_n||",
        **_RANDOM_VS_DEPTH,
    ),
    Figure(
        "Best test accuracy vs depth, ResNet (Euler) and HeunNet trained by backprop or by the adjoint",
        "test_acc",
        "p_depth",
        thesis="Fig. 2.4",
        series=("p_scheme", "p_backward"),
        where=_TRAINED,
        log_x=True,
        x_title="depth N",
        y_title="best test accuracy",
    ),
    per_epoch(
        "Test accuracy per epoch, per depth",
        "test_acc",
        series=("p_scheme", "p_backward"),
        facet="p_depth",
        where=_TRAINED,
        x_title="epoch",
        y_title="test accuracy",
    ),
    per_epoch(
        "Training loss per epoch, per depth",
        "train_loss",
        series=("p_scheme", "p_backward"),
        facet="p_depth",
        where=_TRAINED,
        log_y=True,
        x_title="epoch",
        y_title="cross-entropy",
    ),
)

settings = (
    Setting(
        "Fig. 2.3c",
        thesis={
            "model": "the Fig. 2.4 classifier trained on CIFAR-10 at depth 32, its blocks copied to depth N",
            "weights": "trained (smooth in depth after transfer)",
            "data": "one CIFAR-10 batch of 256",
            "measure": "mean squared gradient error / mean squared gradient, per weight tensor",
            "dtype": "float32",
            "device": "NVIDIA V100",
        },
        ours={
            "trained (else random)": "p_train",
            "block (random nets)": "p_block",
            "width": "p_width",
            "weights (random nets)": "p_init",
            "data (trained nets)": "p_data",
            "depths": "p_depth",
            "dtype": "p_dtype",
            "seeds": "seed",
            "device": "device_name",
        },
    ),
    Setting(
        "Fig. 2.4",
        thesis={
            "model": "5x5 conv to 16 channels (down-sampled to 10x10), BN, ReLU, N pre-activation basic "
            "blocks with zero-initialised last BN, h = 1/N",
            "data": "CIFAR-10",
            "optimiser": "SGD, momentum 0.9, weight decay 5e-4, cosine schedule",
            "lr": "0.1",
            "batch": "128",
            "epochs": "200",
            "depths": "2, 4, 8, 16, 32, 64",
            "seeds": "5 (median; the authors' plot script reads 4)",
            "device": "NVIDIA V100",
        },
        ours={
            "data": "p_data",
            "width": "p_width",
            "lr": "p_lr",
            "batch": "p_batch",
            "epochs": "p_epochs",
            "depths": "p_depth",
            "dtype": "p_dtype",
            "seeds": "seed",
            "device": "device_name",
        },
        where=_TRAINED,
    ),
)
