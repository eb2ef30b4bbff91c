"""``fidelity``: generalisation vs fidelity — does a stronger teacher give a better student,
or only a more faithful one? (Stanton et al., 2021, "Does knowledge distillation really
work?")

The ``kd-mnist`` recipe's CNN teacher is pretrained at four strengths — on 50, 200, 800 and
all of the training split's labels (the same architecture and epochs; fewer labels, a
weaker teacher) — and the recipe's fixed MLP student is distilled from each with ``kd``;
the student alone (``supervised``) is the reference. Each teacher strength and the student
alone run for 3 seeds; the seed also picks the teacher's initialisation, so the teacher's
accuracy has a spread of its own.

Rows per (teacher strength, seed), all on the test split at the last step:
``teacher_accuracy``, ``teacher_ece``, ``accuracy`` (the student's), ``agreement`` (top-1,
student vs teacher), ``teacher_kl`` (KL(teacher ‖ student)) and ``ece`` (the student's).
The student-alone rows carry the same metrics against the strongest teacher. Every row
names its teacher's label budget in ``teacher_labels`` (``None``: all of them).
"""

from __future__ import annotations

import logging
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from distil.bench.harness import SUITES, Row, Suite
from distil.config import load_config
from distil.eval.aggregate import mean_std
from distil.pipeline import run
from distil.tasks import task_for

RECIPE = "kd-mnist"
#: teacher strength label → labels its pretraining sees (None: the whole training split)
TEACHER_LABELS: dict[str, int | None] = {
    "50 labels": 50, "200 labels": 200, "800 labels": 800, "all labels": None,
}  # fmt: skip
STUDENT_ALONE = "student alone"
COMMON = ["train.epochs=15", "train.progress=false", "output.report=false",
          "train.balance_every=0"]  # fmt: skip
#: seconds, not minutes: two strengths, one seed, a few epochs on part of the data
QUICK = ["train.epochs=1", "teacher.pretrain.epochs=1", "data.train_limit=300"]
QUICK_LABELS = {"50 labels": 50, "all labels": None}
METRICS = ("teacher_accuracy", "teacher_ece", "accuracy", "agreement", "teacher_kl", "ece")


def collect(quick: bool) -> list[Row]:
    """Distil the student from each teacher strength (and train it alone) for each seed."""
    logging.getLogger("distil").setLevel(logging.ERROR)
    seeds = (0,) if quick else (0, 1, 2)
    strengths = QUICK_LABELS if quick else TEACHER_LABELS
    common = [*COMMON, *(QUICK if quick else [])]
    variants: list[tuple[str, int | None, list[str]]] = [
        (f"kd ← teacher on {label}", labels, []) for label, labels in strengths.items()
    ]
    variants.append((STUDENT_ALONE, None, ["method={name: supervised}"]))
    data = task_for(load_config(RECIPE, common)).load_data()
    rows: list[Row] = []
    with TemporaryDirectory(prefix="distil-bench-fidelity-") as scratch:
        for index, (method, labels, overrides) in enumerate(variants):
            for seed in seeds:
                budget = "null" if labels is None else str(labels)
                config = load_config(RECIPE, [
                    *common, *overrides, f"teacher.pretrain.train_limit={budget}",
                    f"teacher.pretrain.seed={seed}", f"train.seed={seed}",
                    f"output.dir={Path(scratch) / str(index) / str(seed)}",
                ])  # fmt: skip
                metrics = run(config, data=data).metrics
                base = {"suite": "fidelity", "task": "mnist", "method": method, "seed": seed,
                        "teacher_labels": labels}  # fmt: skip
                rows += [{**base, "metric": m, "value": v} for m, v in _values(metrics).items()]
    return rows


def _values(metrics: dict[str, Any]) -> dict[str, float]:
    """The six numbers of one run, from its ``metrics.json`` envelope."""
    student = metrics["last"]["test"]
    teacher = next(iter(metrics["teachers"].values()))["test"]
    return {
        "teacher_accuracy": teacher["accuracy"], "teacher_ece": teacher["ece"],
        "accuracy": student["accuracy"], "agreement": student["agreement"],
        "teacher_kl": student["teacher_kl"], "ece": student["ece"],
    }  # fmt: skip


def _per_method(rows: list[Row], metric: str) -> dict[str, tuple[float, float]]:
    values: dict[str, list[float]] = {}
    for row in rows:
        if row["metric"] == metric:
            values.setdefault(row["method"], []).append(row["value"])
    return {method: mean_std(v) for method, v in values.items()}


def plot(rows: list[Row], path: Path) -> None:
    """Left: student accuracy vs teacher accuracy; right: agreement vs teacher accuracy.

    One point per teacher strength (mean ± std over seeds on both axes); the student alone
    is a horizontal band on the left (its accuracy does not depend on a teacher) and absent
    on the right (it was not taught)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    teacher_acc = _per_method(rows, "teacher_accuracy")
    taught = [m for m in teacher_acc if m != STUDENT_ALONE]
    figure = Figure(figsize=(11, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    panels = ((left, "accuracy", "student test accuracy",
               "Does a stronger teacher give a better student?"),
              (right, "agreement", "test agreement with the teacher (top-1)",
               "…or only a more faithful one?"))  # fmt: skip
    xs = [teacher_acc[m][0] for m in taught]
    span = (min(xs) - 0.03, max(xs) + 0.03) if xs else (0.0, 1.0)
    for axes, metric, ylabel, title in panels:
        values = _per_method(rows, metric)
        for colour, method in enumerate(taught):
            axes.errorbar(teacher_acc[method][0], values[method][0], xerr=teacher_acc[method][1],
                          yerr=values[method][1], marker="o", capsize=3, linestyle="none",
                          color=f"C{colour}", label=method)  # fmt: skip
        axes.plot(xs, [values[m][0] for m in taught], color="0.6", linewidth=1, zorder=0)
        if metric == "accuracy":  # above the diagonal: the student beats its teacher
            axes.plot(span, span, linestyle=":", color="0.4", label="student = teacher")
        if metric == "accuracy" and STUDENT_ALONE in values:
            mean, std = values[STUDENT_ALONE]
            axes.axhline(mean, color="black", linestyle="--", label=f"{STUDENT_ALONE} (± std)")
            axes.axhspan(mean - std, mean + std, color="black", alpha=0.1)
        axes.set(xlabel="teacher test accuracy", ylabel=ylabel, title=title, xlim=span)
        if metric == "accuracy":  # the students' range, not the diagonal's: their gaps matter
            shown = [mean for mean, _ in values.values()]
            axes.set_ylim(min(shown) - 0.03, max(shown) + 0.02)
        axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=2)
    seeds = len({row["seed"] for row in rows})
    figure.suptitle(f"fidelity: kd-mnist's MLP student from CNN teachers of {len(taught)} "
                    f"strengths (mean ± std over {seeds} seed{'s' if seeds > 1 else ''})")  # fmt: skip
    figure.savefig(path, dpi=120)


SUITES.register("fidelity")(Suite("fidelity", collect, plot))
