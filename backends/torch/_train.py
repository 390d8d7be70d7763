"""The minibatch loop the torch classifier trainers share (their JAX twins scan or loop a compiled step)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F


def classifier_epoch(
    logits: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    order: np.ndarray,
    batch: int,
) -> tuple[float, float]:
    """One pass over ``order`` in minibatches of ``batch`` (the last incomplete one dropped), one step each.

    Args:
        logits: the model's logits on a minibatch of ``x``.
        optimizer: steps the model's parameters after each minibatch's cross-entropy backward.

    Returns:
        The mean training loss and the running training accuracy over the epoch.
    """
    n_batches = len(order) // batch
    if n_batches == 0:
        raise ValueError(f"batch={batch}: larger than the {len(order)} training images")
    idx = torch.as_tensor(np.asarray(order[: n_batches * batch]).reshape(n_batches, batch), device=x.device)
    losses, correct = [], []
    for ib in idx:
        out = logits(x[ib])
        loss = F.cross_entropy(out, y[ib])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        correct.append((out.detach().argmax(-1) == y[ib]).sum())
    return float(torch.stack(losses).mean()), float(torch.stack(correct).sum()) / (n_batches * batch)
