"""``classic``: the student alone vs the student with ``kd`` on each shipped dataset, 3 seeds.

Each dataset has a shipped recipe ``kd-<dataset>``; ``supervised`` is the same recipe with
the method swapped. Rows carry the test metrics at the last step and, separately named,
the test accuracy at the best validation step.
"""

from __future__ import annotations

from pathlib import Path
from tempfile import TemporaryDirectory

from distil.bench.harness import SUITES, Row, Suite, plot_grouped_bars
from distil.config import load_config
from distil.data import load_data
from distil.pipeline import run

DATASETS = ("digits", "mnist", "mnist1d")
METHODS = {"supervised": ["method={name: supervised}"], "kd": []}
METRICS = ("accuracy", "ece", "agreement", "nll")


def collect(quick: bool) -> list[Row]:
    """Train every (dataset, method, seed) and return one row per metric."""
    seeds = (0,) if quick else (0, 1, 2)
    quick_overrides = ["train.epochs=2", "teacher.pretrain.epochs=2"] if quick else []
    rows: list[Row] = []
    with TemporaryDirectory(prefix="distil-bench-") as scratch:
        for dataset in DATASETS:
            recipe = f"kd-{dataset}"
            data = load_data(load_config(recipe).data)
            for method, overrides in METHODS.items():
                for seed in seeds:
                    config = load_config(
                        recipe,
                        quick_overrides
                        + overrides
                        + [
                            f"train.seed={seed}",
                            "train.progress=false",
                            "output.report=false",
                            f"output.dir={Path(scratch) / dataset / method / str(seed)}",
                        ],
                    )
                    metrics = run(config, data=data).metrics
                    base = {
                        "suite": "classic",
                        "task": dataset,
                        "method": method,
                        "seed": seed,
                        "student": config.student.model,
                        "teacher": config.teacher.model if config.teacher else None,
                    }
                    for metric in METRICS:
                        if metric in metrics["last"]["test"]:
                            rows.append(
                                {**base, "metric": metric, "value": metrics["last"]["test"][metric]}
                            )
                    rows.append(
                        {
                            **base,
                            "metric": "best_val_accuracy",
                            "value": metrics["best_val"]["test"]["accuracy"],
                        }
                    )
    return rows


def plot(rows: list[Row], path: Path) -> None:
    """Test accuracy per dataset and method."""
    plot_grouped_bars(rows, "accuracy", path, "classic: test accuracy at the last step")


SUITES.register("classic")(Suite("classic", collect, plot))
