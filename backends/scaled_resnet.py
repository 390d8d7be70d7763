"""The scaled residual network of thesis eq. 3.3: shared NumPy weights and data for both backends.

h_0 = x, h_{k+1} = h_k + V_{k+1} sigma(W_{k+1} h_k / sqrt(q)) / (L sqrt(m)), F(x) = h_L, with
A = B = identity (q = d = d', section 3.5.1). V starts at zero; W is one standard Gaussian matrix
shared by every layer (``tied``, the discretisation of a constant function: the smooth
initialisation of section 3.3) or an independent draw per layer (``iid``).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from core.backend import Array

ACTIVATIONS = ("gelu", "relu", "identity")
INITS = ("tied", "iid")


def check_activation(activation: str) -> str:
    """``activation`` if it is one of ``ACTIVATIONS``; ValueError naming the allowed ones otherwise."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is unknown; allowed: {', '.join(ACTIVATIONS)}")
    return activation


def init_scaled_resnet(
    depth: int, width: int, hidden: int, init: str, seed: int, dtype: str = "float32"
) -> dict[str, np.ndarray]:
    """Initial weights of eq. 3.3: V = 0 and W tied or i.i.d. standard Gaussian.

    Args:
        depth: L, number of residual layers (>= 1).
        width: q, dimension of the hidden state (= input and output dimension here).
        hidden: m, width of each residual MLP.
        init: ``tied`` (one W drawn from ``seed`` for every layer, whatever the depth, so nets of
            different depths share their limit function) or ``iid`` (one draw per layer).
        seed: the draw's seed.
        dtype: NumPy float dtype name.

    Returns:
        {"V": (L, q, m) zeros, "W": (L, m, q)} arrays of ``dtype``.

    References:
        Thesis section 3.3 (initialisation), section 3.5.1.
    """
    for name, value in (("depth", depth), ("width", width), ("hidden", hidden)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r} must be an integer >= 1")
    if init not in INITS:
        raise ValueError(f"init={init!r} is unknown; allowed: {', '.join(INITS)}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    if init == "tied":
        w = np.broadcast_to(rng.standard_normal((hidden, width)), (depth, hidden, width))
    else:
        w = rng.standard_normal((depth, hidden, width))
    return {"V": np.zeros((depth, width, hidden), dtype), "W": np.ascontiguousarray(w, dtype=dtype)}


def gaussian_pairs(n: int, width: int, seed: int, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """n independent standard Gaussian pairs (x_i, y_i), each (n, width) (section 3.5.1)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4]))
    return rng.standard_normal((n, width)).astype(dtype), rng.standard_normal((n, width)).astype(dtype)


def layer_diffs(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """||Z_{k+1} - Z_k||_F = ||V_{k+1} - V_k||_F + ||W_{k+1} - W_k||_F for k = 1 ... L-1, float64 (L-1,)."""
    v, w = np.asarray(v, np.float64), np.asarray(w, np.float64)
    return np.sqrt(((v[1:] - v[:-1]) ** 2).sum(axis=(1, 2))) + np.sqrt(((w[1:] - w[:-1]) ** 2).sum(axis=(1, 2)))


def function_distance(v: np.ndarray, w: np.ndarray, v_ref: np.ndarray, w_ref: np.ndarray) -> float:
    """(int_0^1 ||Z^L(s) - Z^ref(s)||_F^2 ds)^(1/2), weights read as step functions of s = k / L.

    Layer k of a depth-L net covers s in ((k-1)/L, k/L]; when the reference depth is a multiple
    of L, each reference layer lies inside one layer of the shallower net and the integral is an
    exact sum. ||Z||_F is ||V||_F + ||W||_F, as in Fig. 3.1.

    Args:
        v, w: (L, q, m) and (L, m, q) weights of the net.
        v_ref, w_ref: (R, q, m) and (R, m, q) weights of the reference, R a multiple of L.

    Returns:
        The distance, a float.

    References:
        Thesis Fig. 3.1 (right), Theorem 3.4 (ii).
    """
    depth, ref = v.shape[0], v_ref.shape[0]
    if ref % depth:
        raise ValueError(f"reference depth {ref} is not a multiple of depth {depth}")
    rep = ref // depth
    dv = np.repeat(np.asarray(v, np.float64), rep, axis=0) - np.asarray(v_ref, np.float64)
    dw = np.repeat(np.asarray(w, np.float64), rep, axis=0) - np.asarray(w_ref, np.float64)
    per_layer = np.sqrt((dv**2).sum(axis=(1, 2))) + np.sqrt((dw**2).sum(axis=(1, 2)))
    return float(np.sqrt(np.mean(per_layer**2)))


def check_gd(activation: str, steps: int) -> None:
    """Check ``scaled_resnet_gd``'s activation (``check_activation``) and number of steps (>= 0)."""
    check_activation(activation)
    if steps < 0:
        raise ValueError(f"steps={steps} must be >= 0")


class ScaledResnetApply(Protocol):
    """Output h_L of eq. 3.3 with A = B = identity.

    Args:
        params: {"V": (L, q, m), "W": (L, m, q)} (``backends.scaled_resnet``).
        x: (n, q) inputs, the dtype of the weights.
        activation: ``gelu`` (exact), ``relu`` or ``identity``.

    Returns:
        (n, q) outputs.

    References:
        Thesis eq. 3.3, section 3.5.1.
    """

    def __call__(self, params: Any, x: Array, activation: str = "gelu") -> Array: ...


class ScaledResnetGd(Protocol):
    """``steps`` steps of full-batch gradient descent on the mean squared error of eq. 3.3.

    Args:
        params: {"V": (L, q, m), "W": (L, m, q)}; not modified.
        x, y: (n, q) inputs and targets.
        lr: the step size of every weight (the thesis uses L x 1e-2: gradient flow (3.4) has a
            factor L in front of the layers' gradients).
        steps: number of gradient steps (>= 0).
        activation: ``gelu``, ``relu`` or ``identity``.

    Returns:
        (new params, losses, layer_diffs): losses (steps + 1,) is the loss before the first step
        and after each step; layer_diffs (steps + 1,) is max_k ||Z_{k+1} - Z_k||_F at the same
        times (0 for L = 1).

    References:
        Thesis eq. 3.3-3.4, section 3.5.1, appendix 3.E, Fig. 3.1.
    """

    def __call__(
        self, params: Any, x: Array, y: Array, lr: float, steps: int, activation: str = "gelu"
    ) -> tuple[Any, Array, Array]: ...


OPS: dict[str, type] = {
    "scaled_resnet_apply": ScaledResnetApply,
    "scaled_resnet_gd": ScaledResnetGd,
}
"""Operator name -> its Protocol: ``backends.torch.<family>`` and ``backends.jax.<family>`` export each name."""
