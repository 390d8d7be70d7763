"""attention_stochasticity's figures (Fig. 5.2, 5.5, 5.6) and the thesis settings they are compared with.

References: thesis chapter 5, Fig. 5.2, Fig. 5.5, Fig. 5.6.
"""

from __future__ import annotations

from core.figures import LOG_XY, Figure, Setting, per_epoch

_EPOCH_0 = "epoch (0 = initialisation)"
_SUMS = ("colsum_q05", "colsum_q25", "colsum_q50", "colsum_q75", "colsum_q95")
_SOFTMAX_POOLED = {"p_normalization": "softmax", "tag": "all"}
_COLUMN_SUMS = dict(
    metric=_SUMS, kind="box", facet="p_dataset", log_y=True, hline=1.0, x_title=_EPOCH_0, y_title="column sum"
)
"""The box plots of Fig. 5.2: the column sums' quantiles per epoch, a panel per data set."""

figures = (
    per_epoch(
        "Softmax attention's column sums per epoch, attention-only model (box 25-75 %, whiskers 5-95 %)",
        thesis="Fig. 5.2",
        where={**_SOFTMAX_POOLED, "p_model": "attention_only"},
        **_COLUMN_SUMS,
    ),
    per_epoch(
        "Share of softmax attention's columns summing to 1 +/- 0.1 per epoch (the Fig. 5.2 check)",
        metric="colsum_frac_within_0.1",
        thesis="Fig. 5.2",
        series=("p_model",),
        facet="p_dataset",
        where=_SOFTMAX_POOLED,
        x_title=_EPOCH_0,
        y_title="share of columns within 0.1 of 1",
    ),
    per_epoch(
        "Softmax attention's column sums per epoch, ViT with MLPs, all layers and heads (beyond the thesis)",
        where={**_SOFTMAX_POOLED, "p_model": "vit"},
        **_COLUMN_SUMS,
    ),
    per_epoch(
        "Train and test accuracy per epoch, Transformer vs Sinkformer (thesis: cats and dogs; here digits)",
        metric=("train_accuracy", "test_accuracy"),
        thesis="Fig. 5.5",
        series=("p_normalization", "p_sinkhorn_iters"),
        facet="p_model",
        x_title="epoch",
        y_title="accuracy",
    ),
    Figure(
        "Final test accuracy vs patch size, attention-only model",
        metric="test_accuracy",
        x="p_patch",
        thesis="Fig. 5.6",
        series=("p_normalization", "p_sinkhorn_iters"),
        facet="p_dataset",
        where={"p_model": "attention_only"},
        log_x=True,
        x_title="patch side (pixels)",
        y_title="test accuracy",
    ),
    Figure(
        "Epoch time vs Sinkhorn iterations (1 iteration is the softmax)",
        metric="epoch_time_s",
        x="p_sinkhorn_iters",
        series=("p_model",),
        where={"p_normalization": "sinkhorn"},
        **LOG_XY,
        x_title="Sinkhorn iterations",
    ),
)

_OURS = {
    "model": "p_model",
    "data": "p_dataset",
    "patch": "p_patch",
    "width": "p_width",
    "head width": "p_head_dim",
    "depth": "p_depth",
    "heads": "p_heads",
    "attention": "p_normalization",
    "Sinkhorn iterations": "p_sinkhorn_iters",
    "optimiser": "p_optimizer",
    "lr": "p_lr",
    "batch": "p_batch",
    "training images": "p_train_size",
    "epochs": "p_epochs",
    "seeds": "seed",
    "device": "device_name",
}
settings = (
    Setting(
        "Fig. 5.2",
        thesis={
            "model": "attention-only ViT (sinkformers ViT_only_Att)",
            "data": "MNIST (60,000 train)",
            "patch": "7 (16 patches + class token)",
            "width": "128",
            "head width": "64",
            "depth": "1",
            "heads": "1",
            "attention": "softmax",
            "optimiser": "Adam",
            "lr": "2e-3 (/10 at epoch 25)",
            "batch": "10",
            "training images": "20,000 an epoch (2,000 steps)",
            "epochs": "30 (1-20 shown)",
            "seeds": "1",
            "device": "GPU",
        },
        ours=_OURS,
        where={"p_model": "attention_only", "p_normalization": "softmax"},
    ),
    Setting(
        "Fig. 5.5",
        thesis={
            "model": "ViT",
            "data": "cats and dogs",
            "patch": "16",
            "depth": "6",
            "heads": "8",
            "attention": "softmax vs Sinkhorn",
            "Sinkhorn iterations": "3",
            "optimiser": "Adam",
            "lr": "5e-5 (/10 at epoch 250)",
            "batch": "64",
            "epochs": "300",
            "seeds": "5",
            "device": "V100 GPU",
        },
        ours=_OURS,
        where={"p_model": "vit"},
    ),
    Setting(
        "Fig. 5.6",
        thesis={
            "model": "attention-only ViT (sinkformers ViT_only_Att)",
            "data": "MNIST",
            "patch": "1, 2, 4, 7, 14, 28",
            "width": "128",
            "head width": "64",
            "depth": "1",
            "heads": "1",
            "attention": "softmax vs Sinkhorn",
            "Sinkhorn iterations": "5",
            "optimiser": "Adam",
            "lr": "1e-3 softmax, 2e-3 Sinkhorn (/10 at epochs 35 and 41)",
            "batch": "100",
            "epochs": "45",
            "seeds": "5",
            "device": "GPU",
        },
        ours=_OURS,
        where={"p_model": "attention_only"},
    ),
)
