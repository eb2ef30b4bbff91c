"""``overhead``: what a teacher costs per training step, as ratios measured in one run.

Three ways to train the same student on the same batches: ``supervised`` (no teacher),
``kd`` with a live teacher (a forward pass per step) and ``kd`` with the teacher's outputs
precomputed once (a lookup per step). The trainer times every optimizer step (data, teacher,
forward, backward, update); a variant's step time is the median over a run after its first
steps (warm-up). Variants are interleaved and repeated so machine noise hits all of them
alike, and each repetition's ratios use that repetition's own supervised time.
Rows: ``metric = step_time_ratio`` (vs supervised) and ``step_seconds``.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from tempfile import TemporaryDirectory

from accelerate.utils import set_seed

from distil.bench.harness import SUITES, Row, Suite, plot_grouped_bars
from distil.config import load_config
from distil.methods import METHODS, build_method
from distil.tasks import task_for
from distil.teachers import PrecomputedTeacher
from distil.train import Trainer
from distil.train.accelerator import make_accelerator

RECIPE = "kd-mnist"
TASK = "mnist"
WARMUP_STEPS = 10


def collect(quick: bool) -> list[Row]:
    """Time each variant ``repeats`` times; return per-step seconds and ratios."""
    steps, repeats = (WARMUP_STEPS + 10, 1) if quick else (WARMUP_STEPS + 200, 5)
    config = load_config(RECIPE, ["train.progress=false"])
    task = task_for(config)
    data = task.load_data()
    accelerator = make_accelerator()
    live = task.build_teachers(data, METHODS.get("kd"), accelerator).references["val"]["teacher"]
    variants = {
        "supervised": (build_method({"name": "supervised"}), None),
        "kd (live teacher)": (build_method(config.method), live),
        "kd (precomputed teacher)": (
            build_method(config.method),
            PrecomputedTeacher.from_teacher(live, data.train),
        ),
    }
    train_config = config.train.model_copy(
        update={"max_steps": steps, "eval_every": 10**9, "checkpoint_every": 10**9,
                "log_every": 10**9, "balance_every": 0, "progress": False}
    )  # fmt: skip
    rows: list[Row] = []
    logging.getLogger("distil").setLevel(logging.WARNING)
    with TemporaryDirectory(prefix="distil-overhead-") as scratch:
        for repeat in range(repeats):
            seconds = {}
            for name, (method, teacher) in variants.items():
                set_seed(repeat)
                trainer = Trainer(
                    task.build_student(data), method, task=task, train_data=data.train,
                    data=data, config=train_config,
                    teachers={"teacher": teacher} if teacher is not None else {},
                    validator=task.validator(data, None), select_metric="accuracy",
                    output_dir=Path(scratch) / f"{repeat}-{name}", accelerator=accelerator,
                )  # fmt: skip
                timed = trainer.fit().step_seconds[WARMUP_STEPS:]
                seconds[name] = statistics.median(timed)
            for name, value in seconds.items():
                base = {"suite": "overhead", "task": TASK, "method": name, "seed": repeat,
                        "student": config.student.model, "teacher": config.teacher.model,
                        "batch_size": config.train.batch_size, "timed_steps": steps - WARMUP_STEPS}  # fmt: skip
                rows.append({**base, "metric": "step_seconds", "value": value})
                rows.append(
                    {**base, "metric": "step_time_ratio", "value": value / seconds["supervised"]}
                )
    return rows


def plot(rows: list[Row], path: Path) -> None:
    """Step time relative to supervised training of the same student."""
    plot_grouped_bars(
        rows, "step_time_ratio", path, "overhead: training-step time / supervised step time"
    )


SUITES.register("overhead")(Suite("overhead", collect, plot))
