"""The operators of the jax backend, under the names and signatures of ``backends.signatures``."""
from .roofline import copy, matmul
from .sinkhorn import attention, fused_attention, sinkhorn
from .vit import vit_apply, vit_init, vit_trainer

__all__ = ["copy", "matmul", "attention", "fused_attention", "sinkhorn", "vit_apply", "vit_init", "vit_trainer"]
