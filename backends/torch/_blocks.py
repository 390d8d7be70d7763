"""Residual functions f(x, theta_k) for the memory issue's networks, and the families that hold them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

_ACT = {"tanh": torch.tanh, "relu": torch.relu, "gelu": F.gelu}


def mlp_block(ps: Sequence[torch.Tensor], x: torch.Tensor, activation: str) -> torch.Tensor:
    """The ``mlp`` block of ``backends.resnets.block_shapes``: (batch, width) -> (batch, width)."""
    w1, b1, w2, b2 = ps
    return F.linear(_ACT[activation](F.linear(x, w1, b1)), w2, b2)


def batch_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Norm over (batch, H, W) per channel with the batch's statistics, affine ``w``, ``b``; no running averages."""
    return F.batch_norm(x, None, None, w, b, training=True, momentum=0.0, eps=1e-5)


def conv_block(ps: Sequence[torch.Tensor], x: torch.Tensor, activation: str) -> torch.Tensor:
    """The ``conv`` / ``conv_norm`` block of ``backends.resnets.block_shapes``: (batch, width, size, size) -> same.

    A pure function of (x, theta): recomputing it in the backward gives the same bits.
    """
    g1, b1, c1, g2, b2, c2, *last = ps
    act = _ACT[activation]
    h = F.conv2d(act(batch_norm(x, g1, b1)), c1, padding=1)
    h = F.conv2d(act(batch_norm(h, g2, b2)), c2, padding=1)
    return batch_norm(h, *last) if last else h


class Family:
    """A family of residual functions f(., theta_k), k < len(sets), and their parameter tensors.

    ``sets[k]`` lists the tensors of set k (the same tensors for every k when weights are tied);
    ``call(k, x)`` evaluates f(x, theta_k). ``modules`` are torch modules whose batch-norm
    running statistics must not move when a block is recomputed in a backward.
    """

    def __init__(
        self,
        sets: list[list[torch.Tensor]],
        call: Callable[[int, torch.Tensor], torch.Tensor],
        modules: Sequence[torch.nn.Module] = (),
    ):
        self.sets = sets
        self.call = call
        self.modules = list(modules)

    def __len__(self) -> int:
        return len(self.sets)

    def __call__(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return self.call(k, x)

    def tensors(self) -> list[torch.Tensor]:
        """Every distinct parameter tensor, in order of first use."""
        seen: dict[int, torch.Tensor] = {}
        for ps in self.sets:
            for p in ps:
                seen.setdefault(id(p), p)
        return list(seen.values())

    @contextlib.contextmanager
    def recomputing(self) -> Iterator[None]:
        """Batch norms keep their running statistics while blocks are recomputed (momentum 0)."""
        norms = [
            m for mod in self.modules for m in mod.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        ]
        saved = [
            (m, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms
        ]
        for m in norms:
            m.momentum = 0.0
        try:
            yield
        finally:
            for m, momentum, tracked in saved:
                m.momentum = momentum
                if tracked is not None:
                    m.num_batches_tracked.copy_(tracked)


def block_family(sets: list[list[torch.Tensor]], block: str, activation: str) -> Family:
    """The family of mlp or conv blocks with parameter sets ``sets``."""
    fn = mlp_block if block == "mlp" else conv_block
    return Family(sets, lambda k, x: fn(sets[k], x, activation))


def module_family(modules: Sequence[torch.nn.Module]) -> Family:
    """The family f_k(x) = module_k(x) - x: a residual block seen as x + f(x) (e.g. torchvision's)."""
    mods = list(modules)
    return Family([[p for p in m.parameters()] for m in mods], lambda k, x: mods[k](x) - x, mods)


class Grads:
    """Gradient accumulators, one per parameter tensor: a tied tensor's gradient is summed in place."""

    def __init__(self) -> None:
        self._acc: dict[int, torch.Tensor] = {}

    def vjp(
        self, out: torch.Tensor, x: torch.Tensor, ps: Sequence[torch.Tensor], cotangent: torch.Tensor
    ) -> torch.Tensor:
        """Add <cotangent, d out / d p> to each p of ``ps``; return <cotangent, d out / d x>."""
        unique = list({id(p): p for p in ps if p.requires_grad}.values())
        grads = torch.autograd.grad(out, [x, *unique], cotangent, allow_unused=True)
        for p, g in zip(unique, grads[1:]):
            if g is None:
                continue
            if id(p) in self._acc:
                self._acc[id(p)].add_(g)
            else:
                self._acc[id(p)] = g
        return grads[0] if grads[0] is not None else torch.zeros_like(x)

    def result(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
        """The accumulated gradient of each tensor (None for those that got none)."""
        return [self._acc.get(id(p)) for p in tensors]


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels (and no cuDNN autotuning) while a block runs in a forward and is recomputed.

    The exact backward recomputes each block from the same input and must get the same bits.
    """
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    bench = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.benchmark = bench
