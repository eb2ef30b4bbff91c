"""One run from a recipe: build, train, evaluate, and write the run folder.

The run folder holds ``config.yaml`` (resolved recipe), ``metrics.jsonl`` (per-step log),
``metrics.json`` (final metrics, at the last step and — separately labelled — at the best
validation step, never the best test step), ``checkpoints/`` and ``report.html``.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed

from distil.build import build_network, build_teacher
from distil.config import RunConfig
from distil.data import DataSplits, load_data
from distil.errors import ConfigError
from distil.eval.evaluate import evaluate_model, teacher_logits
from distil.eval.metrics import classification_metrics
from distil.methods import build_method
from distil.teachers import PrecomputedTeacher
from distil.teachers.base import Teacher
from distil.train import Trainer
from distil.train.accelerator import make_accelerator
from distil.train.checkpoint import has_checkpoint, load_model_state, read_pointer
from distil.train.state_io import write_json

log = logging.getLogger("distil")


@dataclass
class RunResult:
    """Where a run wrote its files, and its final metrics (the content of metrics.json)."""

    run_dir: Path
    metrics: dict[str, Any]


def run(
    config: RunConfig,
    *,
    resume: bool = False,
    data: DataSplits | None = None,
    accelerator: Accelerator | None = None,
) -> RunResult:
    """Train and evaluate the run a recipe describes; returns its folder and metrics.

    ``data`` may be passed to share loaded splits between several runs (the demo does).
    """
    accelerator = accelerator or make_accelerator(config.train.mixed_precision)
    run_dir = start_run(config, resume, data)
    data = data or load_data(config.data)
    teacher = build_teacher(config, data, accelerator)
    method = build_method(config.method)
    if method.needs_teacher and teacher is None:
        raise ConfigError(
            f"method.name: {config.method.name!r} needs a teacher; the recipe has no teacher section"
        )
    set_seed(config.train.seed)
    student = build_network(config.student, data)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.to_yaml())
    started = time.perf_counter()
    training_teacher = teacher
    if method.needs_teacher and config.teacher.precompute:
        training_teacher = PrecomputedTeacher.from_teacher(
            teacher, data.train, config.eval.batch_size
        )
    trainer = Trainer(
        student,
        method,
        train_data=data.train,
        val_data=data.val,
        config=config.train,
        output_dir=run_dir,
        teacher=training_teacher,
        eval_teacher=teacher,
        select_metric=config.eval.select_metric,
        ece_bins=config.eval.ece_bins,
        eval_batch_size=config.eval.batch_size,
        accelerator=accelerator,
    )
    result = trainer.fit(resume=resume)
    metrics: dict[str, Any] = {}
    if accelerator.is_main_process:
        metrics = final_metrics(config, data, student, teacher, run_dir, accelerator)
        metrics["train_seconds"] = time.perf_counter() - started
        metrics["last"].update(step=result.steps, epoch=result.epochs_completed)
        write_json(run_dir / "metrics.json", metrics)
        if config.output.report:
            from distil.report import write_report  # matplotlib only when a report is asked for

            write_report([run_dir], run_dir / "report.html", title=config.name)
    accelerator.wait_for_everyone()
    return RunResult(run_dir=run_dir, metrics=metrics)


def start_run(config, resume: bool, data=None) -> Path:
    """The run folder, after refusing to overwrite a run without ``--resume``, to resume with
    another recipe, or to train on splits loaded with another data section."""
    run_dir = config.run_dir()
    if not resume and has_checkpoint(run_dir / "checkpoints"):
        raise ConfigError(
            f"output.dir: {run_dir} already holds a run; pass --resume to continue it or "
            "choose another output.dir"
        )
    if resume:
        check_same_recipe(config, run_dir)
    if data is not None and data.config is not None and data.config != config.data:
        raise ConfigError(
            "data: the splits passed in were loaded with another data section than the "
            "recipe's; load them from the recipe's data section"
        )
    return run_dir


#: Settings that may change between a run and its resumption (they do not affect results).
RESUMABLE_CHANGES = {"train.progress", "output.report"}


def check_same_recipe(config: RunConfig, run_dir: Path) -> None:
    """Refuse to resume a run with a recipe that differs from the one it started with."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = _flatten(yaml.safe_load(saved_path.read_text()) or {})
    current = _flatten(config.model_dump(mode="json"))
    changed = sorted(
        key for key in saved.keys() | current.keys()
        if saved.get(key) != current.get(key) and key not in RESUMABLE_CHANGES
    )  # fmt: skip
    if changed:
        shown = ", ".join(f"{k}: {saved.get(k)!r} → {current.get(k)!r}" for k in changed[:5])
        raise ConfigError(
            f"--resume: the recipe differs from the one {run_dir} was started with ({shown}); "
            "resume with the same settings or start a new output.dir"
        )


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= _flatten(value, path + ".")
        else:
            flat[path] = value
    return flat


def final_metrics(
    config: RunConfig,
    data: DataSplits,
    student,
    teacher: Teacher | None,
    run_dir: Path,
    accelerator: Accelerator,
) -> dict[str, Any]:
    """Test (and val) metrics at the last step and at the best validation step."""
    options = {
        "batch_size": config.eval.batch_size,
        "device": accelerator.device,
        "ece_bins": config.eval.ece_bins,
    }
    references = {
        split: teacher_logits(teacher, getattr(data, split), batch_size=config.eval.batch_size)
        if teacher
        else None
        for split in ("val", "test")
    }

    def scores(model, with_reliability: bool = False) -> dict[str, dict]:
        return {
            split: evaluate_model(
                model,
                getattr(data, split),
                reference_logits=references[split],
                with_reliability=with_reliability and split == "test",
                **options,
            )
            for split in ("val", "test")
        }

    last = scores(student, with_reliability=True)
    reliability = last["test"].pop("reliability")
    best_student = copy.deepcopy(student)
    best_student.load_state_dict(load_model_state(run_dir / "checkpoints", "best"))
    best = scores(best_student)
    best_pointer = read_pointer(run_dir / "checkpoints", "best")
    teacher_test = None
    if teacher is not None:
        teacher_test = classification_metrics(
            references["test"], data.test.labels, n_bins=config.eval.ece_bins
        )
    return {
        "run": {
            "name": config.name,
            "method": config.method.name,
            "dataset": config.data.dataset,
            "student": config.student.model,
            "teacher": config.teacher.model if config.teacher else None,
            "seed": config.train.seed,
        },
        "last": {"val": last["val"], "test": last["test"]},
        "best_val": {"step": best_pointer["step"], "val": best["val"], "test": best["test"]},
        "teacher": {"test": teacher_test} if teacher_test else None,
        "reliability": reliability,
    }
