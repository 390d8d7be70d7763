"""The sparse mixture-of-experts ViT (``backends/moe.py``) in JAX.

The sparse dispatch of a relaxed mask, whose number of non-zeros is only known at run time, takes the
smallest of the static sizes ``MoEConfig.dispatch_ladder(n)`` (k, 2k, ..., n) that holds its widest row,
chosen by ``lax.switch`` (only that branch runs). The switch's branches are rematerialised
(``jax.checkpoint``): its backward would otherwise carry the residuals of every branch, the ones not
taken as zeros of up to the dense size.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from backends.moe import MoEConfig, init_moe_params, moe_block_mlp
from backends.topk import pair_projection
from backends.vit import ViTConfig

from .topk import hard_topk_mask, topk_mask
from .vit import dense_mlp, vit_apply, vit_trainer


def _half_step(v: jax.Array, d: jax.Array, offset: int) -> tuple[jax.Array, jax.Array]:
    """Dykstra's half-step (``backends.topk.pair_projection``) on ``v``'s pairs from ``offset``."""
    B, m = d.shape
    if m == 0:
        return v, d
    pair = v[:, offset : offset + 2 * m].reshape(B, m, 2)
    a, b, d = pair_projection(jnp, pair[..., 0], pair[..., 1], d, None)
    new = jnp.stack([a, b], axis=-1).reshape(B, 2 * m)
    return jnp.concatenate([v[:, :offset], new, v[:, offset + 2 * m :]], axis=1), d


def unrolled_dykstra_mask(x: jax.Array, k: int, lam: float, n_iter: int) -> jax.Array:
    """``backends.moe``'s unrolled Dykstra mask in JAX."""
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
    """``backends.moe.MoeRoute`` in JAX."""
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
    """``backends.moe.moe_block_mlp`` with this backend's dense MLP, router and experts."""
    return moe_block_mlp(params, x, moe, dense=dense_mlp, route=moe_route, experts=_EXPERTS, record=record)


@functools.lru_cache(maxsize=64)
def _mlp_for(moe: MoEConfig):
    return functools.partial(_moe_mlp, moe=moe)


def moe_vit_init(
    config: ViTConfig, moe: MoEConfig, seed: int, device: jax.Device | str = "cpu", dtype: str = "float32"
) -> dict[str, Any]:
    """``backends.moe.MoeVitInit`` in JAX."""
    dev = jax.devices(device)[0] if isinstance(device, str) else device
    return jax.tree_util.tree_map(lambda a: jax.device_put(a, dev), init_moe_params(config, moe, seed, dtype))


@functools.partial(jax.jit, static_argnames=("config", "moe"))
def moe_vit_apply(
    params: dict[str, Any], images: jax.Array, config: ViTConfig, moe: MoEConfig
) -> tuple[jax.Array, list[jax.Array]]:
    """``backends.moe.MoeVitApply`` in JAX."""
    record: list[jax.Array] = []
    # vit_apply's un-jitted body, traced inside this jit, so the recorded arrays belong to this trace.
    logits, _ = vit_apply.__wrapped__(params, images, config, functools.partial(_moe_mlp, moe=moe, record=record))
    return logits, record


def moe_vit_trainer(config: ViTConfig, moe: MoEConfig, params: dict[str, Any], lr: float, optimizer: str = "adam"):
    """``backends.moe.MoeVitTrainer`` in JAX."""
    return vit_trainer(config, params, lr, optimizer, mlp=_mlp_for(moe))
