"""Sparse mixture-of-experts ViT with expert-choice routing, hard or relaxed top-k router (torch).

The ViT is ``backends/torch/vit.py``'s; the MoE layer is passed as its block ``mlp`` (a block whose
``mlp`` weights hold a ``router`` is an MoE layer, the others stay dense). With
``MoEConfig.dispatch="sparse"`` each expert gathers the tokens its mask selects (the k of the hard
router; the non-zeros of a relaxed mask, as many rows per expert as the widest row of the layer
has), runs on them and scatter-adds its gate-weighted outputs; ``"dense"`` runs every expert on every
token and lets the combine weights (gate x mask) zero the rest. Same outputs and gradients.

References:
    Thesis section 7.6 "Sparse MoEs", appendix 7.C.3, Fig. 7.7; Zhou et al. (2022).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from ..moe_config import MoEConfig, init_moe_params
from ..topk_common import pair_projection
from ..vit_init import ViTConfig
from .topk import hard_topk_mask, topk_mask
from .vit import dense_mlp, vit_apply, vit_trainer


def _half_step(v: torch.Tensor, d: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dykstra's half-step (``topk_common.pair_projection``) on ``v``'s pairs from ``offset``; out of place."""
    B, m = d.shape
    if m == 0:
        return v, d
    pair = v[:, offset : offset + 2 * m].reshape(B, m, 2)
    a, b, d = pair_projection(torch, pair[..., 0].clone(), pair[..., 1].clone(), d, None)  # clones: autograd
    new = torch.stack([a, b], dim=-1).reshape(B, 2 * m)
    return torch.cat([v[:, :offset], new, v[:, offset + 2 * m :]], dim=1), d


def unrolled_dykstra_mask(x: torch.Tensor, k: int, lam: float, n_iter: int) -> torch.Tensor:
    """Relaxed top-k mask (p = 2) from exactly ``n_iter`` Dykstra iterations, differentiable by unrolling.

    Args:
        x: (..., n) float. k: int in [1, n]. lam: > 0. n_iter: Dykstra iterations (>= 1).

    Returns:
        (..., n): (s - v) / lam put back in x's order, v the ``n_iter``-th Dykstra iterate of the
        projection of s - lam 1_k onto the decreasing cone (s = x sorted descending). Sums to k per
        row at every iteration; equals ``topk_mask(x, k, lam=lam, solver="dykstra")`` once converged.

    References:
        Thesis Algorithm 7.7, Prop. 7.5; appendix 7.C.3 (10 iterations in the MoE router).
    """
    shape, n = x.shape, x.shape[-1]
    rows = x.reshape(-1, n)
    perm = torch.argsort(-rows, dim=1, stable=True)
    s = rows.gather(1, perm)
    w = (torch.arange(n, device=x.device) < k).to(rows.dtype)
    v = s - lam * w
    d1 = rows.new_zeros(rows.shape[0], n // 2)
    d2 = rows.new_zeros(rows.shape[0], (n - 1) // 2)
    for _ in range(n_iter):
        v, d1 = _half_step(v, d1, 0)
        v, d2 = _half_step(v, d2, 1)
    y_sorted = (s - v) / lam
    return torch.zeros_like(y_sorted).scatter(1, perm, y_sorted).reshape(shape)


def moe_route(logits: torch.Tensor, moe: MoEConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Expert-choice routing of one MoE layer: gates, per-expert top-k selection, combine weights.

    Args:
        logits: (G, n, E) router logits of G groups of n tokens. moe: the routing configuration.

    Returns:
        combine (G, n, E) = softmax gates x selection mask, and the mask (G, E, n): each expert's
        selection of k = ``moe.capacity(n)`` tokens (hard: k ones, no gradient; relaxed: in
        [0, 1], summing to k, with gradient).

    References:
        Thesis 7.6 (Sparse MoEs), 7.C.3; Zhou et al. (2022) expert-choice routing.
    """
    gates = torch.softmax(logits, dim=-1)
    scores = gates.transpose(-1, -2)
    k = moe.capacity(logits.shape[-2])
    if moe.router == "hard":
        mask = hard_topk_mask(scores.detach(), k)
    elif moe.solver == "dykstra":
        mask = unrolled_dykstra_mask(scores, k, moe.lam, moe.max_iter)
    else:
        mask = topk_mask(scores, k, lam=moe.lam, p=moe.p, solver=moe.solver)
    return gates * mask.transpose(-1, -2), mask


def expert_mlp(params: dict[str, torch.Tensor], xs: torch.Tensor) -> torch.Tensor:
    """Every expert's MLP on its own rows: (E, R, D) -> (E, R, D), ``gelu(x w1_e + b1_e) w2_e + b2_e``."""
    h = F.gelu(torch.baddbmm(params["b1"].unsqueeze(1), xs, params["w1"]))
    return torch.baddbmm(params["b2"].unsqueeze(1), h, params["w2"])


def _dense_experts(
    params: dict[str, torch.Tensor], x: torch.Tensor, combine: torch.Tensor, mask: torch.Tensor, moe: MoEConfig
) -> torch.Tensor:
    """Every expert on every token (E x G n rows), weighted by the combine weights afterwards."""
    G, n, D = x.shape
    E = combine.shape[-1]
    out = expert_mlp(params, x.reshape(1, G * n, D).expand(E, G * n, D)).reshape(E, G, n, D)
    return torch.einsum("gne,egnd->gnd", combine, out)


def _sparse_experts(
    params: dict[str, torch.Tensor], x: torch.Tensor, combine: torch.Tensor, mask: torch.Tensor, moe: MoEConfig
) -> torch.Tensor:
    """Each expert on the C tokens of each group its mask selects (E x G C rows), scatter-added back.

    C = k for the hard router, else the largest number of non-zeros in one row of ``mask``.
    """
    G, n, D = x.shape
    E = combine.shape[-1]
    picked = mask.detach()
    C = moe.capacity(n) if moe.router == "hard" else int((picked != 0).sum(-1).max())
    idx = torch.topk(picked, C, dim=-1).indices  # (G, E, C): the k ones, or every non-zero
    weight = combine.transpose(-1, -2).gather(-1, idx)
    rows = (idx + n * torch.arange(G, device=x.device).reshape(G, 1, 1)).transpose(0, 1).reshape(E, G * C)
    out = expert_mlp(params, x.reshape(G * n, D)[rows]) * weight.transpose(0, 1).reshape(E, G * C, 1)
    return x.new_zeros(G * n, D).index_add(0, rows.reshape(-1), out.reshape(E * G * C, D)).reshape(G, n, D)


_EXPERTS = {"sparse": _sparse_experts, "dense": _dense_experts}


def _moe_mlp(
    params: dict[str, torch.Tensor], x: torch.Tensor, moe: MoEConfig, record: list | None = None
) -> torch.Tensor:
    """A block's MLP: dense, or the MoE layer when ``params`` holds a router; (B, T, D) -> (B, T, D)."""
    if "router" not in params:
        return dense_mlp(params, x)
    combine, mask = moe_route(x @ params["router"], moe)
    if record is not None:
        record.append(combine)
    return _EXPERTS[moe.dispatch](params, x, combine, mask, moe)


@functools.lru_cache(maxsize=64)
def _mlp_for(moe: MoEConfig):
    return functools.partial(_moe_mlp, moe=moe)


def moe_vit_init(
    config: ViTConfig, moe: MoEConfig, seed: int, device: torch.device | str = "cpu", dtype: str = "float32"
) -> dict[str, Any]:
    """The ``moe_vit``'s initial weights (``backends.moe_config.init_moe_params``) on ``device``.

    Args:
        config: the ViT. moe: the routing. seed: same seed, same weights in JAX. device, dtype: placement.

    Returns:
        Nested dict of tensors.
    """

    def to(tree):
        if isinstance(tree, dict):
            return {k: to(v) for k, v in tree.items()}
        if isinstance(tree, list):
            return [to(v) for v in tree]
        return torch.from_numpy(tree).to(device)

    return to(init_moe_params(config, moe, seed, dtype))


def moe_vit_apply(
    params: dict[str, Any], images: torch.Tensor, config: ViTConfig, moe: MoEConfig
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward of the ``moe_vit``: logits and the combine weights of every MoE layer.

    Args:
        params: from ``moe_vit_init``. images: (B, C, H, W). config, moe: the architecture.

    Returns:
        logits (B, num_classes) and one (B, tokens, E) combine-weight tensor per MoE layer.

    References:
        Thesis 7.6, 7.C.3.
    """
    record: list[torch.Tensor] = []
    logits, _ = vit_apply(params, images, config, functools.partial(_moe_mlp, moe=moe, record=record))
    return logits, record


def moe_vit_trainer(config: ViTConfig, moe: MoEConfig, params: dict[str, Any], lr: float, optimizer: str = "adam"):
    """The ViT trainer (``vit_trainer``) of the ``moe_vit``: Adam or SGD on cross-entropy.

    Args:
        config, moe: the architecture. params: from ``moe_vit_init`` (copied). lr: learning rate.
        optimizer: ``adam`` or ``sgd``.

    Returns:
        ``vit_trainer``'s object (``compile``, ``fit_epoch``, ``predict``, ``params``).
    """
    return vit_trainer(config, params, lr, optimizer, mlp=_mlp_for(moe))
