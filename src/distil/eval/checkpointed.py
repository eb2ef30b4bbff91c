"""Re-evaluate a finished run folder from its recipe and its saved weights, for every task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distil.config import parse_config
from distil.errors import ConfigError
from distil.methods import METHODS
from distil.methods.base import MAIN_STUDENT
from distil.run_folder import read_run_config, read_run_text
from distil.tasks import task_for
from distil.tasks.base import TeacherSet
from distil.train.accelerator import make_accelerator
from distil.train.checkpoint import best_pointer, has_checkpoint, load_model_state, read_pointer


def evaluate_run(
    run_dir: Path,
    checkpoint: str = "last",
    split: str = "test",
    student: str = MAIN_STUDENT,
    *,
    unfinished: bool = False,
    with_teacher: bool = False,
) -> dict[str, Any]:
    """Metrics of a run's ``last`` or ``best`` weights of one student on ``split``.

    ``last`` of the main student is its final checkpoint; a peer's weights are kept at its
    best validation step (``best``) only. A run that did not finish (no ``metrics.json``) is
    refused unless ``unfinished`` — its last checkpoint is not its result. Agreement and KL
    are measured against the same teacher references the run used (an LM run trained from a
    cache without a live teacher is scored against the cache's split, as in its
    ``metrics.json``).

    ``with_teacher`` adds the teacher's own metrics on the split under ``"teacher"`` (its
    name, then what the task measures of any model: a classifier's accuracy and ECE), so
    the student's generalisation can be read beside its fidelity; absent when no live
    teacher scores the split."""
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: missing; is {run_dir} a distil run folder?")
    if not (run_dir / "metrics.json").is_file() and not unfinished:
        checkpoints = run_dir / "checkpoints"
        where = (
            f"its last checkpoint is at step {read_pointer(checkpoints, 'last')['step']}"
            if has_checkpoint(checkpoints)
            else "it has no checkpoint"
        )
        raise ConfigError(
            f"{run_dir}: the run did not finish (no metrics.json; {where}); continue it with "
            "`distil train <recipe> --resume`, or pass --unfinished to evaluate it as it is"
        )
    if (run_dir / "metrics.json").is_file():
        read_run_text(run_dir / "metrics.json")  # a finished run's files are verified as a whole
    config = parse_config(read_run_config(config_path))
    if getattr(config.student, "weights", None):  # the run's weights replace them anyway
        config = config.model_copy(
            update={"student": config.student.model_copy(update={"weights": None})}
        )
    task = task_for(config)
    if split not in task.final_splits and split != "val":
        raise ConfigError(f"--split: {split!r} is not a split of task {task.name!r}")
    if student != MAIN_STUDENT and checkpoint != "best":
        raise ConfigError(f"--student {student}: a peer's weights are kept as 'best' only")
    accelerator = make_accelerator()
    data = task.load_data()
    model = task.build_student(data).to(accelerator.device)
    pointer = "last" if checkpoint == "last" else best_pointer(student)
    state = load_model_state(run_dir / "checkpoints", pointer)
    model.load_state_dict(state)
    teachers = task.build_teachers(data, METHODS.get(config.method.name), accelerator)
    metrics: dict[str, Any] = task.evaluate(model, data, split, teachers, accelerator.device)
    if with_teacher:
        scored = _teacher_metrics(task, data, split, teachers, accelerator.device)
        if scored is not None:
            metrics["teacher"] = scored
    return metrics


def _teacher_metrics(
    task: Any, data: Any, split: str, teachers: TeacherSet, device: Any
) -> dict[str, Any] | None:
    """The reference teacher of ``split`` (the one agreement is measured against): on the
    test split measured as the run's ``metrics.json`` measures it (``task.teacher_metrics``);
    on another, scored as a student would be (on its own device) but against no teacher.
    None when it is not a live model."""
    name = next(iter(teachers.references.get(split, {})), None)
    model = teachers.models.get(name) if name is not None else None
    if model is None:
        return None
    if split == "test":
        scored = task.teacher_metrics(data, teachers, device).get(name, {}).get("test")
        return None if scored is None else {"name": name, **scored}
    own_device = next(model.parameters()).device
    return {"name": name, **task.evaluate(model, data, split, TeacherSet(), own_device)}
