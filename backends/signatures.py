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
    """Log-domain Sinkhorn: ``n_iter`` alternating row/column normalisations (thesis eq. 5.3, 5.13).

    Args:
        scores: (..., n, m) float, the cost C (attention logits).
        n_iter: number of normalisations, >= 1; 1 is the softmax over the last axis, odd ends on rows.
        mask: (..., n) bool padding mask, True for real tokens, broadcastable against
            ``scores.shape[:-1]`` (square scores only). Masked queries and keys take no part in
            either normalisation; every masked row and column of the output is 0.
        implicit: differentiate the converged fixed point (implicit function theorem) instead of
            back-propagating through every iteration; exact only at convergence.

    Returns:
        (..., n, m) the plan K^l: rows sum to 1; at convergence columns sum to n / m (1 when square).

    References:
        Thesis chapter 5, eq. 5.3 (iterations), appendix 5.B eq. 5.13 (log domain), section 5.3
        (implicit differentiation), Prop. 5.1 (invariance to f_i + g_j).
    """

    def __call__(self, scores: Array, n_iter: int, mask: Array | None = None, implicit: bool = False) -> Array: ...


class Attention(Protocol):
    """Scaled dot-product attention normalised by the softmax or by Sinkhorn's algorithm.

    Args:
        q, k, v: (B, H, T, d) float, one dtype (k and v may have their own T; v its own d).
        normalization: ``softmax`` (row-stochastic) or ``sinkhorn`` (doubly stochastic in the limit).
        sinkhorn_iters: normalisations for ``sinkhorn`` (ignored by ``softmax``).
        mask: (B, 1 or H, T) bool padding mask, True for real tokens.
        implicit: implicit differentiation of Sinkhorn (see ``Sinkhorn``); naive impl only.
        impl: (``backends/sinkhorn_common.py``'s ``IMPLS``) ``naive`` forms the T x T weights; ``blocked`` and
            the fused kernels (``triton`` in torch, ``pallas`` in JAX) recompute them tile by tile in O(T)
            memory, same output and gradients; ``auto`` picks the fastest O(T)-memory one for the device
            (naive when ``implicit``).

    Returns:
        out (B, H, T, d) and the attention matrices (B, H, T, T); None for the blocked impls, which never
        form them.

    References:
        Thesis chapter 5, eq. 5.1 (Transformer) and eq. 5.4 (Sinkformer).
    """

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
    """The initial weights of ``config`` from ``seed`` on ``device`` (``backends.vit_init.init_params``).

    Args:
        config: the architecture.
        seed: weights seed; the same seed gives the same weights in both backends.
        device: where the weights live (JAX: a jax.Device or a platform name such as ``cpu``).
        dtype: ``float32`` or ``float64``.

    Returns:
        Nested dict of arrays (see ``init_params``); linear weights are (in, out).
    """

    def __call__(self, config: Any, seed: int, device: Any = "cpu", dtype: str = "float32") -> Any: ...


class VitApply(Protocol):
    """Logits of the ViT and the attention matrices of every layer.

    Args:
        params: weights from ``vit_init`` (or with each block's ``mlp`` entry replaced).
        images: (B, C, H, W) float, H = W = ``config.image_size``.
        config: the architecture; ``normalization`` and ``sinkhorn_iters`` pick the attention.
        mlp: the block MLP, ``mlp(block["mlp"], x)``; ``dense_mlp`` when None. Unused when
            ``config.mlp_dim`` is None (attention-only model).

    Returns:
        logits (B, num_classes) and one (B, heads, tokens, tokens) attention matrix per layer.

    References:
        Thesis section 5.6.4 (ViT, Sinkformer counterpart), Fig. 5.6 (attention-only model).
    """

    def __call__(self, params: Any, images: Array, config: Any, mlp: Any = None) -> tuple[Array, list[Array]]: ...


class VitTrainerObject(Protocol):
    """What ``vit_trainer`` returns: the framework's training loop behind one interface."""

    params: Any

    def compile(self, images: Array, labels: Array, batch: int) -> None: ...

    def fit_epoch(self, images: Array, labels: Array, order: Any, batch: int) -> tuple[float, float]: ...

    def predict(self, images: Array, batch: int = 500) -> Any: ...

    def attention(self, images: Array) -> list[Any]: ...


class VitTrainer(Protocol):
    """A trainer of the ViT ``config`` starting from ``params``, with Adam or plain SGD.

    Args:
        config: the architecture.
        params: initial weights (``vit_init``); torch's trainer works on a copy (JAX arrays are immutable).
        lr: learning rate, constant.
        optimizer: ``adam`` (PyTorch defaults: betas 0.9, 0.999, eps 1e-8) or ``sgd`` (no momentum).
        mlp: the block MLP (see ``vit_apply``).

    Returns:
        An object with ``compile``, ``fit_epoch``, ``predict``, ``attention`` and ``params``.

    References:
        Thesis appendix 5.C.4 (Adam, ViT and attention-only experiments).
    """

    def __call__(
        self, config: Any, params: Any, lr: float, optimizer: str = "adam", mlp: Any = None
    ) -> VitTrainerObject: ...


class ResidualNet(Protocol):
    """A residual network of the memory issue (thesis eq. 2.1, 2.8, 4.2, 4.4), weights from the shared initialiser.

    Args:
        model: resnet, checkpoint, momentum, momentum_reversible, adjoint_euler, adjoint_heun or revnet.
        depth: layers N >= 1; width: d (features of the mlp, channels of the conv block).
        hidden: hidden width of f (default: width); block: mlp, conv (or a torchvision name, torch).
        activation: tanh or relu; tied: one weight set for every layer.
        gamma: momentum term in [0, 1], a float or "n/d" (default 1 - 1/(50 depth), Fig. 4.2).
        scale: step h multiplying f (default 1/depth for the Euler and Heun rules, 1 otherwise).
        frac_bits: fixed-point fractional bits of the exact models (default by dtype).
        image_size: side of the conv block's images (default 8).
        backprop: plain autodiff through the same forward rule (floats), the gradient reference.
        weights: name -> NumPy array replacing the seeded draw (shapes as ``init_params``).
        seed: seed of the shared NumPy initialiser (same weights in both backends).
        dtype: float32 or float64; device: where the weights live.

    Returns:
        The network (torch: a module, or the torchvision model converted by ``to_momentum`` for a torchvision
        block; JAX: its config and its weights, stacked along depth unless tied).
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
    """The forward activations x_n for n = 0, every, 2 every, ... <= depth (eq. 2.1, 2.8, 4.2, 4.4).

    Exact models report their fixed-point state (as floats); a RevNet reports x_n (not v_n).

    Returns:
        (count, *x.shape) with count = depth // every + 1.
    """

    def __call__(self, net: Any, x: Array, every: int = 1) -> Array: ...


class ResidualReconstruct(Protocol):
    """The activations the model's reversal recovers from the output, as its backward does.

    Runs the forward keeping only the final state, then walks back: exact for
    momentum_reversible and revnet (fixed point), eq. 4.3 in floats for momentum (division by
    gamma), eq. 2.6 (Euler rule) or 2.9 (Heun rule) for the others.

    Returns:
        (count, *x.shape), x~_n for n = 0, every, ... <= depth, in increasing n.
    """

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
    """Output h_L of eq. 3.3 with A = B = identity.

    Args:
        params: {"V": (L, q, m), "W": (L, m, q)} (``backends.scaled_resnet_init``).
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


class ArTransformerInit(Protocol):
    """The initial weights of ``config`` from ``seed`` on ``device`` (``backends.ar_init.init_params``).

    Args:
        config: the architecture.
        seed: weights seed; the same seed gives the same weights in both backends.
        device: where the weights live (JAX: a jax.Device or a platform name such as ``cpu``).
        dtype: ``float32`` or ``float64``.

    Returns:
        Nested dict of arrays (see ``init_params``).
    """

    def __call__(self, config: Any, seed: int, device: Any = "cpu", dtype: str = "float32") -> Any: ...


class ArTransformerApply(Protocol):
    """Predictions of s_{t+1} at every position: the first d coordinates after ``config.depth`` layers.

    Args:
        params: weights from ``ar_transformer_init``.
        tokens: (B, T, 3 d) augmented tokens (``backends.ar_init.augment``).
        config: the architecture (linear or softmax causal attention, optional MLP).

    Returns:
        (B, T, d) predictions.

    References:
        Thesis eq. 6.4 iterated with layer norm, section 6.6 (Fig. 6.5); softmax and MLP: Fig. 6.10.
    """

    def __call__(self, params: Any, tokens: Array, config: Any) -> Array: ...


class ArTrainerObject(Protocol):
    """What ``ar_transformer_trainer`` returns: the framework's training loop behind one interface."""

    params: Any

    def compile(self, tokens: Array, targets: Array, batch: int) -> None: ...

    def fit_epoch(self, tokens: Array, targets: Array, order: Any, batch: int) -> float: ...

    def predict(self, tokens: Array, batch: int = 1024) -> Any: ...


class ArTransformerTrainer(Protocol):
    """A trainer (Adam, PyTorch defaults) of the Transformer ``config`` from ``params``.

    Args:
        config: the architecture.
        params: initial weights (``ar_transformer_init``); torch's trainer works on a copy (JAX arrays are immutable).
        lr: Adam's learning rate, constant.

    Returns:
        An object with ``compile``, ``fit_epoch``, ``predict`` and ``params``.

    References:
        Thesis section 6.6 (Adam, learning rate 5e-3, 2,000 epochs).
    """

    def __call__(self, config: Any, params: Any, lr: float) -> ArTrainerObject: ...


class ArGdPredict(Protocol):
    """Predictions of s_{t+1} by ``steps`` steps of gradient descent on the in-context loss (6.5).

    At position t the context is the pairs (s_j, s_{j+1}), j < t; starting from W = 0, each step
    is W <- W - step_size (W S_t - C_t) with S_t = sum_{j<t} s_j s_j^T, C_t = sum_{j<t} s_{j+1} s_j^T
    (the gradient of 1/2 sum_{j<t} ||s_{j+1} - W s_j||^2), and the prediction is W s_t.

    Args:
        states: (n, T + 1, d) states s_1 ... s_{T+1} (``backends.ar_init.ar_sequences``).
        steps: number of gradient steps L (>= 0).
        step_size: the fixed step size.

    Returns:
        (n, T, d) predictions of s_2 ... s_{T+1}, the dtype of ``states``.

    References:
        Thesis eq. 6.5, Proposition 6.4, section 6.6 (Fig. 6.5).
    """

    def __call__(self, states: Array, steps: int, step_size: float) -> Array: ...


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
    """The ``moe_vit``'s initial weights (``backends.moe_config.init_moe_params``) on ``device``.

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


class PrunedMlpInit(Protocol):
    """The initial weights W'_i, b_i of ``config`` from ``seed`` on ``device`` (``init_params``).

    Args:
        config: widths and pruning.
        seed: weights seed; the same seed gives the same weights in both backends.
        device: where the weights live (JAX: a jax.Device or a platform name such as ``cpu``).
        dtype: ``float32`` or ``float64``.

    Returns:
        {"w": [(in, out)], "b": [(out,)]} arrays.
    """

    def __call__(self, config: Any, seed: int, device: Any = "cpu", dtype: str = "float32") -> Any: ...


class PrunedMlpApply(Protocol):
    """Logits of the MLP with pruned weights.

    Args:
        params: {"w", "b"} from ``pruned_mlp_init``.
        x: (B, ...) inputs, flattened to (B, sizes[0]).
        config: widths and pruning.

    Returns:
        (B, sizes[-1]) logits.

    References:
        Thesis section 7.6, Fig. 7.5 (784-32-32-10 on MNIST; 64-32-32-10 on digits here).
    """

    def __call__(self, params: Any, x: Array, config: Any) -> Array: ...


class PrunedMlpWeights(Protocol):
    """The effective weights W_i = topkmag(W'_i) (W'_i itself for ``dense``), each (in, out).

    References:
        Thesis section 7.6 (weight pruning), 7.4 (relaxed top-k in magnitude).
    """

    def __call__(self, params: Any, config: Any) -> list[Array]: ...


class PrunedTrainerObject(Protocol):
    """What ``pruned_mlp_trainer`` returns: the framework's SGD loop behind one interface."""

    params: Any

    def compile(self, x: Array, y: Array, batch: int) -> None: ...

    def fit_epoch(self, x: Array, y: Array, order: Any, batch: int) -> tuple[float, float]: ...

    def predict(self, x: Array, batch: int = 1024) -> Any: ...

    def weights(self) -> list[Any]: ...


class PrunedMlpTrainer(Protocol):
    """A trainer (SGD, no momentum, constant ``lr``) of the pruned MLP from ``params``.

    Args:
        config: widths and pruning.
        params: initial weights (``pruned_mlp_init``); torch's trainer works on a copy (JAX arrays are immutable).
        lr: learning rate.

    Returns:
        An object with ``compile``, ``fit_epoch``, ``predict``, ``weights`` and ``params``.

    References:
        Thesis appendix 7.C.1 (SGD, batch 128, learning rate 1e-2, 30 MNIST epochs = 14,070 steps).
    """

    def __call__(self, config: Any, params: Any, lr: float) -> PrunedTrainerObject: ...


class ResidualClassifierInit(Protocol):
    """The initial weights of ``config`` from ``seed`` on ``device`` (``init_params``; same in both backends).

    Returns:
        {"stem.weight", "stem.bias", "stem_bn.weight", "stem_bn.bias", "head.weight", "head.bias",
        "body": name -> (sets, *shape)} arrays of ``config.dtype``.
    """

    def __call__(self, config: Any, seed: int, device: Any = "cpu") -> Any: ...


class ResidualClassifierApply(Protocol):
    """Logits of the classifier; its backward through the residual part is ``config.backward``'s.

    Args:
        params: from ``residual_classifier_init``.
        x: (B, in_channels, image_size, image_size) images.
        config: the network.

    Returns:
        (B, classes) logits.

    References:
        Thesis section 2.5.2 (5x5 conv to 16 channels, norm, ReLU, N pre-activation basic blocks).
    """

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
    """A trainer of the classifier from ``params``: SGD with ``momentum`` and ``weight_decay``.

    Returns:
        An object with ``compile``, ``fit_epoch(x, y, order, batch, lr)``, ``body_gradients``, ``predict``
        and ``params``.

    References:
        Thesis appendix 2.B.1 (SGD, momentum 0.9, weight decay 5e-4, cosine learning rate).
    """

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
