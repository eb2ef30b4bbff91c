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
import torch

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

    # Every logged step (log_every=1: the whole curve, 120 steps). The two runs see the same
    # samples in every step (rank r takes every 2nd sample of the same permutation, so the two
    # micro-batches form the one-process batch), so they differ only by float32 summation
    # order — DDP all-reduces two half-batch gradients where one process averages the whole
    # batch. Measured here: at most 9e-7 relative after 120 Adam steps. The tolerance (1e-4)
    # leaves 100x room for other BLAS builds and is far below what a real bug moves the loss
    # by: a different batch (each process taking the whole global batch) or a loss that is not
    # averaged over processes changes it by the batch-to-batch noise, ~7 % per step.
    one, two = train_losses("one"), train_losses("two")
    assert len(one) == len(two) == 120
    for step, (a, b) in enumerate(zip(one, two, strict=True), start=1):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5), f"step {step}: {b} vs {a}"
    # Validation rows and final metrics, scored sharded over the two processes (the test
    # split has 359 samples: the last shard is padded, and a counted duplicate would move NLL
    # by ~1e-3 relative); the weights differ by the same float noise (NLL: 2e-7 measured).
    metrics_one = json.loads((tmp_path / "one/metrics.json").read_text())
    metrics_two = json.loads((tmp_path / "two/metrics.json").read_text())

    def eval_rows(folder):
        rows = [
            json.loads(line)
            for line in (tmp_path / folder / "metrics.jsonl").read_text().splitlines()
        ]
        return [row for row in rows if row["kind"] == "eval"]

    scored = [(metrics_one["last"][s], metrics_two["last"][s]) for s in ("val", "test")]
    scored += list(zip(eval_rows("one"), eval_rows("two"), strict=True))
    for one_metrics, two_metrics in scored:
        for name in ("nll", "ece", "teacher_kl"):
            assert two_metrics[name] == pytest.approx(one_metrics[name], rel=1e-4), name
        for name in ("accuracy", "agreement"):
            assert two_metrics[name] == pytest.approx(one_metrics[name], abs=0.01), name


@pytest.mark.slow
def test_teacher_cache_sharded_over_two_processes_equals_one(tmp_path):
    """`distil cache-teacher` under two processes: each rank writes its own shards, one
    manifest is merged, and the cache serves the same top-k as a one-process cache."""
    import yaml

    from conftest import LM_DATA, lm_recipe
    from distil.cache.reader import TeacherCache
    from distil.data.datasets import in_order
    from distil.lm.config import LMDataConfig
    from distil.lm.data import load_lm_data

    data = dict(LM_DATA, train_blocks=64)
    teacher = {"tiny": {"hidden": 32, "layers": 1, "heads": 2, "seed": 3}}
    recipe = lm_recipe(tmp_path, {"name": "kd", "temperature": 1.0}, data=data, teacher=teacher)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    for launcher, folder in (([], "one"), (LAUNCH_TWO, "two")):
        result = subprocess.run(
            [sys.executable, *launcher, "-m", "distil", "cache-teacher", str(path),
             "--out", str(tmp_path / folder)],
            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = TeacherCache(tmp_path / "one"), TeacherCache(tmp_path / "two")
    assert {s.rank for s in two.manifest.shards} == {0, 1}
    assert two.manifest.tokens("train") == one.manifest.tokens("train") == 64 * 32
    blocks = load_lm_data(LMDataConfig(**data)).train
    batch = next(iter(in_order(blocks, 64)))
    a, b = one.split("train").signal(batch).logits, two.split("train").signal(batch).logits
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(a.logprobs, b.logprobs)


@pytest.mark.slow
def test_lm_distillation_on_two_processes_matches_one(tmp_path):
    """Word-level KD of a tiny LM through the fused loss under DDP: the per-step losses of two
    processes (token-weighted micro-batches, gradients averaged) follow one process's."""
    import yaml

    from conftest import LM_DATA, lm_recipe

    train_section = {"max_steps": 8, "batch_size": 8, "lr": 0.005, "eval_every": 8,
                     "checkpoint_every": 8, "log_every": 1, "progress": False}  # fmt: skip
    recipe = lm_recipe(
        tmp_path, {"name": "kd", "temperature": 1.0, "alpha": 0.5},
        data=dict(LM_DATA, train_blocks=32), train=train_section,
        teacher={"tiny": {"hidden": 32, "layers": 1, "heads": 2, "seed": 3}},
    )  # fmt: skip
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(recipe))
    train([], path, tmp_path / "one", [])
    train(LAUNCH_TWO, path, tmp_path / "two", [])

    def losses(folder):
        rows = [
            json.loads(line)
            for line in (tmp_path / folder / "metrics.jsonl").read_text().splitlines()
        ]
        return [row["loss"] for row in rows if row["kind"] == "train"]

    one, two = losses("one"), losses("two")
    assert len(one) == len(two) == 8
    for a, b in zip(one, two, strict=True):
        assert b == pytest.approx(a, rel=2e-3, abs=2e-4)
