"""The sparse mixture-of-experts ViT's routing configuration and NumPy weights, shared by both backends.

A ``moe_vit`` is the ViT of ``backends.vit`` whose MLP in every ``every``-th block (blocks
``every - 1, 2 every - 1, ...``) is replaced by ``experts`` expert MLPs with expert-choice routing
(Zhou et al. 2022): within a group of n tokens (one image's tokens), each expert selects
k = ceil(n * capacity_factor / experts) tokens by a top-k over the softmax gates. The same
``(config, moe, seed)`` gives the same weights in ``backends/torch/moe.py`` and ``backends/jax/moe.py``.
Framework-free on purpose.

``dispatch="sparse"`` (the default) runs each expert only on the tokens its mask selects (gather, run,
scatter-add the gate-weighted results); ``"dense"`` runs every expert on every token and lets the
combine weights zero the rest. Both give the same outputs and gradients (to rounding) because the
mask's Jacobian vanishes where the mask is exactly zero: the hard mask has no gradient, and a relaxed
mask's zeros are clipped entries (``topk_mask``'s closed form; in unrolled Dykstra an entry ends at
exactly zero only when it was never pooled, so its derivative is exactly zero too). Checked to 1e-10
in float64 by ``tests/backends/test_moe.py``.

In each backend the ViT is its ``vit.py``'s and the MoE layer is passed as its block ``mlp``
(``moe_block_mlp``: a block whose ``mlp`` weights hold a ``router`` is an MoE layer, the others stay dense).
The relaxed router's mask comes from ``unrolled_dykstra_mask(x, k, lam, n_iter)``: the relaxed top-k mask
(p = 2) from exactly ``n_iter`` Dykstra iterations, differentiable by unrolling. x: (..., n) float; k in
[1, n]; lam > 0; n_iter >= 1. It returns (..., n): (s - v) / lam put back in x's order, v the
``n_iter``-th Dykstra iterate of the projection of s - lam 1_k onto the decreasing cone (s = x sorted
descending); it sums to k per row at every iteration and equals ``topk_mask(x, k, lam=lam,
solver="dykstra")`` once converged (thesis Algorithm 7.7, Prop. 7.5; 10 iterations in appendix 7.C.3).

References:
    Thesis section 7.6 "Sparse MoEs", appendix 7.C.3, Fig. 7.7; Zhou et al. (2022).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from backends.vit import ViTConfig, VitTrainerObject, init_params
from core.backend import Array

from .init import uniform

ROUTERS = ("hard", "relaxed")
SOLVERS = ("threshold", "pav", "dykstra")
DISPATCHES = ("sparse", "dense")


@dataclasses.dataclass(frozen=True)
class MoEConfig:
    """Expert-choice routing of a ``moe_vit``.

    ``router="hard"`` is the baseline (hard top-k mask, no gradient through the selection);
    ``relaxed`` uses the chapter's ``topk_mask`` with ``p``, ``lam`` and ``solver``. With
    ``solver="dykstra"`` the selection runs exactly ``max_iter`` Dykstra iterations and is
    differentiated by unrolling them; ``threshold``/``pav`` are exact with the closed-form Jacobian.
    ``dispatch`` chooses how the experts run (see the module docstring); it never changes the result.
    """

    experts: int = 4
    capacity_factor: float = 1.0
    every: int = 2
    router: str = "hard"
    lam: float = 0.1
    p: float = 2.0
    solver: str = "dykstra"
    max_iter: int = 10
    dispatch: str = "sparse"

    def __post_init__(self) -> None:
        for field in ("experts", "every", "max_iter"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MoEConfig.{field}={value!r}: expected an integer >= 1")
        if not self.capacity_factor > 0:
            raise ValueError(f"MoEConfig.capacity_factor={self.capacity_factor!r}: expected > 0")
        if self.router not in ROUTERS:
            raise ValueError(f"MoEConfig.router={self.router!r}: allowed {', '.join(ROUTERS)}")
        if self.solver not in SOLVERS:
            raise ValueError(f"MoEConfig.solver={self.solver!r}: allowed {', '.join(SOLVERS)}")
        if self.dispatch not in DISPATCHES:
            raise ValueError(f"MoEConfig.dispatch={self.dispatch!r}: allowed {', '.join(DISPATCHES)}")
        if not self.lam > 0:
            raise ValueError(f"MoEConfig.lam={self.lam!r}: expected > 0")
        if self.p not in (2.0, 4.0 / 3.0):
            raise ValueError(f"MoEConfig.p={self.p!r}: allowed 2 or 4/3")
        if self.router == "relaxed" and self.solver == "dykstra" and self.p != 2.0:
            raise ValueError(f"MoEConfig.p={self.p!r} with solver='dykstra': Dykstra needs p = 2")

    def capacity(self, n: int) -> int:
        """k = ceil(n * capacity_factor / experts), clipped to [1, n]: the tokens each expert takes."""
        return max(1, min(n, math.ceil(n * self.capacity_factor / self.experts - 1e-9)))

    def dispatch_ladder(self, n: int) -> tuple[int, ...]:
        """Static per-expert row counts a traced (JAX) sparse dispatch may pick from: k, 2k, 4k, ..., n.

        The hard router always uses k; a relaxed mask uses the smallest entry at least as large as
        its widest row's number of non-zeros, so at most twice the rows it needs.
        """
        k = self.capacity(n)
        ladder = [k]
        while ladder[-1] < n:
            ladder.append(min(n, 2 * ladder[-1]))
        return tuple(ladder)

    def is_moe(self, layer: int) -> bool:
        """Whether block ``layer`` (0-based) holds an MoE layer instead of a dense MLP."""
        return layer % self.every == self.every - 1


def init_moe_params(config: ViTConfig, moe: MoEConfig, seed: int, dtype: str = "float32") -> dict[str, Any]:
    """Initial weights of the ``moe_vit`` as NumPy arrays (the same in both backends).

    Args:
        config: the ViT (``mlp_dim`` is each expert's hidden width; must not be None).
        moe: the routing configuration.
        seed: weights seed (``init_params``'s; experts draw from ``1000 seed + 100 (l+1) + 50 + ...``).
        dtype: NumPy dtype name.

    Returns:
        ``init_params(config, seed, dtype)`` where each MoE block's ``mlp`` is ``{"router": (width, E),
        "w1": (E, width, mlp_dim), "b1": (E, mlp_dim), "w2": (E, mlp_dim, width), "b2": (E, width)}``.

    References:
        Thesis appendix 7.C.3 (V-MoE with expert-choice routing).
    """
    if config.mlp_dim is None:
        raise ValueError("ViTConfig.mlp_dim=None: a moe_vit needs MLP blocks to replace by experts")
    params = init_params(config, seed, dtype)
    E, d, h = moe.experts, config.width, config.mlp_dim
    for layer, block in enumerate(params["blocks"]):
        if not moe.is_moe(layer):
            continue
        s = 1000 * seed + 100 * (layer + 1) + 50
        b1, b2 = 1.0 / math.sqrt(d), 1.0 / math.sqrt(h)
        block["mlp"] = {
            "router": uniform(s, (d, E), bound=b1, dtype=dtype),
            "w1": uniform(s + 1, (E, d, h), bound=b1, dtype=dtype),
            "b1": uniform(s + 2, (E, h), bound=b1, dtype=dtype),
            "w2": uniform(s + 3, (E, h, d), bound=b2, dtype=dtype),
            "b2": uniform(s + 4, (E, d), bound=b2, dtype=dtype),
        }
    return params


def routing_stats(combine: np.ndarray) -> dict[str, float]:
    """Routing statistics of combine weights (..., n, E) (gate x mask per token and expert).

    Returns:
        ``tokens_unrouted_frac`` (tokens with no non-zero weight), ``experts_per_token_cv``
        (std / mean of the number of experts with a non-zero weight per token; 0 when the mean is
        0), ``router_nnz_frac`` (non-zero fraction of the combine weights).
    """
    nz = np.asarray(combine) != 0
    per_token = nz.sum(-1).reshape(-1).astype(np.float64)
    mean = per_token.mean() if per_token.size else 0.0
    return {
        "tokens_unrouted_frac": float(np.mean(per_token == 0)) if per_token.size else 0.0,
        "experts_per_token_cv": float(per_token.std() / mean) if mean > 0 else 0.0,
        "router_nnz_frac": float(nz.mean()) if nz.size else 0.0,
    }


def moe_block_mlp(
    params: dict[str, Any],
    x: Any,
    moe: MoEConfig,
    *,
    dense: Callable[[dict[str, Any], Any], Any],
    route: Callable[[Any, MoEConfig], tuple[Any, Any]],
    experts: Mapping[str, Callable[..., Any]],
    record: list | None = None,
) -> Any:
    """A block's MLP: dense, or the MoE layer when ``params`` holds a router; (B, T, D) -> (B, T, D).

    Args:
        params: the block's ``mlp`` weights. x: (B, T, D) tokens. moe: the routing.
        dense, route, experts: the backend's dense MLP, ``moe_route`` and experts by ``moe.dispatch``.
        record: where the MoE layer appends its combine weights (B, T, E) (None: not kept).
    """
    if "router" not in params:
        return dense(params, x)
    combine, mask = route(x @ params["router"], moe)
    if record is not None:
        record.append(combine)
    return experts[moe.dispatch](params, x, combine, mask, moe)


class MoeRoute(Protocol):
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

    def __call__(self, logits: Array, moe: Any) -> tuple[Array, Array]: ...


class MoeVitInit(Protocol):
    """The ``moe_vit``'s initial weights (``backends.moe.init_moe_params``) on ``device``.

    Args:
        config: the ViT. moe: the routing. seed: same seed, same weights in both backends. device, dtype: placement.

    Returns:
        Nested dict of arrays.
    """

    def __call__(self, config: Any, moe: Any, seed: int, device: Any = "cpu", dtype: str = "float32") -> Any: ...


class MoeVitApply(Protocol):
    """Forward of the ``moe_vit``: logits and the combine weights of every MoE layer.

    Args:
        params: from ``moe_vit_init``. images: (B, C, H, W). config, moe: the architecture.

    Returns:
        logits (B, num_classes) and one (B, tokens, E) combine-weight array per MoE layer.

    References:
        Thesis 7.6, 7.C.3.
    """

    def __call__(self, params: Any, images: Array, config: Any, moe: Any) -> tuple[Array, list[Array]]: ...


class MoeVitTrainer(Protocol):
    """The ViT trainer (``vit_trainer``) of the ``moe_vit``: Adam or SGD on cross-entropy.

    Args:
        config, moe: the architecture. params: from ``moe_vit_init`` (not changed by training).
            lr: learning rate.
        optimizer: ``adam`` or ``sgd``.

    Returns:
        ``vit_trainer``'s object (``compile``, ``fit_epoch``, ``predict``, ``params``).
    """

    def __call__(self, config: Any, moe: Any, params: Any, lr: float, optimizer: str = "adam") -> VitTrainerObject: ...


OPS: dict[str, type] = {
    "moe_route": MoeRoute,
    "moe_vit_init": MoeVitInit,
    "moe_vit_apply": MoeVitApply,
    "moe_vit_trainer": MoeVitTrainer,
}
"""Operator name -> its Protocol: ``backends.torch.<family>`` and ``backends.jax.<family>`` export each name."""
