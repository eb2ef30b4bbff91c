"""Re-evaluate a finished run folder from its recipe and its saved weights."""

from __future__ import annotations

from pathlib import Path

import yaml

from distil.build import build_network, build_teacher
from distil.config import parse_config
from distil.data import load_data
from distil.errors import ConfigError
from distil.eval.evaluate import evaluate_model, teacher_logits
from distil.train.accelerator import make_accelerator
from distil.train.checkpoint import load_model_state


def evaluate_run(run_dir: Path, checkpoint: str = "last", split: str = "test") -> dict[str, float]:
    """Metrics of a run's ``last`` or ``best`` weights on ``split`` (val or test)."""
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: missing; is {run_dir} a distil run folder?")
    config = parse_config(yaml.safe_load(config_path.read_text()))
    data = load_data(config.data)
    accelerator = make_accelerator()
    student = build_network(config.student.model_copy(update={"weights": None}), data)
    student.load_state_dict(load_model_state(run_dir / "checkpoints", checkpoint))
    teacher = build_teacher(config, data, accelerator)
    dataset = getattr(data, split)
    reference = (
        teacher_logits(teacher, dataset, batch_size=config.eval.batch_size) if teacher else None
    )
    return evaluate_model(
        student,
        dataset,
        reference_logits=reference,
        batch_size=config.eval.batch_size,
        ece_bins=config.eval.ece_bins,
    )
