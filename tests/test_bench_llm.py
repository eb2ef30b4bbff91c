"""The ``llm`` benchmark suite in its quick form: every required metric, finite, and sizes
that order as the codecs promise."""

from __future__ import annotations

import json
import math

import pytest

from distil.bench import run_suite

REQUIRED = ("step_time_ratio", "peak_memory_ratio", "bytes_per_token", "ppl_gap",
            "cache_throughput_ratio")  # fmt: skip


@pytest.mark.slow
def test_quick_llm_suite(tmp_path):
    result = run_suite("llm", tmp_path, quick=True)
    rows = json.loads((tmp_path / "llm.json").read_text())["rows"]
    assert rows == result.rows
    assert (tmp_path / "llm.png").stat().st_size > 5_000
    for metric in REQUIRED:
        values = [row["value"] for row in rows if row["metric"] == metric]
        assert values, f"no {metric} rows"
        assert all(math.isfinite(value) for value in values), metric
    assert all(row["suite"] == "llm" and row["value"] is not None for row in rows)
    size = {(r["codec"], r["k"]): r["value"] for r in rows if r["metric"] == "bytes_per_token"}
    for k in {k for _, k in size}:
        assert size["compact", k] < size["plain", k]
    assert {r["teacher"] for r in rows if r["task"] == "cache"} == {"tiny (pretrained here)"}
    mass = {r["k"]: r["value"] for r in rows if r["metric"] == "topk_mass"}
    assert 0 < mass[8] < mass[64] <= 1  # more of the teacher's mass in a larger top-k
