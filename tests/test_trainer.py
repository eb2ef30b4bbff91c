"""The one training loop: it learns, logs every loss part, accumulates, balances, resumes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from conftest import assert_resume_is_exact
from distil.config import load_config
from distil.data import load_data
from distil.errors import CheckpointError, ConfigError
from distil.eval.validators import ClassificationValidator
from distil.methods import build_method
from distil.models import build_model
from distil.pipeline import run
from distil.tasks.classification import ClassificationTask
from distil.train import TrainConfig, Trainer
from distil.train.accelerator import make_accelerator


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def digits():
    return load_data(load_config("kd-digits").data)


def test_kd_run_learns_and_writes_every_artefact(tiny_recipe, digits):
    config = load_config(tiny_recipe, ["train.epochs=4"])
    result = run(config, data=digits)
    folder = result.run_dir
    for name in (
        "config.yaml",
        "metrics.json",
        "metrics.jsonl",
        "checkpoints/last.json",
        "checkpoints/best.json",
    ):
        assert (folder / name).is_file(), name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["last"]["test"]["accuracy"] > 0.8  # 10 classes: chance is 0.1
    assert metrics["teachers"]["teacher"]["test"]["accuracy"] > 0.8
    assert metrics["teachers"]["teacher"]["source"] == "live"
    assert set(metrics) >= {
        "run",
        "task",
        "students",
        "teachers",
        "last",
        "best_val",
        "classification",
    }
    assert metrics["students"]["student"]["last"]["test"] == {
        k: v for k, v in metrics["last"]["test"].items()
    }
    assert set(metrics["last"]["test"]) == {"accuracy", "nll", "ece", "agreement", "teacher_kl"}
    assert metrics["best_val"]["step"] <= metrics["last"]["step"]
    rows = read_jsonl(folder / "metrics.jsonl")
    train_rows = [r for r in rows if r["kind"] == "train"]
    first = train_rows[0]
    for key in ("loss", "loss/ce", "loss/ce@weighted", "loss/kd", "loss/kd@weighted", "lr"):
        assert key in first
    assert first["loss/kd@weighted"] == pytest.approx(0.7 * first["loss/kd"], rel=1e-6)
    assert first["loss"] == pytest.approx(
        first["loss/ce@weighted"] + first["loss/kd@weighted"], rel=1e-5
    )
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert any(r["kind"] == "eval" and r["split"] == "val" for r in rows)
    balance = [r for r in rows if r["kind"] == "balance"]
    assert balance and sum(
        v for k, v in balance[0].items() if k.startswith("balance/")
    ) == pytest.approx(1.0)
    # nothing pickled: checkpoints are safetensors and JSON only
    suffixes = {p.suffix for p in (folder / "checkpoints").rglob("*") if p.is_file()}
    assert suffixes <= {".safetensors", ".json"}


def test_balance_diagnostic_warns_once_when_one_part_dominates(tiny_recipe, digits, caplog):
    config = load_config(tiny_recipe, ["method.alpha=0.999", "train.balance_every=3"])
    with caplog.at_level(logging.WARNING, logger="distil"):
        run(config, data=digits)
    warnings = [r for r in caplog.records if "of the gradient norm" in r.getMessage()]
    assert len(warnings) == 1
    assert "'kd'" in warnings[0].getMessage()


def test_no_balance_warning_for_balanced_parts(tiny_recipe, digits, caplog):
    config = load_config(tiny_recipe, ["method.alpha=0.5", "method.temperature=1"])
    with caplog.at_level(logging.WARNING, logger="distil"):
        run(config, data=digits)
    assert not [r for r in caplog.records if "of the gradient norm" in r.getMessage()]


def _train_student(digits, tmp_path: Path, name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    student = build_model("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[16])
    config = TrainConfig(epochs=1, batch_size=32, progress=False, balance_every=0, **overrides)
    task = ClassificationTask()
    Trainer(
        student,
        build_method({"name": "supervised"}),
        task=task,
        train_data=digits.train,
        data=digits,
        config=config,
        output_dir=tmp_path / name,
        validator=ClassificationValidator(digits.val, None, batch_size=512, ece_bins=15),
        select_metric="accuracy",
        accelerator=make_accelerator(),
    ).fit()
    return student


def test_gradient_accumulation_matches_one_large_batch(digits, tmp_path):
    whole = _train_student(digits, tmp_path, "whole", grad_accum_steps=1)
    accumulated = _train_student(digits, tmp_path, "accum", grad_accum_steps=4)
    for a, b in zip(whole.parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_warmup_and_clipping_run(digits, tmp_path):
    student = _train_student(
        digits,
        tmp_path,
        "clip",
        warmup_steps=5,
        max_grad_norm=0.5,
        schedule="linear",
        optimizer="sgd",
        lr=0.05,
    )
    assert all(torch.isfinite(p).all() for p in student.parameters())


def test_killed_and_resumed_run_equals_uninterrupted_run(
    tiny_recipe, digits, tmp_path, monkeypatch
):
    overrides = ["train.epochs=3", "train.checkpoint_every=7", "student.options.dropout=0.2"]
    assert_resume_is_exact(tiny_recipe, overrides, tmp_path, monkeypatch, digits)


def test_resume_refuses_a_damaged_checkpoint(tiny_recipe, digits, tmp_path):
    config = load_config(tiny_recipe, ["train.epochs=1"])
    run(config, data=digits)
    last = config.run_dir() / "checkpoints"
    folder = last / json.loads((last / "last.json").read_text())["dir"]
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        run(config, data=digits, resume=True)


def test_a_second_run_into_the_same_folder_needs_resume(tiny_recipe, digits):
    config = load_config(tiny_recipe, ["train.epochs=1"])
    run(config, data=digits)
    with pytest.raises(Exception, match="--resume"):
        run(config, data=digits)


def test_teacher_in_another_dtype_teaches_like_float32(tiny_recipe, digits, tmp_path):
    agreement = {}
    for dtype in ("float32", "bfloat16"):
        config = load_config(
            tiny_recipe,
            [f"teacher.dtype={dtype}", "train.epochs=4", f"output.dir={tmp_path / dtype}"],
        )
        agreement[dtype] = run(config, data=digits).metrics["last"]["test"]["agreement"]
    assert agreement["bfloat16"] > 0.8
    assert agreement["bfloat16"] == pytest.approx(agreement["float32"], abs=0.05)


def test_taid_schedule_advances_during_training_and_is_checkpointed(tiny_recipe, digits):
    config = load_config(tiny_recipe, ["method={name: taid, t_start: 0.2, temperature: 2.0}",
                                       "train.epochs=3"])  # fmt: skip
    result = run(config, data=digits)
    assert result.metrics["last"]["test"]["accuracy"] > 0.7
    checkpoints = config.run_dir() / "checkpoints"
    last = json.loads((checkpoints / "last.json").read_text())["dir"]
    from safetensors.torch import load_file

    state = load_file(str(checkpoints / last / "method.safetensors"))
    assert float(state["schedule.t"]) == pytest.approx(1.0)  # reached t_end at the last step


def test_resume_refuses_a_changed_recipe(tiny_recipe, digits):
    run(load_config(tiny_recipe, ["train.epochs=1"]), data=digits)
    with pytest.raises(ConfigError, match=r"train.lr: 0.005 → 0.1"):
        run(load_config(tiny_recipe, ["train.epochs=1", "train.lr=0.1"]), data=digits, resume=True)
    # display settings may change
    run(
        load_config(tiny_recipe, ["train.epochs=1", "train.progress=true"]),
        data=digits,
        resume=True,
    )
