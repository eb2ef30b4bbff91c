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


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    """A KD recipe on sklearn's digits (MLP student, small CNN teacher) writing into tmp."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_RECIPE.replace("OUT", str(tmp_path / "run")))
    return path
