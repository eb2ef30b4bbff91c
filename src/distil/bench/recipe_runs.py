"""Quality benchmarks as grids of recipe runs: task × variant × seed → metric rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from tempfile import TemporaryDirectory

from distil.bench.harness import Row
from distil.config import load_config
from distil.pipeline import run
from distil.tasks import task_for

TEST_METRICS = ("accuracy", "ece", "agreement", "nll")
QUICK_OVERRIDES = ["train.epochs=2", "teacher.pretrain.epochs=2"]


def recipe_rows(
    suite: str,
    tasks: Sequence[str],
    variants: dict[str, list[str]],
    *,
    quick: bool,
    extra_overrides: Sequence[str] = (),
    label: str | None = None,
) -> list[Row]:
    """Run recipe ``kd-<task>`` with each variant's overrides for 3 seeds (1 when quick).

    ``label`` names the task in the rows instead of the dataset (a teacher–student pair).

    Rows carry the last-step test metrics and, separately named, ``best_val_accuracy``
    (test accuracy at the best validation step).
    """
    seeds = (0,) if quick else (0, 1, 2)
    common = [*(QUICK_OVERRIDES if quick else []), *extra_overrides,
              "train.progress=false", "output.report=false"]  # fmt: skip
    rows: list[Row] = []
    with TemporaryDirectory(prefix=f"distil-bench-{suite}-") as scratch:
        for task in tasks:
            recipe = f"kd-{task}"
            # the extra overrides may change the data (class_groups, train_limit)
            data = task_for(load_config(recipe, common)).load_data()
            for method, overrides in variants.items():
                for seed in seeds:
                    folder = Path(scratch) / (label or task) / method / str(seed)
                    config = load_config(
                        recipe, [*common, *overrides, f"train.seed={seed}", f"output.dir={folder}"]
                    )
                    metrics = run(config, data=data).metrics
                    base = {"suite": suite, "task": label or task, "method": method, "seed": seed,
                            "student": config.student.model,
                            "teacher": config.teacher.model if config.teacher else None}  # fmt: skip
                    test = metrics["last"]["test"]
                    rows += [
                        {**base, "metric": m, "value": test[m]} for m in TEST_METRICS if m in test
                    ]
                    rows.append({**base, "metric": "best_val_accuracy",
                                 "value": metrics["best_val"]["test"]["accuracy"]})  # fmt: skip
    return rows
