"""Benchmark suites run end to end (in their quick form) and write rows, JSON and a plot."""

from __future__ import annotations

import json
import math

import pytest

from distil.bench import load_results, run_suite, summary_table
from distil.errors import DataError


@pytest.mark.slow
@pytest.mark.parametrize(
    "suite",
    [
        "overhead",
        "classic",
        "losses",
        "diswot",
        "features",
        "hacking",
        "fidelity",
        "privacy",
        "reproduce",
    ],
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
    if suite == "privacy":
        exposures = [r for r in result.rows if r["metric"] == "exposure"]
        # every canary is measured in the teacher and in every student
        assert {(r["method"], r["canary"]) for r in exposures} == {
            (m, c) for m in ("teacher", "kd", "swing") for c in range(8)
        }
        assert all(0.0 <= r["value"] <= math.log2(r["secrets"]) + 1e-9 for r in exposures)
        assert {r["task"] for r in exposures} == {"1× planted", "4× planted", "16× planted",
                                                  "64× planted"}  # fmt: skip
        perplexity = {r["method"] for r in result.rows if r["metric"] == "perplexity"}
        assert perplexity == {"kd", "swing"}
    if suite == "reproduce":
        chosen = {r["method"]: r["setting"] for r in result.rows if r["metric"] == "accuracy"}
        assert set(chosen) == {"supervised", "kd", "dkd", "fitnet"}
        # quick: one trial each, at the paper's setting (the first of every grid)
        assert chosen["dkd"] == {"train.lr": 0.05, "method.beta": 8.0}
        trials = [r for r in result.rows if r["metric"] == "trial_val_accuracy"]
        assert len(trials) == 4
        budget = [r for r in result.rows if r["metric"] == "budget"]
        assert budget[0]["epochs"] == 1 and budget[0]["recipe"] == "reproduce-mnist1d"
    if suite == "fidelity":
        by = {(r["method"], r["metric"]): r["value"] for r in result.rows}
        methods = {r["method"] for r in result.rows}
        assert methods == {"kd ← teacher on 50 labels", "kd ← teacher on all labels",
                           "student alone"}  # fmt: skip
        for method in methods:  # every run reports both sides: generalisation and fidelity
            assert {m for (k, m) in by if k == method} == {"teacher_accuracy", "teacher_ece",
                    "accuracy", "agreement", "teacher_kl", "ece"}  # fmt: skip
        # the strengths are real: a teacher that saw every label beats one that saw 50
        weak, strong = by["kd ← teacher on 50 labels", "teacher_accuracy"], by[
            "kd ← teacher on all labels", "teacher_accuracy"]  # fmt: skip
        assert strong > weak + 0.2
        # the student alone is measured against the strongest teacher
        assert by["student alone", "teacher_accuracy"] == strong


def test_missing_results_are_named(tmp_path):
    with pytest.raises(DataError, match="classic.json"):
        load_results("classic", tmp_path)
