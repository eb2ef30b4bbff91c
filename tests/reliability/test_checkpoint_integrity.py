"""Checkpoints are verified when read: a damaged or missing file falls back to the previous
good checkpoint with a warning, or is an error naming it — never a silent restart, and never
a good checkpoint deleted because another file is missing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from distil.config import load_config
from distil.data import load_data
from distil.errors import CheckpointError, ConfigError
from distil.eval.checkpointed import evaluate_run
from distil.pipeline import run
from distil.train.checkpoint import read_pointer
from distil.train.trainer import Trainer

OVERRIDES = ["train.epochs=1", "train.checkpoint_every=4", "train.eval_every=4"]


@pytest.fixture(scope="module")
def digits():
    return load_data(load_config("kd-digits").data)


def config(recipe: Path, out: Path):
    return load_config(recipe, [*OVERRIDES, f"output.dir={out}"])


def killed_run(recipe: Path, digits, out: Path, monkeypatch) -> Path:
    """A run killed during step 11: checkpoints at steps 4 (previous) and 8 (last)."""
    original, calls = Trainer._step, {"n": 0}

    def dies(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_step", dies)
    with pytest.raises(KeyboardInterrupt):
        run(config(recipe, out), data=digits)
    monkeypatch.setattr(Trainer, "_step", original)
    checkpoints = out / "checkpoints"
    assert read_pointer(checkpoints, "last")["step"] == 8
    assert read_pointer(checkpoints, "previous")["step"] == 4
    return checkpoints


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip model", "truncate trainer.json", "delete optimizer"])
def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one_and_ends_the_same(
    tiny_recipe, digits, tmp_path, monkeypatch, caplog, damage
):
    straight = run(config(tiny_recipe, tmp_path / "straight"), data=digits).metrics
    checkpoints = killed_run(tiny_recipe, digits, tmp_path / "killed", monkeypatch)
    last = checkpoints / "step-000008"
    if damage == "flip model":
        flip_a_byte(last / "model.safetensors")
    elif damage == "truncate trainer.json":
        (last / "trainer.json").write_text('{"state": {"st')
    else:
        (last / "optimizer.safetensors").unlink()
    with caplog.at_level(logging.WARNING, logger="distil"):
        resumed = run(config(tiny_recipe, tmp_path / "killed"), data=digits, resume=True).metrics
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "step-000008" in warned and "resuming from step-000004 instead" in warned
    assert resumed["last"] == straight["last"] and resumed["best_val"] == straight["best_val"]


def test_a_lost_pointer_resumes_from_the_newest_folder_and_a_fresh_run_is_refused(
    tiny_recipe, digits, tmp_path, monkeypatch, caplog
):
    straight = run(config(tiny_recipe, tmp_path / "straight"), data=digits).metrics
    checkpoints = killed_run(tiny_recipe, digits, tmp_path / "killed", monkeypatch)
    (checkpoints / "last.json").unlink()
    (checkpoints / "previous.json").unlink()
    with pytest.raises(ConfigError, match="already holds a run"):  # not a silent restart
        run(config(tiny_recipe, tmp_path / "killed"), data=digits)
    assert (checkpoints / "step-000008").is_dir()  # nothing was deleted
    with caplog.at_level(logging.WARNING, logger="distil"):
        resumed = run(config(tiny_recipe, tmp_path / "killed"), data=digits, resume=True).metrics
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "last.json: missing" in warned and "resuming from step-000008 instead" in warned
    assert resumed["last"] == straight["last"]


def test_when_no_checkpoint_verifies_the_error_names_every_damaged_file(
    tiny_recipe, digits, tmp_path, monkeypatch
):
    checkpoints = killed_run(tiny_recipe, digits, tmp_path / "killed", monkeypatch)
    flip_a_byte(checkpoints / "step-000008" / "model.safetensors")
    flip_a_byte(checkpoints / "step-000004" / "method.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint verifies") as error:
        run(config(tiny_recipe, tmp_path / "killed"), data=digits, resume=True)
    message = str(error.value)
    assert "step-000008/model.safetensors: damaged" in message
    assert "step-000004/method.safetensors: damaged" in message


def test_damaged_best_weights_are_an_error_naming_the_file(tiny_recipe, digits, tmp_path):
    result = run(config(tiny_recipe, tmp_path / "run"), data=digits)
    best = (
        result.run_dir / "checkpoints" / read_pointer(result.run_dir / "checkpoints", "best")["dir"]
    )
    flip_a_byte(best / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.safetensors: damaged \(its sha256 differs"):
        evaluate_run(result.run_dir, checkpoint="best")
