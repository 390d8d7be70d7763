"""attention_stochasticity's checks: Fig. 5.2 (and beyond it, the ViT), eq. 5.3, Fig. 5.6, section 5.6.4.

References: thesis chapter 5, Fig. 5.2, eq. 5.3, Fig. 5.5, Fig. 5.6, section 5.6.4.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd

from backends.datasets import DATASETS
from core.checks import Check, at_least, decide, distinct, not_measured, paired_interval, seeds

_SINKHORN_ONLY = ("sinkhorn_iters", "sinkhorn_grad")
_THESIS_STEPS_PER_EPOCH = 2000
"""Fig. 5.2: 2,000 minibatches of 10 MNIST images an epoch (``mnist.py`` of https://github.com/michaelsdr/sinkformers)."""


def attention_checks(table: pd.DataFrame) -> list[Check]:
    """The thesis' claims on the measured rows: Fig. 5.2 (and beyond it, the ViT), eq. 5.3, Fig. 5.6, sec. 5.6.4."""
    ok = table[table["status"] == "ok"] if "status" in table else table
    return (
        _concentrate_checks(ok, "attention_only")
        + _skipped_fig52(table)
        + _concentrate_checks(ok, "vit")
        + _converged_checks(ok)
        + _patch_checks(ok)
        + _overhead_checks(ok)
    )


def _skipped_fig52(table: pd.DataFrame) -> list[Check]:
    """A Fig. 5.2 data set whose every trial was skipped (MNIST not on disk) reads not measured, with the reason."""
    if "status" not in table:
        return []
    fig = table[(table["p_model"] == "attention_only") & (table["p_normalization"] == "softmax")]
    measured = set(fig[fig["status"] == "ok"]["p_dataset"])
    skipped = fig[(fig["status"] == "skipped") & ~fig["p_dataset"].isin(measured)]
    return [
        not_measured(
            f"Fig. 5.2 column sums, attention-only model, {dataset}",
            _CONCENTRATE_CLAIM,
            f"skipped: {g['error'].dropna().iloc[0]}" if g["error"].notna().any() else "skipped",
            figure="Fig. 5.2",
        )
        for (dataset,), g in _groups(skipped, ["p_dataset"])
    ]


def _key(params_json: str, drop: tuple[str, ...]) -> str:
    """The parameters without ``drop``: what two trials compared side by side share."""
    return json.dumps({k: v for k, v in json.loads(params_json).items() if k not in drop}, sort_keys=True)


def _varying(rows: pd.DataFrame, group: pd.DataFrame, skip: tuple[str, ...]) -> str:
    """`` name=value`` of ``group`` for each parameter that varies across ``rows``'s configurations."""
    cols = [c for c in rows.columns if c.startswith("p_") and c not in skip and rows[c].astype(str).nunique() > 1]
    return "".join(f" {c[2:]}={group.iloc[0][c]}" for c in cols)


def _groups(rows: pd.DataFrame, by: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    return list(rows.groupby(by, dropna=False, sort=True)) if not rows.empty else []


_CONCENTRATE_CLAIM = (
    'Fig. 5.2: "the learning process makes the attention matrices more and more doubly '
    'stochastic" ("the majority of columns naturally sum closely to 1"): the share of softmax '
    "columns summing to 1 +/- 0.1 is larger at the last epoch than at epoch 1 (paired over seeds)"
)


def _concentrate_checks(table: pd.DataFrame, model: str) -> list[Check]:
    rows = table[
        (table["metric"] == "colsum_frac_within_0.1")
        & (table["tag"] == "all")
        & (table["p_normalization"] == "softmax")
        & (table["p_model"] == model)
    ]
    thesis = model == "attention_only"
    title = "Fig. 5.2 column sums, attention-only model" if thesis else "column sums, ViT with MLPs (beyond the thesis)"
    if rows.empty:
        return [
            not_measured(title, _CONCENTRATE_CLAIM, f"no softmax {model} trial", figure="Fig. 5.2" if thesis else "")
        ]
    steps = table[table["metric"] == "train_steps"]
    out = []
    for (backend, device, params), g in _groups(rows, ["backend", "device_name", "params"]):
        last_steps = steps[(steps["backend"] == backend) & (steps["params"] == params)]["value"].max()
        out.append(
            decide(
                f"{title}, {g.iloc[0]['p_dataset']} ({backend}, {device}){_varying(rows, g, ('p_dataset',))}",
                _CONCENTRATE_CLAIM,
                g,
                _later_than_first,
                figure="Fig. 5.2" if thesis else "",
                needs=(seeds(3), at_least("p_epochs", 4, "epochs")),
                note=_concentrate_note(g.iloc[0], last_steps, thesis),
            )
        )
    return out


def _later_than_first(rows: pd.DataFrame) -> tuple[bool | str | None, str]:
    """Paired (per seed) difference of the share at the last epoch and at epoch 1."""
    per_seed = rows.pivot_table(index="seed", columns="step", values="value")
    if 1 not in per_seed or per_seed.columns.max() <= 1:
        return None, "needs epoch 1 and a later epoch"
    last = int(per_seed.columns.max())
    pair = per_seed[[1, last]].dropna()
    interval = paired_interval(pair[last], pair[1])
    shown = [e for e in (0, 1, 4, 8, 12, 16, 20, last) if e in per_seed]
    means = ", ".join(f"epoch {e} {per_seed[e].mean():.2f}" for e in dict.fromkeys(shown))
    return interval.side("above"), f"epoch {last} - epoch 1: {interval.text('+.3f')}; mean share: {means}"


def _concentrate_note(first: pd.Series, last_steps: float, thesis: bool) -> str:
    per_epoch = first["p_train_size"] if pd.notna(first.get("p_train_size")) else None
    batch = int(first["p_batch"])
    epochs = int(first["p_epochs"])
    steps_epoch = int(last_steps) // epochs if pd.notna(last_steps) and epochs else None
    text = (
        f"{first['p_dataset']}: {steps_epoch:,} steps of batch {batch} an epoch, {int(last_steps):,} in all"
        if steps_epoch
        else f"{first['p_dataset']}: batch {batch}"
    )
    text += (
        f" = {last_steps / _THESIS_STEPS_PER_EPOCH:.1f} thesis epochs (MNIST, 2,000 steps of batch 10 an epoch, "
        "epochs 1-20 shown)"
        if pd.notna(last_steps)
        else ""
    )
    if per_epoch:
        text += f"; {int(per_epoch):,} training images an epoch"
    text += "; column sums of the first test images (thesis: the first training batch of 10)"
    if not thesis:
        text += "; the thesis' Fig. 5.2 ViT is the attention-only model: this ViT with MLPs is beyond the thesis"
    elif first["p_dataset"] != "mnist" or int(first["p_batch"]) != 10:
        text += "; thesis: MNIST, patch 7, batch 10, Adam lr 2e-3"
        if int(first["p_batch"]) != 10 or float(first["p_lr"]) != 2e-3 or first["p_optimizer"] != "adam":
            text += (
                f"; this run's recipe ({first['p_optimizer']}, lr {float(first['p_lr']):g}, batch {batch}) "
                "is not the thesis' Fig. 5.2 recipe"
            )
    return text


def _converged_checks(table: pd.DataFrame) -> list[Check]:
    claim = (
        "Sinkhorn's algorithm (eq. 5.3) makes attention doubly stochastic: with 21 or more iterations every "
        "column sum is within 1e-3 of 1, at every epoch"
    )
    rows = table[
        (table["metric"] == "colsum_max_abs_dev") & (table["tag"] == "all") & (table["p_normalization"] == "sinkhorn")
    ]
    rows = rows[rows["p_sinkhorn_iters"].fillna(0) >= 21]
    needs = (at_least("p_epochs", 5, "epochs"),)  # attention sharpens as it trains: later epochs are the test
    if rows.empty:
        return [
            not_measured(
                "Sinkhorn >= 21 iterations", claim, "no Sinkhorn trial with 21 or more iterations", figure="eq. 5.3"
            )
        ]

    def test(g: pd.DataFrame) -> tuple[bool, str]:
        worst = g.loc[g["value"].idxmax()]
        return bool(g["value"].max() <= 1e-3), (
            f"largest |column sum - 1| {g['value'].max():.2e} over {g['trial_key'].nunique()} trials "
            f"(at {int(worst['p_sinkhorn_iters'])} iterations, epoch {int(worst['step'])})"
        )

    return [
        decide(
            f"Sinkhorn >= 21 iterations, {backend} {dtype} ({device})", claim, g, test, needs=needs, figure="eq. 5.3"
        )
        for (backend, device, dtype), g in _groups(rows, ["backend", "device_name", "p_dtype"])
    ]


def _final(rows: pd.DataFrame, reduce: Callable[[pd.Series], float]) -> pd.DataFrame:
    """One value per trial: ``reduce`` of its values ordered by step."""
    keys = [
        "trial_key",
        "backend",
        "device_name",
        "params",
        "seed",
        "p_normalization",
        "p_sinkhorn_iters",
        "p_patch",
        "p_dataset",
        "p_model",
        "p_epochs",
        "p_lr",
    ]
    ordered = rows.sort_values("step")
    return ordered.groupby(keys, dropna=False)["value"].agg(reduce).reset_index()


def _sinkhorn_vs_softmax(final: pd.DataFrame, drop: tuple[str, ...]) -> pd.DataFrame:
    """Sinkhorn trials beside the softmax trial with the same seed and parameters other than ``drop``."""
    if final.empty:
        return final
    final = final.assign(key=final["params"].map(lambda p: _key(p, ("normalization", *_SINKHORN_ONLY, *drop))))
    soft = final[final["p_normalization"] == "softmax"][["backend", "device_name", "key", "seed", "value", "p_lr"]]
    sink = final[final["p_normalization"] == "sinkhorn"]
    return sink.merge(soft, on=["backend", "device_name", "key", "seed"], suffixes=("", "_softmax"))


def _patch_checks(table: pd.DataFrame) -> list[Check]:
    claim = (
        'Fig. 5.6: "when the patch size gets smaller [than the image], the two models are different and the '
        'Sinkformer outperforms the Transformer": final test accuracy, Sinkhorn minus softmax, paired over '
        "seeds and patch sizes, is above 0"
    )
    rows = table[(table["metric"] == "test_accuracy") & (table["p_model"] == "attention_only")]
    pairs = _sinkhorn_vs_softmax(_final(rows, lambda v: v.iloc[-1]), drop=("lr",))
    if not pairs.empty:
        pairs = pairs[pairs["p_patch"] < pairs["p_dataset"].map(lambda d: DATASETS[d][0])]
    if pairs.empty:
        why = "no attention-only softmax/Sinkhorn pair below the image side"
        return [not_measured("Fig. 5.6 patch sizes", claim, why, figure="Fig. 5.6")]

    def test(g: pd.DataFrame) -> tuple[bool | str, str]:
        interval = paired_interval(g["value"], g["value_softmax"])
        per_patch = g.groupby("p_patch")[["value", "value_softmax"]].median()
        text = "; ".join(f"patch {int(p)}: {r.value:.3f} vs {r.value_softmax:.3f}" for p, r in per_patch.iterrows())
        return interval.side("above"), f"Sinkhorn - softmax: {interval.text('+.3f')}; median per patch {text}"

    note = (
        "thesis: MNIST, batch 100, 45 epochs (27,000 steps), lr 1e-3 softmax / 2e-3 Sinkhorn divided by 10 at "
        "epochs 35 and 41, 5 iterations, 5 seeds; here a constant lr"
    )
    out = []
    for (backend, device, iters, dataset), g in _groups(
        pairs, ["backend", "device_name", "p_sinkhorn_iters", "p_dataset"]
    ):
        out.append(
            decide(
                f"Fig. 5.6 patch sizes, Sinkhorn {int(iters)}, {dataset} ({backend}, {device})",
                claim,
                g,
                test,
                figure="Fig. 5.6",
                note=note,
                needs=(
                    seeds(3),
                    distinct("p_patch", 2, "patch sizes below the image side"),
                    at_least("p_epochs", 10, "epochs"),
                ),
            )
        )
    return out


def _overhead_checks(table: pd.DataFrame) -> list[Check]:
    claim = (
        'Section 5.6.4: 3 Sinkhorn iterations lead "to a negligible computational overhead" (3m25s vs 3m20s '
        "an epoch on a V100): the epoch time ratio Sinkhorn-3 / softmax, minus 1, is below 0.1 (paired over seeds)"
    )
    rows = table[table["metric"] == "epoch_time_s"]
    pairs = _sinkhorn_vs_softmax(_final(rows, lambda v: float(v.median())), drop=())
    pairs = pairs[pairs["p_sinkhorn_iters"] == 3] if not pairs.empty else pairs
    if pairs.empty:
        why = "no softmax/Sinkhorn-3 pair with equal other parameters"
        return [not_measured("Sinkhorn 3 overhead", claim, why, figure="sec. 5.6.4")]

    def test(g: pd.DataFrame) -> tuple[bool | str, str]:
        interval = paired_interval(g["value"] / g["value_softmax"], np.ones(len(g)))
        return interval.side("below", 0.1), f"epoch time ratio - 1: {interval.text('+.3f')}"

    note = "thesis: a depth-6, 8-head ViT on cats and dogs on a V100; small models on a CPU pay more per iteration"
    return [
        decide(
            f"Sinkhorn 3 overhead, {model} ({backend}, {device})",
            claim,
            g,
            test,
            figure="sec. 5.6.4",
            note=note,
            needs=(seeds(3), at_least("p_epochs", 2, "epochs")),
        )
        for (backend, device, model), g in _groups(pairs, ["backend", "device_name", "p_model"])
    ]
