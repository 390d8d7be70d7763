"""The report's run-wide tables: environments parsed once per distinct text; unfinished trials past a cap counted."""

from __future__ import annotations

import json
import re

import pandas as pd

from results import report_tables
from results.report_tables import UNFINISHED_ROWS, unfinished_html


def trials(n: int, **columns) -> pd.DataFrame:
    rows = pd.DataFrame({"trial_key": [f"k{i}" for i in range(n)]})
    base = dict(
        workload="w", sweep="s", backend="torch", device_kind="cpu", device_name="c", host="h", params='{"i": 1}'
    )
    return rows.assign(**(base | columns))


def test_environments_equal_parsing_every_trial_even_with_missing_and_differing_ones():
    envs = [json.dumps({"python": "3.11", "threads": 2}), None, json.dumps({"torch": "2.1"}), "", None]
    df = trials(40, env=[envs[i % len(envs)] for i in range(40)])
    df = pd.concat([df, df.iloc[:5]])  # a trial's second row is not a second trial
    got = report_tables._envs(df)
    once = df.drop_duplicates("trial_key")
    parsed = pd.DataFrame([json.loads(e) if isinstance(e, str) and e else {} for e in once["env"]], index=once.index)
    want = pd.concat([once[["backend", "device_kind", "device_name", "host", "workload"]], parsed], axis=1)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    alike = trials(3, env=json.dumps({"python": "3.11", "threads": 2}))
    assert report_tables._envs(alike)["threads"].tolist() == [2, 2, 2]


def test_a_few_unfinished_trials_are_each_listed_with_their_traceback():
    df = trials(3, status="failed", error="RuntimeError: boom\nTraceback line")
    page = unfinished_html(df)
    assert page.count("<tr>") == 4 and "Traceback line" in page and "counted" not in page


def test_past_the_cap_unfinished_trials_are_listed_up_to_it_then_all_counted_per_status_and_error():
    n = UNFINISHED_ROWS + 50
    errors = ["MemoryError: out\ntrace" if i % 5 == 0 else "RuntimeError: boom\ntrace" for i in range(n)]
    df = trials(n, status=["oom" if i % 5 == 0 else "failed" for i in range(n)], error=errors)
    page = unfinished_html(df)
    listed, counted = page.split("counted:")
    assert listed.count("<tr>") == UNFINISHED_ROWS + 1 and f"First {UNFINISHED_ROWS} of {n}" in listed
    counts = dict(re.findall(r"<td>(\d+)</td><td>(\w+Error): ", counted))
    assert counts == {str(n - n // 5): "RuntimeError", str(n // 5): "MemoryError"}
