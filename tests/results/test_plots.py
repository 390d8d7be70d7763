"""results.plots draws each declaration the same way: medians and IQR, colours kept per label, units, ticks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from core.figures import Custom, Figure
from core.workload import Metric
from results import plots

TIME = Metric("time_s", "s", "lower", "median")
PEAK = Metric("peak_bytes", "B", "lower", "max")
RATE = Metric("bytes_per_s", "B/s", "higher", "median")
FLOPS = Metric("flop_per_s", "FLOP/s", "higher", "median")
LOSS = Metric("loss", "1", "lower", "last")


def table(entries: list[dict], metrics=(TIME, PEAK, RATE, FLOPS, LOSS)) -> pd.DataFrame:
    """Rows as the store holds them, from ``{backend, params, repeat, metric, value[, step, tag, status]}``."""
    units = {m.name: m.unit for m in metrics}
    rows = []
    for e in entries:
        params = e["params"]
        key = json.dumps(params, sort_keys=True)
        rows.append(
            {
                "workload": "w",
                "backend": e.get("backend", "torch"),
                "device_kind": "cpu",
                "device_name": e.get("device", "cpu0"),
                "params": key,
                "repeat": e.get("repeat", 0),
                "trial_key": f"{e.get('backend', 'torch')}-{key}-{e.get('repeat', 0)}",
                "status": e.get("status", "ok"),
                "metric": e["metric"],
                "value": float(e["value"]),
                "unit": units[e["metric"]],
                "step": e.get("step"),
                "sample": e.get("sample"),
                "tag": e.get("tag"),
                **{f"p_{k}": v for k, v in params.items()},
            }
        )
    return pd.DataFrame(rows)


def sweep(values: dict, metric: str = "time_s", repeats=(0,), **extra) -> list[dict]:
    """One entry per repeat and ``(backend, (param, value), ...)`` key of ``values`` (a value or repeat -> value)."""
    out = []
    for key, value in values.items():
        backend, params = key[0], dict(key[1:])
        for r in repeats:
            v = value(r) if callable(value) else value
            out.append({"backend": backend, "params": params, "repeat": r, "metric": metric, "value": v, **extra})
    return out


def lines(fig: go.Figure) -> list:
    """The traces that draw data (the legend's own entries draw nothing)."""
    return [t for t in fig.data if t.meta != "legend"]


def legend(fig: go.Figure) -> list[str]:
    """The names the legend lists."""
    return [t.name for t in fig.data if t.meta == "legend"]


def test_medians_and_interquartile_ranges_over_repeats_are_drawn():
    samples = {(n, r): float(n) * (1 + 0.1 * r * r) for n in (8, 16, 32) for r in range(5)}
    rows = table([{"params": {"n": n}, "repeat": r, "metric": "time_s", "value": v} for (n, r), v in samples.items()])
    fig = plots.draw(Figure("t", "time_s", x="p_n"), rows, [TIME])
    (trace,) = lines(fig)
    for i, n in enumerate((8, 16, 32)):
        values = [samples[(n, r)] for r in range(5)]
        median, q25, q75 = np.median(values), np.percentile(values, 25), np.percentile(values, 75)
        assert trace.x[i] == n
        assert trace.y[i] == pytest.approx(median, rel=1e-4)
        assert trace.error_y.array[i] == pytest.approx(q75 - median, rel=1e-3, abs=1e-9)
        assert trace.error_y.arrayminus[i] == pytest.approx(median - q25, rel=1e-3, abs=1e-9)


def test_a_label_keeps_its_colour_across_figures_and_backends_differ_by_dash_and_marker():
    styles = plots.Styles()
    first = table(
        sweep(
            {
                ("torch", ("model", "a"), ("n", 1)): 1.0,
                ("jax", ("model", "a"), ("n", 1)): 1.0,
                ("torch", ("model", "b"), ("n", 1)): 2.0,
            }
        )
    )
    second = table(sweep({("torch", ("model", "c"), ("n", 1)): 1.0, ("torch", ("model", "b"), ("n", 1)): 3.0}))
    f1 = plots.draw(Figure("one", "time_s", x="p_n", series=("p_model",)), first, [TIME], styles)
    f2 = plots.draw(Figure("two", "time_s", x="p_n", series=("p_model",)), second, [TIME], styles)
    color = {t.name: t.line.color for f in (f1, f2) for t in lines(f)}
    assert len({color["a (torch)"], color["b (torch)"], color["c (torch)"]}) == 3
    assert color["a (torch)"] == color["a (jax)"]
    assert [t.name for t in lines(f2) if t.line.color == color["b (torch)"]] == ["b (torch)"]  # same b, same colour
    torch_, jax_ = (next(t for t in lines(f1) if t.name == f"a ({b})") for b in ("torch", "jax"))
    assert torch_.line.dash != jax_.line.dash and torch_.marker.symbol != jax_.marker.symbol
    names = [t.name for t in lines(f1)]
    assert names.index("a (torch)") < names.index("a (jax)")  # JAX's open markers are drawn over torch's
    assert legend(f1) == ["a", "b", "torch", "jax"] and legend(f2) == ["b", "c"]  # each label and backend once


def test_bytes_take_binary_prefixes_and_rates_per_second():
    rows = table(sweep({("torch", ("depth", 10)): 3 * 2**20, ("torch", ("depth", 100)): 30 * 2**20}, "peak_bytes"))
    fig = plots.draw(Figure("m", "peak_bytes", x="p_depth"), rows, [PEAK])
    assert fig.layout.yaxis.title.text == "peak_bytes [MiB]"
    assert list(lines(fig)[0].y) == [3.0, 30.0]
    log = plots.draw(Figure("m", "peak_bytes", x="p_depth", log_y=True), rows, [PEAK])
    assert "2 MiB" in log.layout.yaxis.ticktext and "32 MiB" in log.layout.yaxis.ticktext
    named = plots.draw(Figure("m", "peak_bytes", x="p_depth", y_title="activation memory"), rows, [PEAK])
    assert named.layout.yaxis.title.text == "activation memory [MiB]"  # a scaled axis always says its unit
    rate = table(sweep({("torch", ("n", 64)): 5e9, ("torch", ("n", 128)): 9e9}, "bytes_per_s"))
    fig = plots.draw(Figure("r", "bytes_per_s", x="p_n"), rate, [RATE])
    assert fig.layout.yaxis.title.text == "bytes_per_s [GiB/s]"
    assert lines(fig)[0].y[0] == pytest.approx(5e9 / 2**30, rel=1e-4)


def test_labels_drawn_together_never_share_a_colour_even_past_the_palette():
    styles = plots.Styles()
    for i in range(len(plots.PALETTE) - 1):
        styles.color(f"earlier {i}")
    together = styles.colors(["earlier 0", "new a", "new b"])
    assert len(set(together.values())) == 3 and together["earlier 0"] == styles.color("earlier 0")


def test_units_use_si_prefixes_and_dimensionless_values_powers_of_ten_never_billions():
    rows = table(sweep({("torch", ("n", 64)): 5e9, ("torch", ("n", 128)): 9e10}, "flop_per_s"))
    fig = plots.draw(Figure("f", "flop_per_s", x="p_n", log_y=True), rows, [FLOPS])
    assert fig.layout.yaxis.exponentformat == "SI" and fig.layout.xaxis.exponentformat == "power"
    assert fig.layout.yaxis.title.text == "flop_per_s [FLOP/s]"
    loss = table(sweep({("torch", ("n", 64)): 1e-15, ("torch", ("n", 128)): 1e-9}, "loss"))
    fig = plots.draw(Figure("l", "loss", x="p_n", log_y=True), loss, [LOSS])
    assert fig.layout.yaxis.exponentformat == "power" and fig.layout.yaxis.title.text == "loss"


def test_a_log_axis_spanning_less_than_two_decades_ticks_at_1_2_5():
    rows = table(sweep({("torch", ("n", 1)): 3e-4, ("torch", ("n", 2)): 2e-3}))
    fig = plots.draw(Figure("t", "time_s", x="p_n", log_y=True), rows, [TIME])
    assert list(fig.layout.yaxis.tickvals) == pytest.approx([2e-4, 5e-4, 1e-3, 2e-3])
    wide = table(sweep({("torch", ("n", 1)): 1e-6, ("torch", ("n", 2)): 1.0}))
    wide_axis = plots.draw(Figure("t", "time_s", x="p_n", log_y=True), wide, [TIME]).layout.yaxis
    assert wide_axis.tickvals is None and wide_axis.dtick == 1  # every power of ten, no 2s and 5s


def test_integer_axes_tick_at_their_values_and_titles_name_the_thesis_figure():
    rows = table(sweep({("torch", ("depth", d)): d * 1.0 for d in (10, 100, 1000, 20000)}))
    fig = plots.draw(Figure("memory vs depth", "time_s", x="p_depth", thesis="Fig. 4.2", log_x=True), rows, [TIME])
    assert list(fig.layout.xaxis.tickvals) == [10, 100, 1000, 20000]
    assert list(fig.layout.xaxis.ticktext) == ["10", "100", "1000", "20k"]
    assert fig.layout.title.text == "Fig. 4.2: memory vs depth"
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.title.text == "depth"
    plain = plots.draw(Figure("beyond", "time_s", x="p_depth"), rows, [TIME])
    assert plain.layout.title.text == "beyond"


def test_facets_draw_one_panel_per_value_and_list_each_line_once():
    rows = table(
        sweep({(b, ("dtype", t), ("n", n)): 1.0 + n for b in ("torch", "jax") for t in ("f32", "bf16") for n in (1, 2)})
    )
    fig = plots.draw(Figure("f", "time_s", x="p_n", facet="p_dtype"), rows, [TIME])
    assert {t.xaxis for t in lines(fig)} == {"x", "x2"}
    assert [a.text for a in fig.layout.annotations][:2] == ["bf16", "f32"]
    assert len(lines(fig)) == 4 and legend(fig) == ["torch", "jax"]
    assert "span2" in plots.embed(fig)  # two panels take two columns of the report's grid


def test_where_keeps_the_matching_rows_only():
    rows = table(sweep({("torch", ("op", op), ("n", n)): n * (1 if op == "a" else 10) for op in "abc" for n in (1, 2)}))
    one = plots.draw(Figure("w", "time_s", x="p_n", where={"p_op": "b"}), rows, [TIME])
    assert len(lines(one)) == 1 and list(lines(one)[0].y) == [10.0, 20.0]
    two = plots.draw(Figure("w", "time_s", x="p_n", where={"p_op": ["a", "c"]}), rows, [TIME])
    assert sorted(t.name for t in lines(two)) == ["op=a (torch)", "op=c (torch)"]


def test_a_declaration_without_its_rows_yields_no_figure():
    rows = table(sweep({("torch", ("n", 1)): 1.0}))
    assert plots.draw(Figure("m", "peak_bytes", x="p_n"), rows, [TIME, PEAK]) is None
    assert plots.draw(Figure("m", "time_s", x="p_n", where={"p_n": 5}), rows, [TIME]) is None
    failed = rows.assign(status="failed")
    assert plots.draw(Figure("m", "time_s", x="p_n"), failed, [TIME]) is None
    assert plots.draw(Figure("m", "time_s", x="p_n"), rows.iloc[0:0], [TIME]) is None


def test_an_undeclared_metric_is_an_error_naming_the_declared_ones():
    rows = table(sweep({("torch", ("n", 1)): 1.0}))
    with pytest.raises(ValueError, match=r"metric.*nope.*declared: time_s"):
        plots.draw(Figure("m", "nope", x="p_n"), rows, [TIME])


def test_parameters_varying_within_a_line_join_its_label():
    rows = table(
        sweep(
            {
                ("torch", ("width", w), ("lr", lr), ("n", n)): w * lr * n
                for w in (8, 16)
                for lr in (0.1,)
                for n in (1, 2)
            }
        )
    )
    fig = plots.draw(Figure("v", "time_s", x="p_n"), rows, [TIME])
    assert sorted(t.name for t in lines(fig)) == ["width=16 (torch)", "width=8 (torch)"]
    assert all(len(t.x) == 2 for t in lines(fig))
    # a parameter that only follows x (one value per x) does not split the line
    follows = table(sweep({("torch", ("n", n), ("k", n * 10)): n for n in (1, 2, 3)}))
    assert [t.name for t in lines(plots.draw(Figure("v", "time_s", x="p_n"), follows, [TIME]))] == ["torch"]


def test_several_metrics_are_one_line_each_named_by_the_metric():
    rows = table(
        sweep({("torch", ("n", 1)): 1.0, ("torch", ("n", 2)): 2.0})
        + sweep({("torch", ("n", 1)): 5.0, ("torch", ("n", 2)): 4.0}, metric="loss")
    )
    fig = plots.draw(Figure("two", ("time_s", "loss"), x="p_n"), rows, [TIME, LOSS])
    assert sorted(t.name for t in lines(fig)) == ["loss (torch)", "time_s (torch)"]


def test_training_curves_are_summarised_per_step():
    entries = [
        {"params": {"lr": 0.1}, "repeat": r, "metric": "loss", "value": 10.0 / (s + 1) + r, "step": s}
        for r in range(3)
        for s in range(4)
    ]
    fig = plots.draw(Figure("curve", "loss", x="step", by_step=True, hline=1.0), table(entries), [LOSS])
    assert list(lines(fig)[0].x) == [0, 1, 2, 3]
    assert list(lines(fig)[0].y) == pytest.approx([10.0 / (s + 1) + 1 for s in range(4)], rel=1e-4)
    assert fig.layout.shapes[0].y0 == 1.0


def test_box_draws_five_metrics_as_a_distribution_per_x():
    names = ("q05", "q25", "q50", "q75", "q95")
    metrics = [Metric(n, "1", "lower", "median") for n in names]
    entries = [{"params": {"epoch": e}, "metric": n, "value": e + i} for e in (0, 1) for i, n in enumerate(names)]
    fig = plots.draw(Figure("b", names, x="p_epoch", kind="box"), table(entries, metrics), metrics)
    (box,) = lines(fig)
    assert isinstance(box, go.Box) and list(box.median) == [2.0, 3.0] and list(box.lowerfence) == [0.0, 1.0]
    assert list(box.upperfence) == [4.0, 5.0] and fig.layout.boxmode == "group"


def test_bar_draws_medians_with_error_bars_and_tells_backends_apart():
    rows = table(sweep({(b, ("mode", m)): 1.0 for b in ("torch", "jax") for m in ("noop", "sleep")}))
    fig = plots.draw(Figure("bars", "time_s", x="p_mode", kind="bar"), rows, [TIME])
    assert all(isinstance(t, go.Bar) and t.error_y.array is not None for t in lines(fig))
    assert len({t.marker.pattern.shape for t in lines(fig)}) == 2 and fig.layout.barmode == "group"


def test_a_custom_figure_gets_the_title_and_colours_of_the_report():
    styles = plots.Styles()
    red = styles.color("resnet")

    def draw(table):
        return go.Figure([go.Scatter(x=[1, 2], y=[3, 4], name="resnet")]) if len(table) else None

    rows = table(sweep({("torch", ("n", 1)): 1.0}))
    fig = plots.draw(Custom("by hand", draw, thesis="Fig. 2.4"), rows, [TIME], styles)
    assert fig.layout.title.text == "Fig. 2.4: by hand" and fig.data[0].line.color == red
    assert fig.layout.yaxis.exponentformat == "power"
    assert plots.draw(Custom("empty", draw), rows.iloc[0:0], [TIME], styles) is None


def test_a_small_figure_stays_small_in_the_page():
    rows = table(sweep({(b, ("n", n)): 1.0 / 3 * n for b in ("torch", "jax") for n in (1, 2, 3)}))
    html = plots.embed(plots.draw(Figure("s", "time_s", x="p_n"), rows, [TIME]))
    assert len(html) < 6000, len(html)  # no 7 kB default template per figure
    assert "0.33333333" not in html  # values carry 5 significant digits
