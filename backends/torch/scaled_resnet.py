"""The scaled residual network of thesis eq. 3.3 in torch, and its full-batch gradient descent.

The backward is written out (no autograd graph over L layers), so a step costs a few kernels per
layer: at L = 1,024 autograd's bookkeeping would dominate. ``tests/backends/test_scaled_resnet.py``
checks it against torch autograd and against the JAX backend (jax.grad through ``lax.scan``).
On the CPU the steps run on one intra-op thread: the per-layer matrices (100 x 16 x 32 in the
thesis) are far too small to share, and on a shared 2-core machine two threads made a step 30 times
slower (OpenMP threads waiting for each other).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from backends.scaled_resnet import check_activation, check_gd

Params = dict[str, torch.Tensor]


def _act(name: str, a: torch.Tensor) -> torch.Tensor:
    if name == "gelu":
        return torch.nn.functional.gelu(a)
    if name == "relu":
        return torch.relu(a)
    return a


def _act_grad(name: str, a: torch.Tensor) -> torch.Tensor:
    """sigma'(a): exact GELU Phi(a) + a phi(a), ReLU 1[a > 0], identity 1."""
    if name == "gelu":
        cdf = 0.5 * (1.0 + torch.erf(a * (1.0 / math.sqrt(2.0))))
        return cdf + a * torch.exp(-0.5 * a * a) * (1.0 / math.sqrt(2.0 * math.pi))
    if name == "relu":
        return (a > 0).to(a.dtype)
    return torch.ones_like(a)


def _forward(params: Params, x: torch.Tensor, activation: str, keep: bool):
    """h_L, and with ``keep`` the inputs h_k and pre-activations W_k h_k / sqrt(q) of every layer."""
    v, w = params["V"], params["W"]
    depth, width, hidden = v.shape
    vs = v * (1.0 / (depth * math.sqrt(hidden)))
    ws = w * (1.0 / math.sqrt(width))
    h, states, pre = x, [], []
    for vk, wk in zip(vs.unbind(0), ws.unbind(0)):
        a = h @ wk.T
        if keep:
            states.append(h)
            pre.append(a)
        h = torch.addmm(h, _act(activation, a), vk.T)
    return h, states, pre


def scaled_resnet_apply(params: Params, x: torch.Tensor, activation: str = "gelu") -> torch.Tensor:
    """``backends.scaled_resnet.ScaledResnetApply`` in torch."""
    check_activation(activation)
    return _forward(params, x, activation, keep=False)[0]


def _loss_and_grads(params: Params, x: torch.Tensor, y: torch.Tensor, activation: str):
    """Loss (1/n) sum_i ||h_L(x_i) - y_i||^2 and its gradients, by the written-out backward."""
    v, w = params["V"], params["W"]
    depth, width, hidden = v.shape
    c, s = 1.0 / (depth * math.sqrt(hidden)), 1.0 / math.sqrt(width)
    vs, ws = v * c, w * s
    out, states, pre = _forward(params, x, activation, keep=True)
    n = x.shape[0]
    resid = out - y
    loss = (resid * resid).sum() / n
    g = resid * (2.0 / n)
    gv, gw = torch.empty_like(v), torch.empty_like(w)
    for k in range(depth - 1, -1, -1):
        a = pre[k]
        torch.mm(g.T, _act(activation, a), out=gv[k])
        ga = (g @ vs[k]) * _act_grad(activation, a)
        torch.mm(ga.T, states[k], out=gw[k])
        g = torch.addmm(g, ga, ws[k])
    return loss, {"V": gv.mul_(c), "W": gw.mul_(s)}


def _max_layer_diff(params: Params) -> torch.Tensor:
    v, w = params["V"], params["W"]
    if v.shape[0] < 2:
        return torch.zeros((), dtype=v.dtype, device=v.device)
    dv = torch.linalg.vector_norm(v[1:] - v[:-1], dim=(1, 2))
    dw = torch.linalg.vector_norm(w[1:] - w[:-1], dim=(1, 2))
    return (dv + dw).max()


@contextlib.contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run on one intra-op thread on the CPU (restored after); no change on other devices."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def scaled_resnet_gd(
    params: Params, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int, activation: str = "gelu"
) -> tuple[Params, torch.Tensor, torch.Tensor]:
    """``backends.scaled_resnet.ScaledResnetGd`` in torch."""
    check_gd(activation, steps)
    p = {k: t.clone() for k, t in params.items()}
    losses, diffs = [], []
    with _one_thread(x.device):
        for _ in range(steps):
            loss, grads = _loss_and_grads(p, x, y, activation)
            losses.append(loss)
            diffs.append(_max_layer_diff(p))
            p["V"].sub_(grads["V"], alpha=lr)
            p["W"].sub_(grads["W"], alpha=lr)
        out = scaled_resnet_apply(p, x, activation) - y
        losses.append((out * out).sum() / x.shape[0])
        diffs.append(_max_layer_diff(p))
    return p, torch.stack(losses), torch.stack(diffs)
