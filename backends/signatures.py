"""The operator signatures both backends export in ``ops``: one Protocol each.

``tests/backends/test_signatures.py`` checks that ``backends.torch.ops`` and ``backends.jax.ops``
export every name listed here with the same parameters, order and defaults.
"""

from __future__ import annotations

from typing import Any, Protocol

from backends._protocol import Array


class Matmul(Protocol):
    def __call__(self, a: Array, b: Array) -> Array: ...


class Copy(Protocol):
    def __call__(self, x: Array) -> Array: ...


class Sinkhorn(Protocol):
    """Log-domain Sinkhorn: ``n_iter`` alternating row/column normalisations (thesis eq. 5.3, 5.13)."""

    def __call__(self, scores: Array, n_iter: int, mask: Array | None = None, implicit: bool = False) -> Array: ...


class Attention(Protocol):
    """Dot-product attention normalised by softmax or Sinkhorn; returns (out, weights) (eq. 5.1, 5.4).

    ``impl`` (``backends/sinkhorn_common.py``'s ``IMPLS``): ``naive`` forms the T x T weights; ``blocked`` and
    the fused kernels (``triton`` in torch, ``pallas`` in JAX) work in O(T) memory and return weights None;
    ``auto`` picks the fastest O(T)-memory one for the device."""

    def __call__(
        self,
        q: Array,
        k: Array,
        v: Array,
        normalization: str = "softmax",
        sinkhorn_iters: int = 3,
        mask: Array | None = None,
        implicit: bool = False,
        impl: str = "naive",
    ) -> tuple[Array, Array | None]: ...


class FusedAttention(Protocol):
    """The framework's fused softmax attention on (B, H, T, d) inputs (the speed baseline)."""

    def __call__(self, q: Array, k: Array, v: Array) -> Array: ...


class VitInit(Protocol):
    """The ViT's initial weights from ``backends.vit_init`` on a device (same seed, same weights)."""

    def __call__(self, config: Any, seed: int, device: Any = "cpu", dtype: str = "float32") -> Any: ...


class VitApply(Protocol):
    """ViT forward: (logits, per-layer attention matrices); ``mlp`` replaces the block MLP."""

    def __call__(self, params: Any, images: Array, config: Any, mlp: Any = None) -> tuple[Array, list[Array]]: ...


class VitTrainerObject(Protocol):
    """What ``vit_trainer`` returns: the framework's training loop behind one interface."""

    params: Any

    def compile(self, images: Array, labels: Array, batch: int) -> None: ...

    def fit_epoch(self, images: Array, labels: Array, order: Any, batch: int) -> tuple[float, float]: ...

    def predict(self, images: Array, batch: int = 500) -> Any: ...

    def attention(self, images: Array) -> list[Any]: ...


class VitTrainer(Protocol):
    """A trainer (Adam or SGD on cross-entropy) of a ViT starting from ``params``."""

    def __call__(
        self, config: Any, params: Any, lr: float, optimizer: str = "adam", mlp: Any = None
    ) -> VitTrainerObject: ...


class ResidualNet(Protocol):
    """A residual network of the memory issue (thesis eq. 2.1, 2.8, 4.2, 4.4), same weights in both backends.

    model: resnet | checkpoint | momentum | momentum_reversible | adjoint_euler | adjoint_heun |
    revnet; block: mlp | conv (torch also resnet18 ... resnet152, via ``to_momentum``); gamma:
    momentum term (float or "n/d", default 1 - 1/(50 depth)); scale: step h multiplying f
    (default 1/depth for the Euler and Heun rules, 1 otherwise); frac_bits: fixed-point format of
    the exact models; backprop: plain autodiff through the same forward rule (the reference);
    weights: name -> NumPy array replacing the seeded draw (smooth or zero initialisations).
    """

    def __call__(
        self,
        model: str,
        *,
        depth: int | None = None,
        width: int | None = None,
        hidden: int | None = None,
        block: str = "mlp",
        activation: str = "tanh",
        tied: bool = False,
        gamma: float | str | None = None,
        scale: float | None = None,
        frac_bits: int | None = None,
        image_size: int | None = None,
        backprop: bool = False,
        weights: dict[str, Any] | None = None,
        seed: int = 0,
        dtype: str = "float32",
        device: Any = "cpu",
    ) -> Any: ...


class ResidualApply(Protocol):
    """The network's output on x; its backward is the model's (stored, recomputed or reversed)."""

    def __call__(self, net: Any, x: Array) -> Array: ...


class ResidualVjp(Protocol):
    """Gradients of <net(x), cotangent>: parameter name -> array (stacked over depth unless tied), "input"."""

    def __call__(self, net: Any, x: Array, cotangent: Array) -> dict[str, Array]: ...


class ResidualFunctional(Protocol):
    """(forward(params, x), step(params, x, cotangent) -> gradients, params) for memory meters and timers."""

    def __call__(self, net: Any) -> tuple[Any, Any, Any]: ...


class ResidualTrajectory(Protocol):
    """Forward activations x_n for n = 0, every, ... <= depth: (depth // every + 1, *x.shape)."""

    def __call__(self, net: Any, x: Array, every: int = 1) -> Array: ...


class ResidualReconstruct(Protocol):
    """Activations recovered from the output by the model's reversal (as its backward does), same shape."""

    def __call__(self, net: Any, x: Array, every: int = 1) -> Array: ...


class TopkMask(Protocol):
    """Relaxed top-k mask along the last axis (thesis 7.4; solvers threshold, pav, dykstra)."""

    def __call__(
        self,
        x: Array,
        k: int,
        *,
        lam: float = 0.1,
        p: float = 2.0,
        solver: str = "threshold",
        max_iter: int | None = None,
        tol: float | None = None,
    ) -> Array: ...


class TopkMag(Protocol):
    """Relaxed top-k in magnitude along the last axis (thesis 7.4, phi(x) = x^2/2)."""

    def __call__(
        self,
        x: Array,
        k: int,
        *,
        lam: float = 0.1,
        p: float = 2.0,
        solver: str = "threshold",
        max_iter: int | None = None,
        tol: float | None = None,
    ) -> Array: ...


class HardTopkMask(Protocol):
    """Hard top-k mask (k ones per row) along the last axis (thesis 7.3)."""

    def __call__(self, x: Array, k: int) -> Array: ...


class HardTopkMag(Protocol):
    """Hard top-k in magnitude ``x * topkmask(|x|)`` along the last axis (thesis 7.3)."""

    def __call__(self, x: Array, k: int) -> Array: ...


class TopkSolve(Protocol):
    """Forward only: (output, Dykstra's iterations or None); ``solver="hard"`` gives the hard operator."""

    def __call__(
        self,
        x: Array,
        k: int,
        *,
        op: str = "mask",
        lam: float = 0.1,
        p: float = 2.0,
        solver: str = "threshold",
        max_iter: int | None = None,
        tol: float | None = None,
    ) -> tuple[Array, int | None]: ...


class TopkVjp(Protocol):
    """Forward and backward in one call: (output, cotangent^T Jacobian) (Prop. 7.8)."""

    def __call__(
        self,
        x: Array,
        k: int,
        cotangent: Array,
        *,
        op: str = "mask",
        lam: float = 0.1,
        p: float = 2.0,
        solver: str = "threshold",
        max_iter: int | None = None,
        tol: float | None = None,
    ) -> tuple[Array, Array]: ...


class ScaledResnetApply(Protocol):
    """Output of the scaled residual network of eq. 3.3 (A = B = identity); params {"V": (L, q, m), "W": (L, m, q)}."""

    def __call__(self, params: Any, x: Array, activation: str = "gelu") -> Array: ...


class ScaledResnetGd(Protocol):
    """``steps`` full-batch GD steps on the MSE of eq. 3.3: (params, losses (steps+1,), max layer distances (steps+1,))."""

    def __call__(
        self, params: Any, x: Array, y: Array, lr: float, steps: int, activation: str = "gelu"
    ) -> tuple[Any, Array, Array]: ...


class ArTransformerInit(Protocol):
    """The autoregressive Transformer's initial weights from ``backends.ar_init`` (same seed, same weights)."""

    def __call__(self, config: Any, seed: int, device: Any = "cpu", dtype: str = "float32") -> Any: ...


class ArTransformerApply(Protocol):
    """Predictions (B, T, d) of s_{t+1} from augmented tokens (B, T, 3d) (eq. 6.4 iterated, section 6.6)."""

    def __call__(self, params: Any, tokens: Array, config: Any) -> Array: ...


class ArTrainerObject(Protocol):
    """What ``ar_transformer_trainer`` returns: the framework's training loop behind one interface."""

    params: Any

    def compile(self, tokens: Array, targets: Array, batch: int) -> None: ...

    def fit_epoch(self, tokens: Array, targets: Array, order: Any, batch: int) -> float: ...

    def predict(self, tokens: Array, batch: int = 1024) -> Any: ...


class ArTransformerTrainer(Protocol):
    """A trainer (Adam on the next-state MSE) of the autoregressive Transformer from ``params``."""

    def __call__(self, config: Any, params: Any, lr: float) -> ArTrainerObject: ...


class ArGdPredict(Protocol):
    """Predictions (n, T, d) of s_{t+1} by ``steps`` GD steps on the in-context loss (eq. 6.5), from W = 0."""

    def __call__(self, states: Array, steps: int, step_size: float) -> Array: ...


class MoeRoute(Protocol):
    """Expert-choice routing (G, n, E) logits -> (combine weights (G, n, E), selection mask (G, E, n)) (7.6)."""

    def __call__(self, logits: Array, moe: Any) -> tuple[Array, Array]: ...


class MoeVitInit(Protocol):
    """The sparse-MoE ViT's initial weights from ``backends.moe_config`` (same seed, same weights)."""

    def __call__(self, config: Any, moe: Any, seed: int, device: Any = "cpu", dtype: str = "float32") -> Any: ...


class MoeVitApply(Protocol):
    """Sparse-MoE ViT forward: (logits, combine weights (B, tokens, E) of every MoE layer) (7.C.3)."""

    def __call__(self, params: Any, images: Array, config: Any, moe: Any) -> tuple[Array, list[Array]]: ...


class MoeVitTrainer(Protocol):
    """A ``vit_trainer`` object training the sparse-MoE ViT (Adam or SGD on cross-entropy)."""

    def __call__(self, config: Any, moe: Any, params: Any, lr: float, optimizer: str = "adam") -> VitTrainerObject: ...


class PrunedMlpInit(Protocol):
    """The pruned MLP's initial weights W'_i, b_i from ``backends.pruned_mlp_init`` (same seed, same weights)."""

    def __call__(self, config: Any, seed: int, device: Any = "cpu", dtype: str = "float32") -> Any: ...


class PrunedMlpApply(Protocol):
    """Logits of the MLP whose weights are W_i = topkmag(W'_i) (hard, relaxed or none; section 7.6)."""

    def __call__(self, params: Any, x: Array, config: Any) -> Array: ...


class PrunedMlpWeights(Protocol):
    """The effective (pruned) weight matrices W_i = topkmag(W'_i), each (in, out)."""

    def __call__(self, params: Any, config: Any) -> list[Array]: ...


class PrunedTrainerObject(Protocol):
    """What ``pruned_mlp_trainer`` returns: the framework's SGD loop behind one interface."""

    params: Any

    def compile(self, x: Array, y: Array, batch: int) -> None: ...

    def fit_epoch(self, x: Array, y: Array, order: Any, batch: int) -> tuple[float, float]: ...

    def predict(self, x: Array, batch: int = 1024) -> Any: ...

    def weights(self) -> list[Any]: ...


class PrunedMlpTrainer(Protocol):
    """A trainer (SGD on cross-entropy, through the pruning operator) of the pruned MLP from ``params``."""

    def __call__(self, config: Any, params: Any, lr: float) -> PrunedTrainerObject: ...


class ResidualClassifierInit(Protocol):
    """The section 2.5.2 classifier's initial weights from ``backends.residual_classifier_init`` (same seed, same weights)."""

    def __call__(self, config: Any, seed: int, device: Any = "cpu") -> Any: ...


class ResidualClassifierApply(Protocol):
    """Logits of the classifier; the residual part's backward is backprop or the adjoint (Fig. 2.4)."""

    def __call__(self, params: Any, x: Array, config: Any) -> Array: ...


class ClassifierTrainerObject(Protocol):
    """What ``residual_classifier_trainer`` returns: the framework's SGD-with-momentum loop behind one interface."""

    params: Any

    def compile(self, x: Array, y: Array, batch: int) -> None: ...

    def fit_epoch(self, x: Array, y: Array, order: Any, batch: int, lr: float) -> tuple[float, float]: ...

    def body_gradients(self, x: Array, y: Array, backward: str) -> dict[str, Any]:
        """Gradient of the mean cross-entropy on (x, y) w.r.t. the residual blocks' weights, at the current weights.

        Args:
            backward: ``adjoint`` (eq. 2.7, activations rebuilt by reversal) or ``backprop``.

        Returns:
            name -> (sets, *shape) float64 arrays, as ``params["body"]``.

        References:
            Thesis Fig. 2.3c (the adjoint's gradient against backprop's, per parameter tensor).
        """

    def predict(self, x: Array) -> Any: ...


class ResidualClassifierTrainer(Protocol):
    """A trainer (SGD, momentum, weight decay, on cross-entropy) of the classifier from ``params``."""

    def __call__(
        self, config: Any, params: Any, momentum: float = 0.9, weight_decay: float = 5e-4
    ) -> ClassifierTrainerObject: ...


OPS: dict[str, type] = {
    "residual_net": ResidualNet,
    "residual_apply": ResidualApply,
    "residual_vjp": ResidualVjp,
    "residual_functional": ResidualFunctional,
    "residual_trajectory": ResidualTrajectory,
    "residual_reconstruct": ResidualReconstruct,
    "matmul": Matmul,
    "copy": Copy,
    "sinkhorn": Sinkhorn,
    "attention": Attention,
    "fused_attention": FusedAttention,
    "vit_init": VitInit,
    "vit_apply": VitApply,
    "vit_trainer": VitTrainer,
    "moe_route": MoeRoute,
    "moe_vit_init": MoeVitInit,
    "moe_vit_apply": MoeVitApply,
    "moe_vit_trainer": MoeVitTrainer,
    "topk_mask": TopkMask,
    "topk_mag": TopkMag,
    "hard_topk_mask": HardTopkMask,
    "hard_topk_mag": HardTopkMag,
    "topk_solve": TopkSolve,
    "topk_vjp": TopkVjp,
    "scaled_resnet_apply": ScaledResnetApply,
    "scaled_resnet_gd": ScaledResnetGd,
    "ar_transformer_init": ArTransformerInit,
    "ar_transformer_apply": ArTransformerApply,
    "ar_transformer_trainer": ArTransformerTrainer,
    "ar_gd_predict": ArGdPredict,
    "pruned_mlp_init": PrunedMlpInit,
    "pruned_mlp_apply": PrunedMlpApply,
    "pruned_mlp_weights": PrunedMlpWeights,
    "pruned_mlp_trainer": PrunedMlpTrainer,
    "residual_classifier_init": ResidualClassifierInit,
    "residual_classifier_apply": ResidualClassifierApply,
    "residual_classifier_trainer": ResidualClassifierTrainer,
}
"""Operator name -> its Protocol; every backend's ``ops`` module exports each name."""
