"""The sparse mixture-of-experts ViT (``backends/moe.py``) in torch.

The sparse dispatch gathers as many rows per expert as the widest row of the layer's mask has.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from backends.moe import MoEConfig, init_moe_params, moe_block_mlp
from backends.topk import pair_projection
from backends.vit import ViTConfig

from .topk import hard_topk_mask, topk_mask
from .vit import dense_mlp, vit_apply, vit_trainer


def _half_step(v: torch.Tensor, d: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dykstra's half-step (``backends.topk.pair_projection``) on ``v``'s pairs from ``offset``; out of place."""
    B, m = d.shape
    if m == 0:
        return v, d
    pair = v[:, offset : offset + 2 * m].reshape(B, m, 2)
    a, b, d = pair_projection(torch, pair[..., 0].clone(), pair[..., 1].clone(), d, None)  # clones: autograd
    new = torch.stack([a, b], dim=-1).reshape(B, 2 * m)
    return torch.cat([v[:, :offset], new, v[:, offset + 2 * m :]], dim=1), d


def unrolled_dykstra_mask(x: torch.Tensor, k: int, lam: float, n_iter: int) -> torch.Tensor:
    """``backends.moe``'s unrolled Dykstra mask in torch."""
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
    """``backends.moe.MoeRoute`` in torch."""
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
    """``backends.moe.moe_block_mlp`` with this backend's dense MLP, router and experts."""
    return moe_block_mlp(params, x, moe, dense=dense_mlp, route=moe_route, experts=_EXPERTS, record=record)


@functools.lru_cache(maxsize=64)
def _mlp_for(moe: MoEConfig):
    return functools.partial(_moe_mlp, moe=moe)


def moe_vit_init(
    config: ViTConfig, moe: MoEConfig, seed: int, device: torch.device | str = "cpu", dtype: str = "float32"
) -> dict[str, Any]:
    """``backends.moe.MoeVitInit`` in torch."""

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
    """``backends.moe.MoeVitApply`` in torch."""
    record: list[torch.Tensor] = []
    logits, _ = vit_apply(params, images, config, functools.partial(_moe_mlp, moe=moe, record=record))
    return logits, record


def moe_vit_trainer(config: ViTConfig, moe: MoEConfig, params: dict[str, Any], lr: float, optimizer: str = "adam"):
    """``backends.moe.MoeVitTrainer`` in torch."""
    return vit_trainer(config, params, lr, optimizer, mlp=_mlp_for(moe))
