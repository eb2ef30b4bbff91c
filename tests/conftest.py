"""Shared fixtures: an offline, isolated environment and a tiny recipe that trains in seconds."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Nothing may reach a hub, and pretrained teachers are cached per test session, not in ~.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("DISTIL_CACHE_DIR", tempfile.mkdtemp(prefix="distil-test-cache-"))

TINY_RECIPE = """\
name: tiny
data: {dataset: digits}
teacher:
  model: cnn
  options: {channels: [8, 16], hidden: 32}
  pretrain: {epochs: 4, lr: 0.005}
student:
  model: mlp
  options: {hidden: [32]}
method: {name: kd, temperature: 4.0, alpha: 0.7}
train:
  epochs: 2
  batch_size: 32
  lr: 0.005
  progress: false
  log_every: 5
  balance_every: 10
output:
  dir: OUT
  report: false
"""


def assert_logits_train_every_parameter(model, logits, shape: tuple[int, ...]) -> None:
    """Finite logits of ``shape`` whose backward reaches every parameter of ``model``."""
    import torch

    assert logits.shape == shape
    assert torch.isfinite(logits).all()
    logits.logsumexp(dim=1).sum().backward()
    without_gradient = [name for name, p in model.named_parameters() if p.grad is None]
    assert without_gradient == []


class SimulatedKill(Exception):
    """Raised inside a training step to stand for a kill between two checkpoints."""


def assert_resume_is_exact(recipe, overrides: list[str], out: Path, monkeypatch, data) -> None:
    """Train ``recipe`` straight through, then again killed at step 17 (after the checkpoint
    at step 14; the overrides must checkpoint every 7 steps) and resumed: the resumed run ends
    with the same last and best-validation metrics and the same metrics.jsonl."""
    import json

    from distil.config import load_config
    from distil.pipeline import run
    from distil.train import Trainer

    def read_jsonl(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    straight = run(load_config(recipe, [*overrides, f"output.dir={out / 'straight'}"]), data=data)
    original_step = Trainer._step

    def dying_step(self, model, optimizer, scheduler, group, state, *args):
        if state.step == 17:  # after the checkpoint at step 14, before the one at 21
            raise SimulatedKill
        return original_step(self, model, optimizer, scheduler, group, state, *args)

    resumed_config = load_config(recipe, [*overrides, f"output.dir={out / 'resumed'}"])
    monkeypatch.setattr(Trainer, "_step", dying_step)
    with pytest.raises(SimulatedKill):
        run(resumed_config, data=data)
    assert json.loads((out / "resumed/checkpoints/last.json").read_text())["step"] == 14
    monkeypatch.setattr(Trainer, "_step", original_step)
    resumed = run(resumed_config, data=data, resume=True)

    assert resumed.metrics["last"] == straight.metrics["last"]
    assert resumed.metrics["best_val"] == straight.metrics["best_val"]
    assert read_jsonl(out / "resumed/metrics.jsonl") == read_jsonl(out / "straight/metrics.jsonl")


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    """A KD recipe on sklearn's digits (MLP student, small CNN teacher) writing into tmp."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_RECIPE.replace("OUT", str(tmp_path / "run")))
    return path


# ----------------------------------------------------------------------------- language models

#: A small slice of Brown (news, editorial, and a few reviews: three domains) cut into short
#: blocks with a 512-token BPE trained here — enough text for a tiny LM to learn something.
LM_DATA = {
    "corpus": "brown", "limit_documents": 75, "tokenizer": "brown-bpe-512", "block_size": 32,
    "val_fraction": 0.1, "test_fraction": 0.1, "eval_blocks": 64,
}  # fmt: skip
LM_TEACHER = {
    "tiny": {"hidden": 96, "layers": 2, "heads": 4},
    "pretrain": {"steps": 300, "batch_size": 32, "lr": 0.005},
}
LM_STUDENT = {"tiny": {"hidden": 32, "layers": 1, "heads": 2}}


def lm_recipe(out: Path, method: dict, **sections) -> dict:
    """An LM recipe dict on the shared Brown slice; ``sections`` override whole sections."""
    recipe = {
        "task": "lm",
        "name": method["name"],
        "data": dict(LM_DATA),
        "teacher": dict(LM_TEACHER),
        "student": dict(LM_STUDENT),
        "method": method,
        "train": {
            "max_steps": 60, "batch_size": 16, "lr": 0.01, "warmup_steps": 5,
            "schedule": "cosine", "eval_every": 30, "checkpoint_every": 30, "progress": False,
        },
        "eval": {"batch_size": 32},
        "output": {"dir": str(out / "{name}"), "report": False},
        "cache": {"dir": str(out / "cache"), "k": 32, "codec": "compact", "shard_tokens": 2048},
    }  # fmt: skip
    recipe.update(sections)
    return recipe


@pytest.fixture(scope="session")
def lm_data():
    """The shared Brown slice, tokenized and split once per session."""
    from distil.lm.config import LMDataConfig
    from distil.lm.data import load_lm_data

    return load_lm_data(LMDataConfig(**LM_DATA))


class Killed(RuntimeError):
    """What a teacher raises where a killed process would have stopped."""


class DiesAfter:
    """A teacher that dies (like a killed process) after ``calls`` forward passes: for the
    resume tests of everything that runs a teacher over data (caches, generation)."""

    def __init__(self, teacher, calls):
        self.teacher, self.calls = teacher, calls
        self.device, self.dtype = teacher.device, teacher.dtype

    def signal(self, batch):
        if self.calls == 0:
            raise Killed
        self.calls -= 1
        return self.teacher.signal(batch)
