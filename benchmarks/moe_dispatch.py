"""Sparse vs dense expert dispatch of the sparse-MoE ViT: time per training step, hard and relaxed router.

Run: ``.venv/bin/python benchmarks/moe_dispatch.py [--device cpu] [--rounds 15] [--threads 2]``.
One training step (forward, backward, Adam) of ``moe_precision``'s model on a minibatch of scikit-learn's
digits, as the workload times it, at a shape where routing matters: 16 experts, patch 1 (n = 65 tokens
per image), capacity factor 1, so each expert takes k = 5 tokens (k/n = 0.077; the thesis: 32 experts,
k/n = 28/400 = 0.07), every block's MLP an MoE layer. Each (backend, router, dispatch) trains its own
copy from the same weights; after ``--warmup`` steps (compilation included there) the configurations
take turns, one step each per round, so a change in the machine's load hits them alike. Prints the
device and versions, every configuration's median and interquartile range, the widest row of the
relaxed masks (how many tokens its busiest expert takes), and ratios measured in the same run:
dense / sparse, and the relaxed router's overhead relaxed / hard, each the median of the per-round
ratios with its interquartile range.

Measured (shared 2-core AMD EPYC, load 7 to 12, 1 thread, torch 2.14.1, jax 0.10.2, 2 warm-up steps,
7 rounds; per-round ratios, median [IQR]): dense / sparse step time, hard router, torch 5.38x
[5.27-6.24], JAX 6.45x [5.90-7.69]; relaxed (Dykstra, 10 it., lam 0.1, widest row 16 of 65 tokens) /
hard with sparse dispatch, torch 1.57x [1.39-1.82], JAX 3.63x [2.72-3.87] (JAX runs 20 rows per
expert and group, the ladder size above 16, and recomputes them in the backward); with dense
dispatch both about 1.0x, the experts' dense cost hiding the router's.

References:
    Thesis section 7.6 "Sparse MoEs", appendix 7.C.3, Fig. 7.7 (relaxed training 15 h vs hard 10 h).
"""

from __future__ import annotations

import argparse
import platform
from functools import partial

import numpy as np

import backends
from backends.datasets import load_images
from backends.moe import MoEConfig
from backends.vit import ViTConfig

ROUTERS = {
    "hard": dict(router="hard"),
    "relaxed lam=0.1": dict(router="relaxed", solver="dykstra", lam=0.1, max_iter=10),
    "relaxed lam=0.01": dict(router="relaxed", solver="dykstra", lam=0.01, max_iter=10),
}
"""moe_precision's relaxed default (Dykstra, p = 2, 10 unrolled iterations, lam 0.1) and a sharper lam."""


def _quartiles(values) -> tuple[float, float, float]:
    q25, med, q75 = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
    return float(med), float(q25), float(q75)


def _widest(backend, ops, trainer, images, config: ViTConfig, moe: MoEConfig) -> int:
    """Largest number of non-zero combine weights of one expert in one image, over every MoE layer."""
    _, combine = ops.moe_vit_apply(trainer.params, images, config, moe)
    return max(int((backend.to_numpy(c) != 0).sum(1).max()) for c in combine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | tpu (where each backend has it)")
    parser.add_argument("--backends", default="torch,jax")
    parser.add_argument("--experts", type=int, default=16)
    parser.add_argument("--patch", type=int, default=1)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--mlp-dim", type=int, default=256)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    data = load_images("digits")
    config = ViTConfig(
        image_size=data.image_size,
        channels=data.channels,
        num_classes=data.num_classes,
        patch=args.patch,
        width=args.width,
        depth=args.depth,
        heads=4,
        mlp_dim=args.mlp_dim,
    )
    n = (data.image_size // args.patch) ** 2 + 1
    rng = np.random.default_rng(0)
    orders = [rng.choice(len(data.train_y), args.batch, replace=False) for _ in range(args.warmup + args.rounds)]

    runs = {}  # (backend, router, dispatch) -> (step closure, widest-row closure)
    for name in args.backends.split(","):
        backend = backends.get(name)
        backend.set_threads(args.threads)
        device = backend.device(args.device)
        ops = backend.ops
        train_x = backend.asarray(data.train_x, device, "float32")
        train_y = backend.asarray(data.train_y, device)
        probe = backend.asarray(data.test_x[: args.batch], device, "float32")
        print(f"{name}: {backend.env_info()} on {backend.device_name(args.device)}", flush=True)
        for router, kw in ROUTERS.items():
            for dispatch in ("sparse", "dense"):
                moe = MoEConfig(experts=args.experts, capacity_factor=1.0, every=args.every, dispatch=dispatch, **kw)
                trainer = ops.moe_vit_trainer(
                    config, moe, ops.moe_vit_init(config, moe, 0, device, "float32"), 1e-3, "adam"
                )

                def step(i, trainer=trainer, train_x=train_x, train_y=train_y):
                    trainer.fit_epoch(train_x, train_y, orders[i], args.batch)

                def widest(trainer=trainer, backend=backend, ops=ops, probe=probe, moe=moe):
                    return _widest(backend, ops, trainer, probe, config, moe)

                runs[(name, router, dispatch)] = (backend, step, widest)

    widest_before = {key: widest() for key, (_, _, widest) in runs.items()}
    for i in range(args.warmup):
        for _, step, _ in runs.values():
            step(i)
    samples: dict[tuple, list[float]] = {key: [] for key in runs}
    for r in range(args.rounds):
        for key, (backend, step, _) in runs.items():
            samples[key].append(backend.time_once(partial(step, args.warmup + r), args.device))
    widest_after = {key: widest() for key, (_, _, widest) in runs.items()}

    k = MoEConfig(experts=args.experts, capacity_factor=1.0).capacity(n)
    print(
        f"\n{platform.processor() or platform.machine()}, python {platform.python_version()}, device "
        f"{args.device}, {args.threads} threads; ViT width {args.width}, depth {args.depth}, MoE every "
        f"{args.every} block(s), {args.experts} experts of hidden width {args.mlp_dim}, n = {n} tokens, "
        f"k = {k} (k/n = {k / n:.3f}), batch {args.batch}, float32; {args.warmup} warm-up steps, "
        f"{args.rounds} rounds"
    )
    print("\n| backend | router | dispatch | step median ms | IQR ms | widest relaxed row (start -> end) |")
    print("|---|---|---|---:|---:|---|")
    for key, values in samples.items():
        med, q25, q75 = _quartiles(values)
        print(
            f"| {key[0]} | {key[1]} | {key[2]} | {med * 1e3:.1f} | {q25 * 1e3:.1f}-{q75 * 1e3:.1f} | "
            f"{widest_before[key]} -> {widest_after[key]} of {n} |"
        )

    def ratio(a: tuple, b: tuple) -> str:
        med, q25, q75 = _quartiles(np.asarray(samples[a]) / np.asarray(samples[b]))
        return f"{med:.2f}x [{q25:.2f}-{q75:.2f}]"

    print("\nper-round ratios, median [IQR]")
    print("| backend | router | dense / sparse | relaxed / hard, sparse | relaxed / hard, dense |")
    print("|---|---|---:|---:|---:|")
    for name in args.backends.split(","):
        for router in ROUTERS:
            over = (
                ("", "")
                if router == "hard"
                else (
                    ratio((name, router, "sparse"), (name, "hard", "sparse")),
                    ratio((name, router, "dense"), (name, "hard", "dense")),
                )
            )
            print(
                f"| {name} | {router} | {ratio((name, router, 'dense'), (name, router, 'sparse'))} | "
                f"{over[0]} | {over[1]} |"
            )


if __name__ == "__main__":
    main()
