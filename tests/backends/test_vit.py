"""The small ViT and the attention-only ViT: same weights and outputs in both backends, a replaceable MLP,
and trainers whose optimisers take the same steps."""

from __future__ import annotations

import numpy as np
import pytest

import backends
from backends.vit import ViTConfig, init_params
from tests.helpers import assert_close

BACKENDS = ["torch", "jax"]
CONFIGS = {
    "vit-softmax": ViTConfig(width=16, depth=2, heads=2, mlp_dim=24, patch=2),
    "vit-sinkhorn": ViTConfig(
        width=16, depth=2, heads=4, mlp_dim=24, patch=4, normalization="sinkhorn", sinkhorn_iters=5
    ),
    "attention-only": ViTConfig.attention_only(width=12, patch=4, normalization="sinkhorn", sinkhorn_iters=7),
    "attention-only-narrow-head": ViTConfig.attention_only(width=16, dim_head=8, patch=2),
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one thread is as fast, and two on a shared two-core machine wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def arr(name: str, a: np.ndarray, dtype: str | None = None):
    b = backends.get(name)
    return b.asarray(np.asarray(a), b.device("cpu"), dtype)


def num(name: str, x) -> np.ndarray:
    return backends.get(name).to_numpy(x)


def leaves(tree) -> list:
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in leaves(tree[k])]
    if isinstance(tree, list):
        return [x for v in tree for x in leaves(v)]
    return [tree]


def images(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 1, 8, 8))


def test_same_seed_gives_the_same_weights_in_both_backends():
    cfg = CONFIGS["vit-softmax"]
    ref = leaves(init_params(cfg, 7))
    for name in BACKENDS:
        got = leaves(backends.get(name).ops.vit_init(cfg, 7, backends.get(name).device("cpu")))
        assert len(got) == len(ref)
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(num(name, a), b)
    assert not np.array_equal(leaves(init_params(cfg, 8))[0], ref[0])


@pytest.mark.parametrize("which", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_and_attention_maps_agree_between_backends(which, dtype):
    cfg, x = CONFIGS[which], images()
    out = {}
    for name in BACKENDS:
        ops = backends.get(name).ops
        params = ops.vit_init(cfg, 1, backends.get(name).device("cpu"), dtype)
        logits, maps = ops.vit_apply(params, arr(name, x, dtype), cfg)
        out[name] = [num(name, logits)] + [num(name, m) for m in maps]
    assert out["torch"][0].shape == (3, 10)
    assert [m.shape for m in out["torch"][1:]] == [(3, cfg.heads, cfg.tokens, cfg.tokens)] * cfg.depth
    for a, b in zip(out["torch"], out["jax"]):
        assert_close(a, b, dtype, **({"atol": 1e-4, "rtol": 1e-4} if dtype == "float32" else {}))
    for m in out["torch"][1:]:  # Sinkhorn with an odd count ends on rows: rows always sum to 1
        assert_close(m.sum(-1), 1.0, dtype, atol=1e-5)


def test_patches_are_row_major_with_pixels_inside():
    """Oracle: patch (i, j) holds pixels [i p:(i+1) p, j p:(j+1) p], flattened row by row."""
    from backends.jax.vit import _patchify as jax_patchify
    from backends.torch.vit import _patchify as torch_patchify

    x = np.arange(2 * 3 * 4 * 4, dtype=np.float64).reshape(2, 3, 4, 4)
    want = np.stack(
        [
            np.stack(
                [
                    x[b, :, i * 2 : (i + 1) * 2, j * 2 : (j + 1) * 2].transpose(1, 2, 0).ravel()
                    for i in range(2)
                    for j in range(2)
                ]
            )
            for b in range(2)
        ]
    )
    np.testing.assert_array_equal(num("torch", torch_patchify(arr("torch", x), 2)), want)
    np.testing.assert_array_equal(num("jax", jax_patchify(arr("jax", x), 2)), want)


@pytest.mark.parametrize("name", BACKENDS)
def test_the_mlp_block_is_replaceable(name):
    """A custom MLP function returning 0 gives the model whose MLP output layer is zero (MoE hook)."""
    cfg, x = CONFIGS["vit-softmax"], arr(name, images(), "float64")
    ops = backends.get(name).ops
    params = ops.vit_init(cfg, 2, backends.get(name).device("cpu"), "float64")
    zeroed = ops.vit_init(cfg, 2, backends.get(name).device("cpu"), "float64")
    for block in zeroed["blocks"]:
        block["mlp"]["w2"] = block["mlp"]["w2"] * 0
        block["mlp"]["b2"] = block["mlp"]["b2"] * 0
    custom, _ = ops.vit_apply(params, x, cfg, mlp=lambda p, h: h * 0)
    assert_close(num(name, custom), num(name, ops.vit_apply(zeroed, x, cfg)[0]))
    assert not np.allclose(num(name, custom), num(name, ops.vit_apply(params, x, cfg)[0]))


def test_attention_only_model_is_one_layer_one_head_without_mlp():
    cfg = CONFIGS["attention-only"]
    params = init_params(cfg, 0)
    assert (cfg.depth, cfg.heads, cfg.mlp_dim) == (1, 1, None)
    assert len(params["blocks"]) == 1 and "mlp" not in params["blocks"][0]


def test_dim_head_is_each_heads_width_whatever_the_token_width():
    """The Sinkformers ViT: width 128, one 64-wide head (queries, keys, values), projected back to 128."""
    cfg = ViTConfig.attention_only(width=128, dim_head=64, patch=2)
    attn = init_params(cfg, 0)["blocks"][0]["attn"]
    assert (cfg.head_dim, attn["wqkv"].shape, attn["wo"].shape) == (64, (128, 192), (64, 128))
    assert ViTConfig(width=128, heads=3, dim_head=64).head_dim == 64  # heads need not divide the width then
    assert ViTConfig(width=16, heads=4).head_dim == 4


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(patch=3), "patch=3: must divide image_size=8; allowed: 1, 2, 4, 8"),
        (dict(width=10, heads=4), "heads=4: must divide width=10"),
        (dict(normalization="entmax"), "normalization='entmax'"),
        (dict(depth=0), "depth=0"),
        (dict(dim_head=0), "dim_head=0"),
    ],
)
def test_bad_config_names_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        ViTConfig(**bad)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_trainers_take_the_same_steps_in_both_backends(optimizer):
    """JAX's hand-written Adam/SGD against torch.optim, from the same weights and minibatches."""
    cfg = ViTConfig(width=8, depth=1, heads=2, mlp_dim=8, patch=4, normalization="sinkhorn", sinkhorn_iters=3)
    rng = np.random.default_rng(3)
    x, y, order = rng.normal(size=(24, 1, 8, 8)), rng.integers(0, 10, 24), rng.permutation(24)
    result = {}
    for name in BACKENDS:
        ops, dev = backends.get(name).ops, backends.get(name).device("cpu")
        trainer = ops.vit_trainer(cfg, ops.vit_init(cfg, 0, dev, "float64"), 1e-2, optimizer)
        xs, ys = arr(name, x, "float64"), arr(name, y)
        trainer.compile(xs, ys, 8)
        losses = [trainer.fit_epoch(xs, ys, order, 8) for _ in range(2)]
        result[name] = (losses, [num(name, p) for p in leaves(trainer.params)], trainer.predict(xs, batch=16))
    assert_close(result["torch"][0], result["jax"][0], atol=1e-9)
    for a, b in zip(result["torch"][1], result["jax"][1]):
        assert_close(a, b, atol=1e-9)
    np.testing.assert_array_equal(result["torch"][2], result["jax"][2])
    assert result["torch"][0][1][0] < result["torch"][0][0][0]  # the loss went down


@pytest.mark.parametrize("name", BACKENDS)
def test_trainer_rejects_bad_arguments(name):
    ops, cfg = backends.get(name).ops, CONFIGS["vit-softmax"]
    params = ops.vit_init(cfg, 0, backends.get(name).device("cpu"))
    with pytest.raises(ValueError, match="optimizer='lbfgs'"):
        ops.vit_trainer(cfg, params, 1e-3, "lbfgs")
    with pytest.raises(ValueError, match="lr=0"):
        ops.vit_trainer(cfg, params, 0)
    trainer = ops.vit_trainer(cfg, params, 1e-3)
    with pytest.raises(ValueError, match="batch=64: larger than the 3 training images"):
        trainer.fit_epoch(arr(name, images(), "float32"), arr(name, np.zeros(3, np.int64)), np.arange(3), 64)
