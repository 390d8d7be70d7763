"""The operators of the jax backend, under the names and signatures of ``backends.signatures``."""

from .ar_transformer import ar_gd_predict, ar_transformer_apply, ar_transformer_init, ar_transformer_trainer
from .moe import moe_route, moe_vit_apply, moe_vit_init, moe_vit_trainer
from .pruned_mlp import pruned_mlp_apply, pruned_mlp_init, pruned_mlp_trainer, pruned_mlp_weights
from .residual_classifier import residual_classifier_apply, residual_classifier_init, residual_classifier_trainer
from .resnets import (
    residual_apply,
    residual_functional,
    residual_net,
    residual_reconstruct,
    residual_trajectory,
    residual_vjp,
)
from .roofline import copy, matmul
from .scaled_resnet import scaled_resnet_apply, scaled_resnet_gd
from .sinkhorn import attention, fused_attention, sinkhorn
from .topk import hard_topk_mag, hard_topk_mask, topk_mag, topk_mask, topk_solve, topk_vjp
from .vit import vit_apply, vit_init, vit_trainer

__all__ = ["attention", "copy", "fused_attention", "matmul", "sinkhorn", "vit_apply", "vit_init", "vit_trainer"]
__all__ += [
    "residual_apply",
    "residual_functional",
    "residual_net",
    "residual_reconstruct",
    "residual_trajectory",
    "residual_vjp",
]
__all__ += ["hard_topk_mag", "hard_topk_mask", "topk_mag", "topk_mask", "topk_solve", "topk_vjp"]
__all__ += ["scaled_resnet_apply", "scaled_resnet_gd"]
__all__ += ["ar_gd_predict", "ar_transformer_apply", "ar_transformer_init", "ar_transformer_trainer"]
__all__ += ["moe_route", "moe_vit_apply", "moe_vit_init", "moe_vit_trainer"]
__all__ += ["pruned_mlp_apply", "pruned_mlp_init", "pruned_mlp_trainer", "pruned_mlp_weights"]
__all__ += ["residual_classifier_apply", "residual_classifier_init", "residual_classifier_trainer"]
