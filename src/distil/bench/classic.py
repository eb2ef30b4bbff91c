"""``classic``: the student alone vs the student with ``kd`` on each shipped dataset, 3 seeds.

Each dataset has a shipped recipe ``kd-<dataset>``; ``supervised`` is the same recipe with
the method swapped. Rows carry the test metrics at the last step and, separately labelled,
the test accuracy at the best validation step.
"""

from __future__ import annotations

from pathlib import Path

from distil.bench.harness import SUITES, Row, Suite, plot_grouped_bars
from distil.bench.recipe_runs import recipe_rows

DATASETS = ("digits", "mnist", "mnist1d")
METHODS = {"supervised": ["method={name: supervised}"], "kd": []}


def collect(quick: bool) -> list[Row]:
    """Train every (dataset, method, seed) and return one row per metric."""
    return recipe_rows("classic", DATASETS, METHODS, quick=quick)


def plot(rows: list[Row], path: Path) -> None:
    """Test accuracy per dataset and method."""
    plot_grouped_bars(rows, "accuracy", path, "classic: test accuracy at the last step")


SUITES.register("classic")(Suite("classic", collect, plot))
