"""One run from a recipe, for every task: build, train, evaluate, write the run folder.

The run folder holds ``config.yaml`` (resolved recipe), ``metrics.jsonl`` (per-step log),
``metrics.json`` (final metrics in one envelope for every task: the main student's at the last
step and — separately labelled — at the best validation step, never the best test step; every
student's and every teacher's own block; the task's block), ``checkpoints/`` and
``report.html``. What differs between tasks is asked of the task (:mod:`distil.tasks`).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

from distil.config import RunConfig
from distil.errors import ConfigError
from distil.methods import METHODS, build_method
from distil.methods.base import MAIN_STUDENT, Need
from distil.run_folder import read_run_config, seal_run
from distil.tasks import Task, TeacherSet, check_method_fits, task_for
from distil.train import Trainer, TrainResult
from distil.train.accelerator import make_accelerator
from distil.train.checkpoint import (
    best_pointer,
    has_checkpoint,
    holds_checkpoints,
    load_model_state,
    read_pointer,
)
from distil.train.state_io import write_json, write_text_atomic

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
    data: Any = None,
    accelerator: Accelerator | None = None,
) -> RunResult:
    """Train and evaluate the run a recipe describes; returns its folder and metrics.

    ``data`` may be passed to share loaded splits between several runs (the demo does).
    """
    task = task_for(config)
    accelerator = accelerator or make_accelerator(config.train.mixed_precision)
    run_dir = start_run(config, resume, data)
    data = data or task.load_data()
    method_class = METHODS.get(config.method.name)
    teacher_names = list(config.teachers)
    check_method_fits(task, method_class, teacher_names)
    teachers = task.build_teachers(data, method_class, accelerator)
    method = build_method(config.method)
    if Need.TEACHER_WRITES_DATA in method.needs:
        data = task.prepare_data(method, data, teachers, run_dir, accelerator)
    validator = task.validator(data, teachers, accelerator.device)
    set_seed(config.train.seed)
    student = task.build_student(data)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", config.to_yaml())
        seal_run(run_dir, finished=False)
    started = time.perf_counter()
    trainer = Trainer(
        student, method, task=task, train_data=data.train, data=data, config=config.train,
        output_dir=run_dir, teachers=teachers.training if method.needs_teacher else {},
        validator=validator, select_metric=task.select_metric, accelerator=accelerator,
        peer_validator=lambda name: task.validator(data, teachers, accelerator.device),
        setup_batch_size=config.eval.batch_size,
    )  # fmt: skip
    result = trainer.fit(resume=resume)
    trained = time.perf_counter()
    students = trainer.students()
    # on every process: each scores its shard of the splits (distil.eval.sharding)
    metrics = final_metrics(task, data, students, teachers, run_dir, accelerator, result)
    # the method's setup and the loop (with its validations); the final scoring apart
    metrics["train_seconds"] = trained - started
    metrics["eval_seconds"] = time.perf_counter() - trained
    if accelerator.is_main_process:
        write_json(run_dir / "metrics.json", metrics)
        seal_run(run_dir, finished=True)  # recipe, metrics and step log, verified when read
        task.save_students(students, data, run_dir)
        if config.output.report:
            from distil.report import write_report  # matplotlib only when a report is asked for

            write_report([run_dir], run_dir / "report.html", title=config.name)
    accelerator.wait_for_everyone()
    return RunResult(run_dir=run_dir, metrics=metrics)


def start_run(config: RunConfig, resume: bool, data: Any = None) -> Path:
    """The run folder, after refusing to overwrite a run without ``--resume``, to resume with
    another recipe, or to train on splits loaded with another data section."""
    run_dir = config.run_dir()
    check_writable(run_dir)
    if not resume and holds_checkpoints(run_dir / "checkpoints"):
        raise ConfigError(
            f"output.dir: {run_dir} already holds a run; pass --resume to continue it or "
            "choose another output.dir"
        )
    if resume:
        check_same_recipe(config, run_dir)
    loaded_with = getattr(data, "config", None)
    if data is not None and loaded_with is not None and loaded_with != config.data:
        raise ConfigError(
            "data: the splits passed in were loaded with another data section than the "
            "recipe's; load them from the recipe's data section"
        )
    return run_dir


#: Free space below which a run does not start (a checkpoint that cannot be written is lost
#: work; the real need depends on the model, this only catches a full disk).
MIN_FREE_BYTES = 64 * 2**20


def check_writable(run_dir: Path) -> None:
    """Refuse, before any work, an output folder that cannot be created or written, or that
    sits on a (nearly) full disk."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".distil-write-probe-{os.getpid()}"
        probe.write_bytes(b"0")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"output.dir: {run_dir} cannot be written ({error.strerror or error}); choose "
            "another output.dir"
        ) from None
    free = shutil.disk_usage(run_dir).free
    if free < MIN_FREE_BYTES:
        raise ConfigError(
            f"output.dir: only {free / 2**20:.0f} MiB free on the disk of {run_dir}; "
            f"checkpoints need room (at least {MIN_FREE_BYTES // 2**20} MiB)"
        )


#: Settings that may change between a run and its resumption (they do not affect results).
RESUMABLE_CHANGES = {"train.progress", "output.report"}


def check_same_recipe(config: RunConfig, run_dir: Path) -> None:
    """Refuse to resume a run with a recipe that differs from the one it started with."""
    saved_recipe = read_run_config(run_dir / "config.yaml")
    if saved_recipe is None:
        return
    from distil.config import parse_config

    # parsed again, so a recipe saved in a short form (teacher:) compares by meaning
    saved = _flatten(parse_config(saved_recipe).model_dump(mode="json"))
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
    task: Task,
    data: Any,
    students: dict[str, nn.Module],
    teachers: TeacherSet,
    run_dir: Path,
    accelerator: Accelerator,
    result: TrainResult,
) -> dict[str, Any]:
    """The ``metrics.json`` envelope: every student at its last step and at its best
    validation step, every teacher's own metrics, and the task's block. ``last`` and
    ``best_val`` at the top are the main student's."""
    config = task.config
    device = accelerator.device
    checkpoints = run_dir / "checkpoints"

    def scores(model: nn.Module) -> dict[str, dict]:
        return {
            split: task.evaluate(model, data, split, teachers, device)
            for split in task.final_splits
        }

    student_model = task.describe_model(config.student)  # peers are built from it too
    blocks: dict[str, dict[str, Any]] = {}
    for name, model in students.items():
        block: dict[str, Any] = {"model": student_model, "last": scores(model)}
        pointer = best_pointer(name)
        if has_checkpoint(checkpoints, pointer):
            best_model = copy.deepcopy(model)
            best_model.load_state_dict(load_model_state(checkpoints, pointer))
            block["best_val"] = {
                "step": read_pointer(checkpoints, pointer)["step"],
                **scores(best_model),
            }
        blocks[name] = block
    main = blocks[MAIN_STUDENT]
    teacher_scores = task.teacher_metrics(data, teachers, device)
    return {
        "run": {
            "name": config.name,
            "task": task.name,
            "method": config.method.name,
            "seed": config.train.seed,
            "dataset": _dataset_name(config),
            "student": student_model,
            "teacher": task.describe_model(config.teacher) if config.teacher else None,
        },
        "task": task.name,
        "students": blocks,
        "teachers": {
            name: {
                "model": task.describe_model(spec),
                "source": teachers.sources.get(name, "not loaded"),
                **teacher_scores.get(name, {}),
            }
            for name, spec in config.teachers.items()
        },
        "last": {**main["last"], "step": result.steps, "epoch": result.epochs_completed},
        "best_val": main.get("best_val"),
        task.name: task.task_metrics(data, students, teachers, run_dir, device),
    }


def _dataset_name(config: RunConfig) -> str | None:
    data = config.data
    return getattr(data, "dataset", None) or getattr(data, "corpus", None)
