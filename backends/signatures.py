"""The operator signatures both backends export in ``ops``: one Protocol each.

``tests/backends/test_signatures.py`` checks that ``backends.torch.ops`` and ``backends.jax.ops``
export every name listed here with the same parameters, order and defaults.
"""

from __future__ import annotations

from backends.ar_transformer import ArGdPredict, ArTransformerApply, ArTransformerInit, ArTransformerTrainer
from backends.moe import MoeRoute, MoeVitApply, MoeVitInit, MoeVitTrainer
from backends.pruned_mlp import PrunedMlpApply, PrunedMlpInit, PrunedMlpTrainer, PrunedMlpWeights
from backends.residual_classifier import ResidualClassifierApply, ResidualClassifierInit, ResidualClassifierTrainer
from backends.resnets import (
    ResidualApply,
    ResidualFunctional,
    ResidualNet,
    ResidualReconstruct,
    ResidualTrajectory,
    ResidualVjp,
)
from backends.roofline import Copy, Matmul
from backends.scaled_resnet import ScaledResnetApply, ScaledResnetGd
from backends.sinkhorn import Attention, FusedAttention, Sinkhorn
from backends.topk import HardTopkMag, HardTopkMask, TopkMag, TopkMask, TopkSolve, TopkVjp
from backends.vit import VitApply, VitInit, VitTrainer

OPS: dict[str, type] = {
    "residual_net": ResidualNet,
    "residual_apply": ResidualApply,
    "residual_vjp": ResidualVjp,
    "residual_functional": ResidualFunctional,
    "residual_trajectory": ResidualTrajectory,
    "residual_reconstruct": ResidualReconstruct,
    "matmul": Matmul,
    "copy": Copy,
    "sinkhorn": Sinkhorn,
    "attention": Attention,
    "fused_attention": FusedAttention,
    "vit_init": VitInit,
    "vit_apply": VitApply,
    "vit_trainer": VitTrainer,
    "moe_route": MoeRoute,
    "moe_vit_init": MoeVitInit,
    "moe_vit_apply": MoeVitApply,
    "moe_vit_trainer": MoeVitTrainer,
    "topk_mask": TopkMask,
    "topk_mag": TopkMag,
    "hard_topk_mask": HardTopkMask,
    "hard_topk_mag": HardTopkMag,
    "topk_solve": TopkSolve,
    "topk_vjp": TopkVjp,
    "scaled_resnet_apply": ScaledResnetApply,
    "scaled_resnet_gd": ScaledResnetGd,
    "ar_transformer_init": ArTransformerInit,
    "ar_transformer_apply": ArTransformerApply,
    "ar_transformer_trainer": ArTransformerTrainer,
    "ar_gd_predict": ArGdPredict,
    "pruned_mlp_init": PrunedMlpInit,
    "pruned_mlp_apply": PrunedMlpApply,
    "pruned_mlp_weights": PrunedMlpWeights,
    "pruned_mlp_trainer": PrunedMlpTrainer,
    "residual_classifier_init": ResidualClassifierInit,
    "residual_classifier_apply": ResidualClassifierApply,
    "residual_classifier_trainer": ResidualClassifierTrainer,
}
"""Operator name -> its Protocol; every backend's ``ops`` module exports each name."""
