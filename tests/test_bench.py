"""Benchmark suites run end to end (in their quick form) and write rows, JSON and a plot."""

from __future__ import annotations

import json

import pytest

from distil.bench import load_results, run_suite, summary_table
from distil.errors import DataError


@pytest.mark.slow
@pytest.mark.parametrize(
    "suite", ["overhead", "classic", "losses", "diswot", "features", "hacking"]
)
def test_quick_suite_writes_rows_and_plot(suite, tmp_path):
    result = run_suite(suite, tmp_path, quick=True)
    payload = json.loads((tmp_path / f"{suite}.json").read_text())
    assert payload["rows"] == result.rows
    for row in result.rows:
        assert {"suite", "task", "method", "metric", "value", "seed"} <= set(row)
        assert row["suite"] == suite
    assert (tmp_path / f"{suite}.png").stat().st_size > 5_000
    assert load_results(suite, tmp_path) == result.rows
    assert result.table == summary_table(result.rows)
    if suite == "overhead":
        ratios = {r["method"]: r["value"] for r in result.rows if r["metric"] == "step_time_ratio"}
        assert ratios["supervised"] == 1.0
        assert set(ratios) == {"supervised", "kd (live teacher)", "kd (precomputed teacher)"}
    if suite == "hacking":
        curves = [r for r in result.rows if r["metric"] == "curve_oracle_kl"]
        assert len({r["step"] for r in curves}) >= 3  # one point per evaluation
        assert "curve_oracle_kl" not in result.table  # curves are plotted, not tabulated


def test_missing_results_are_named(tmp_path):
    with pytest.raises(DataError, match="classic.json"):
        load_results("classic", tmp_path)
