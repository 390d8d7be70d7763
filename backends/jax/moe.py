"""Sparse mixture-of-experts ViT with expert-choice routing, hard or relaxed top-k router (JAX).

The ViT is ``backends/jax/vit.py``'s; the MoE layer is passed as its block ``mlp`` (a block whose
``mlp`` weights hold a ``router`` is an MoE layer, the others stay dense). With
``MoEConfig.dispatch="sparse"`` each expert gathers the tokens its mask selects, runs on them and
scatter-adds its gate-weighted outputs: k rows per group and expert for the hard router; for a
relaxed mask, whose number of non-zeros is only known at run time, the smallest of the static sizes
``MoEConfig.dispatch_ladder(n)`` (k, 2k, ..., n) that holds its widest row, chosen by ``lax.switch``
(only that branch runs). ``"dense"`` runs every expert on every token and lets the combine weights
(gate x mask) zero the rest. Same outputs and gradients. The switch's branches are rematerialised
(``jax.checkpoint``): its backward would otherwise carry the residuals of every branch, the ones not
taken as zeros of up to the dense size.

References:
    Thesis section 7.6 "Sparse MoEs", appendix 7.C.3, Fig. 7.7; Zhou et al. (2022).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ..moe_config import MoEConfig, init_moe_params
from ..topk_common import pair_projection
from ..vit_init import ViTConfig
from .topk import hard_topk_mask, topk_mask
from .vit import dense_mlp, vit_apply, vit_trainer


def _half_step(v: jax.Array, d: jax.Array, offset: int) -> tuple[jax.Array, jax.Array]:
    """Dykstra's half-step (``topk_common.pair_projection``) on ``v``'s pairs from ``offset``."""
    B, m = d.shape
    if m == 0:
        return v, d
    pair = v[:, offset : offset + 2 * m].reshape(B, m, 2)
    a, b, d = pair_projection(jnp, pair[..., 0], pair[..., 1], d, None)
    new = jnp.stack([a, b], axis=-1).reshape(B, 2 * m)
    return jnp.concatenate([v[:, :offset], new, v[:, offset + 2 * m :]], axis=1), d


def unrolled_dykstra_mask(x: jax.Array, k: int, lam: float, n_iter: int) -> jax.Array:
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
    perm = jnp.argsort(-rows, axis=1, stable=True)
    s = jnp.take_along_axis(rows, perm, axis=1)
    w = (jnp.arange(n) < k).astype(rows.dtype)
    v = s - jnp.asarray(lam, rows.dtype) * jnp.expand_dims(w, 0)
    d1 = jnp.zeros((rows.shape[0], n // 2), rows.dtype)
    d2 = jnp.zeros((rows.shape[0], (n - 1) // 2), rows.dtype)

    def body(_, state):
        v, d1, d2 = state
        v, d1 = _half_step(v, d1, 0)
        v, d2 = _half_step(v, d2, 1)
        return v, d1, d2

    v, _, _ = lax.fori_loop(0, n_iter, body, (v, d1, d2))
    y_sorted = (s - v) / jnp.asarray(lam, rows.dtype)
    return jnp.take_along_axis(y_sorted, jnp.argsort(perm, axis=1), axis=1).reshape(shape)


def moe_route(logits: jax.Array, moe: MoEConfig) -> tuple[jax.Array, jax.Array]:
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
    gates = jax.nn.softmax(logits, axis=-1)
    scores = jnp.swapaxes(gates, -1, -2)
    k = moe.capacity(logits.shape[-2])
    if moe.router == "hard":
        mask = lax.stop_gradient(hard_topk_mask(lax.stop_gradient(scores), k))
    elif moe.solver == "dykstra":
        mask = unrolled_dykstra_mask(scores, k, moe.lam, moe.max_iter)
    else:
        mask = topk_mask(scores, k, lam=moe.lam, p=moe.p, solver=moe.solver)
    return gates * jnp.swapaxes(mask, -1, -2), mask


def expert_mlp(params: dict[str, jax.Array], xs: jax.Array) -> jax.Array:
    """Every expert's MLP on its own rows: (E, R, D) -> (E, R, D), ``gelu(x w1_e + b1_e) w2_e + b2_e``."""
    h = jax.nn.gelu(jnp.einsum("erd,edh->erh", xs, params["w1"]) + jnp.expand_dims(params["b1"], 1), approximate=False)
    return jnp.einsum("erh,ehd->erd", h, params["w2"]) + jnp.expand_dims(params["b2"], 1)


def _dense_experts(
    params: dict[str, jax.Array], x: jax.Array, combine: jax.Array, mask: jax.Array, moe: MoEConfig
) -> jax.Array:
    """Every expert on every token (E x G n rows), weighted by the combine weights afterwards."""
    G, n, D = x.shape
    E = combine.shape[-1]
    out = expert_mlp(params, jnp.broadcast_to(x.reshape(1, G * n, D), (E, G * n, D))).reshape(E, G, n, D)
    return jnp.einsum("gne,egnd->gnd", combine, out)


def _experts_at(
    capacity: int, params: dict[str, jax.Array], x: jax.Array, combine: jax.Array, mask: jax.Array
) -> jax.Array:
    """Each expert on the ``capacity`` tokens of each group with the largest mask (E x G C rows), scatter-added."""
    G, n, D = x.shape
    E = combine.shape[-1]
    _, idx = lax.top_k(lax.stop_gradient(mask), capacity)  # (G, E, C): the k ones, or every non-zero
    weight = jnp.take_along_axis(jnp.swapaxes(combine, -1, -2), idx, axis=-1)
    rows = jnp.swapaxes(idx + n * jnp.arange(G, dtype=idx.dtype).reshape(G, 1, 1), 0, 1).reshape(E, G * capacity)
    out = expert_mlp(params, x.reshape(G * n, D)[rows]) * jnp.swapaxes(weight, 0, 1).reshape(E, G * capacity, 1)
    return jnp.zeros((G * n, D), x.dtype).at[rows.reshape(-1)].add(out.reshape(E * G * capacity, D)).reshape(G, n, D)


def _sparse_experts(
    params: dict[str, jax.Array], x: jax.Array, combine: jax.Array, mask: jax.Array, moe: MoEConfig
) -> jax.Array:
    """Each expert on its selected tokens only: k per group (hard), or the ladder size holding every non-zero."""
    n = x.shape[1]
    if moe.router == "hard":
        return _experts_at(moe.capacity(n), params, x, combine, mask)
    ladder = moe.dispatch_ladder(n)
    widest = jnp.max(jnp.sum(mask != 0, axis=-1))
    branch = jnp.searchsorted(jnp.asarray(ladder, widest.dtype), widest)
    # Rematerialised branches: otherwise the backward keeps every branch's residuals, zeros where not taken.
    branches = [jax.checkpoint(functools.partial(_experts_at, c)) for c in ladder]
    return lax.switch(branch, branches, params, x, combine, mask)


_EXPERTS = {"sparse": _sparse_experts, "dense": _dense_experts}


def _moe_mlp(params: dict[str, jax.Array], x: jax.Array, moe: MoEConfig, record: list | None = None) -> jax.Array:
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
    config: ViTConfig, moe: MoEConfig, seed: int, device: jax.Device | str = "cpu", dtype: str = "float32"
) -> dict[str, Any]:
    """The ``moe_vit``'s initial weights (``backends.moe_config.init_moe_params``) on ``device``.

    Args:
        config: the ViT. moe: the routing. seed: same seed, same weights in torch. device, dtype: placement.

    Returns:
        Nested dict of arrays.
    """
    dev = jax.devices(device)[0] if isinstance(device, str) else device
    return jax.tree_util.tree_map(lambda a: jax.device_put(a, dev), init_moe_params(config, moe, seed, dtype))


@functools.partial(jax.jit, static_argnames=("config", "moe"))
def moe_vit_apply(
    params: dict[str, Any], images: jax.Array, config: ViTConfig, moe: MoEConfig
) -> tuple[jax.Array, list[jax.Array]]:
    """Forward of the ``moe_vit``: logits and the combine weights of every MoE layer.

    Args:
        params: from ``moe_vit_init``. images: (B, C, H, W). config, moe: the architecture.

    Returns:
        logits (B, num_classes) and one (B, tokens, E) combine-weight array per MoE layer.

    References:
        Thesis 7.6, 7.C.3.
    """
    record: list[jax.Array] = []
    # vit_apply's un-jitted body, traced inside this jit, so the recorded arrays belong to this trace.
    logits, _ = vit_apply.__wrapped__(params, images, config, functools.partial(_moe_mlp, moe=moe, record=record))
    return logits, record


def moe_vit_trainer(config: ViTConfig, moe: MoEConfig, params: dict[str, Any], lr: float, optimizer: str = "adam"):
    """The ViT trainer (``vit_trainer``) of the ``moe_vit``: Adam or SGD on cross-entropy.

    Args:
        config, moe: the architecture. params: from ``moe_vit_init``. lr: learning rate.
        optimizer: ``adam`` or ``sgd``.

    Returns:
        ``vit_trainer``'s object (``compile``, ``fit_epoch``, ``predict``, ``params``).
    """
    return vit_trainer(config, params, lr, optimizer, mlp=_mlp_for(moe))
