"""Re-evaluate a finished run folder from its recipe and its saved weights."""

from __future__ import annotations

from pathlib import Path

import yaml

from distil.build import build_network, build_teacher
from distil.config import LMRunConfig, parse_config
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
    if isinstance(config, LMRunConfig):
        return evaluate_lm_run(config, run_dir, checkpoint, split)
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


def evaluate_lm_run(config: LMRunConfig, run_dir: Path, checkpoint: str, split: str) -> dict:
    """Perplexity (and, with a live teacher of the same vocabulary, agreement and KL) of an LM
    run's saved weights."""
    from distil.eval.lm import lm_metrics
    from distil.lm.data import load_lm_data
    from distil.lm.pipeline import build_live_teacher
    from distil.lm.resolve import build_lm
    from distil.lm.vocab import shares_vocabulary

    data = load_lm_data(config.data)
    student = build_lm(
        config.student, data.tokenizer, role="student", pretrain_data=data.teacher_train
    )
    student.load_state_dict(load_model_state(run_dir / "checkpoints", checkpoint))
    teacher = None
    if config.teacher is not None and shares_vocabulary(config.teacher, data):
        teacher, _ = build_live_teacher(config, data, "cpu")
    return lm_metrics(
        student, getattr(data, split), teacher=teacher, batch_size=config.eval.batch_size
    )
