"""The operators of the jax backend, under the names and signatures of ``backends.signatures``."""
from .roofline import copy, matmul
from .resnets import (host_peak_bytes, residual_apply, residual_functional, residual_net,
                      residual_reconstruct, residual_trajectory, residual_vjp)
from .sinkhorn import attention, fused_attention, sinkhorn
from .topk import hard_topk_mag, hard_topk_mask, topk_mag, topk_mask, topk_solve, topk_vjp
from .vit import vit_apply, vit_init, vit_trainer
from .moe import moe_route, moe_vit_apply, moe_vit_init, moe_vit_trainer
from .scaled_resnet import scaled_resnet_apply, scaled_resnet_gd
from .ar_transformer import ar_gd_predict, ar_transformer_apply, ar_transformer_init, ar_transformer_trainer
from .pruned_mlp import pruned_mlp_apply, pruned_mlp_init, pruned_mlp_trainer, pruned_mlp_weights
from .residual_classifier import residual_classifier_apply, residual_classifier_init, residual_classifier_trainer

__all__ = ["copy", "matmul", "attention", "fused_attention", "sinkhorn", "vit_apply", "vit_init", "vit_trainer"]
__all__ += ["residual_net", "residual_apply", "residual_vjp", "residual_functional", "residual_trajectory",
            "residual_reconstruct", "host_peak_bytes"]
__all__ += ["topk_mask", "topk_mag", "hard_topk_mask", "hard_topk_mag", "topk_solve", "topk_vjp"]
__all__ += ["scaled_resnet_apply", "scaled_resnet_gd"]
__all__ += ["ar_transformer_init", "ar_transformer_apply", "ar_transformer_trainer", "ar_gd_predict"]
__all__ += ["moe_route", "moe_vit_init", "moe_vit_apply", "moe_vit_trainer"]
__all__ += ["pruned_mlp_init", "pruned_mlp_apply", "pruned_mlp_weights", "pruned_mlp_trainer"]
__all__ += ["residual_classifier_init", "residual_classifier_apply", "residual_classifier_trainer"]
