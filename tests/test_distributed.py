"""The same recipe under ``accelerate launch --multi_gpu --num_processes 2`` on CPU (gloo).

Accelerate starts several processes only on its torchrun path, which it names ``--multi_gpu``
even on CPUs; plain ``--num_processes 2`` without a GPU starts one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

LAUNCH_TWO = [
    "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
]  # fmt: skip


def train(launcher: list[str], recipe, out_dir, overrides: list[str]) -> None:
    """Run ``distil train`` (through ``launcher``) and fail with its stderr if it fails."""
    result = subprocess.run(
        [sys.executable, *launcher, "-m", "distil", "train", str(recipe), *overrides,
         f"output.dir={out_dir}"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_match_one(tiny_recipe, tmp_path):
    common = ["train.epochs=3", "train.log_every=1"]
    train([], tiny_recipe, tmp_path / "one", common)
    train(LAUNCH_TWO, tiny_recipe, tmp_path / "two", common)

    checkpoints = tmp_path / "two" / "checkpoints"
    last_dir = json.loads((checkpoints / "last.json").read_text())["dir"]
    assert json.loads((checkpoints / last_dir / "trainer.json").read_text())["num_processes"] == 2

    def train_losses(folder):
        rows = [
            json.loads(line)
            for line in (tmp_path / folder / "metrics.jsonl").read_text().splitlines()
        ]
        return [row["loss"] for row in rows if row["kind"] == "train"]

    one, two = train_losses("one"), train_losses("two")
    assert len(one) == len(two)
    for a, b in zip(one, two, strict=True):
        assert b == pytest.approx(a, rel=2e-3, abs=2e-4)
    metrics_one = json.loads((tmp_path / "one/metrics.json").read_text())
    metrics_two = json.loads((tmp_path / "two/metrics.json").read_text())
    assert metrics_two["last"]["test"]["accuracy"] == pytest.approx(
        metrics_one["last"]["test"]["accuracy"], abs=0.01
    )
