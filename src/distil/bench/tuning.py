"""The fair tuning protocol: the same small search budget for every method, then seeds.

Comparisons between distillation methods are only honest when each is tuned with the same
effort on data the test never sees. The protocol, for one task:

1. every method (and the student alone) gets the same number of trial settings, a small grid
   over the learning rate and the method's own one or two weights, each trained once (seed 0)
   and scored on the **validation** split at the last step; the best one is chosen (the first
   listed — the paper's setting — on ties);
2. the chosen setting is trained with 3 seeds (seed 0's trial is one of them);
3. where a method's mean test accuracy is within two standard deviations of the student
   alone's or KD's (the comparisons a reproduction is about), both get 5 seeds.

Test metrics are reported at the last step; the test accuracy at the best-validation step is
reported beside them under its own name. A grid is ``{recipe key: [values]}``; its product is
the trial list, so equal budgets mean grids with equal products.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Grid = dict[str, list[Any]]
#: runs one recipe setting: (overrides, seed, folder) → the run's metrics.json envelope
Runner = Callable[[list[str], int, Path], dict[str, Any]]

BASE_SEEDS = (0, 1, 2)
EXTRA_SEEDS = (3, 4)


def grid_settings(grid: Grid) -> list[dict[str, Any]]:
    """The grid's product in order, the first value of every key first."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def as_overrides(setting: dict[str, Any]) -> list[str]:
    """``{"train.lr": 0.05}`` → ``["train.lr=0.05"]``; a joint key ``"a,b"`` with a value
    ``(x, y)`` moves two weights together (RKD's distance and angle weights) as one trial."""
    overrides = []
    for key, value in setting.items():
        keys = key.split(",")
        values = value if len(keys) > 1 else [value]
        overrides += [f"{k}={v}" for k, v in zip(keys, values, strict=True)]
    return overrides


@dataclass
class MethodResult:
    """One method on one task: its trials, the chosen setting, the metrics per seed."""

    method: str
    trials: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    chosen: dict[str, Any] = field(default_factory=dict)
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed → metrics.json
    seconds: float = 0.0

    def test_accuracies(self) -> list[float]:
        return [run["last"]["test"]["accuracy"] for _, run in sorted(self.runs.items())]


def tune(method: str, grid: Grid, runner: Runner, scratch: Path) -> MethodResult:
    """Step 1: each setting of the grid once at seed 0, chosen by last-step validation
    accuracy (strictly better only, so ties keep the earlier, paper-first setting)."""
    result = MethodResult(method)
    started = time.perf_counter()
    best = None
    for number, setting in enumerate(grid_settings(grid)):
        metrics = runner(as_overrides(setting), 0, scratch / method / f"trial-{number}")
        score = metrics["last"]["val"]["accuracy"]
        result.trials.append((setting, score))
        if best is None or score > best:
            best, result.chosen, result.runs = score, setting, {0: metrics}
    result.seconds += time.perf_counter() - started
    return result


def add_seeds(result: MethodResult, seeds: Sequence[int], runner: Runner, scratch: Path) -> None:
    """Steps 2–3: the chosen setting at the seeds not run yet."""
    started = time.perf_counter()
    for seed in seeds:
        if seed not in result.runs:
            folder = scratch / result.method / f"seed-{seed}"
            result.runs[seed] = runner(as_overrides(result.chosen), seed, folder)
    result.seconds += time.perf_counter() - started


def too_close(a: Sequence[float], b: Sequence[float]) -> bool:
    """Means less than two standard deviations (the larger of the two) apart."""
    spread = max(statistics.stdev(a), statistics.stdev(b)) if min(len(a), len(b)) > 1 else 0.0
    return abs(statistics.fmean(a) - statistics.fmean(b)) < 2 * spread


def run_protocol(
    grids: dict[str, Grid],
    runner_for: Callable[[str], Runner],
    scratch: Path,
    *,
    references: Sequence[str] = ("supervised", "kd"),
    seeds: Sequence[int] = BASE_SEEDS,
    extra_seeds: Sequence[int] = EXTRA_SEEDS,
) -> dict[str, MethodResult]:
    """The whole protocol for one task: ``grids`` maps each method to its trial grid and
    ``runner_for(method)`` gives the function that trains it."""
    results = {}
    for method, grid in grids.items():
        results[method] = tune(method, grid, runner_for(method), scratch)
        add_seeds(results[method], seeds, runner_for(method), scratch)
    if extra_seeds:
        close = {
            name
            for method in results
            for reference in references
            if reference in results and method != reference
            and too_close(results[method].test_accuracies(), results[reference].test_accuracies())
            for name in (method, reference)
        }  # fmt: skip
        for method in close:
            add_seeds(results[method], [*seeds, *extra_seeds], runner_for(method), scratch)
    return results


def parse_grid(options: Sequence[str]) -> Grid:
    """``["train.lr=0.05,0.1", "method.beta=8,2"]`` → ``{"train.lr": [0.05, 0.1], …}`` (each
    value read as YAML, so numbers are numbers). A malformed option names itself."""
    import yaml

    from distil.errors import ConfigError

    grid: Grid = {}
    for option in options:
        key, sep, values = option.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"--grid {option!r}: expected key=value1,value2,…")
        grid[key.strip()] = [yaml.safe_load(value) for value in values.split(",")]
    return grid


def sweep(recipe: str, overrides: Sequence[str], grid: Grid, seeds: int, out: Path) -> MethodResult:
    """``distil sweep``: the protocol for one recipe — the grid at seed 0 on validation, then
    the chosen setting at ``seeds`` seeds; run folders under ``out`` (``trial-N``,
    ``seed-S``) and the summary in ``out/sweep.json``."""
    import json

    from distil.config import load_config
    from distil.pipeline import run
    from distil.train.state_io import write_text_atomic

    def train(setting: list[str], seed: int, folder: Path) -> dict[str, Any]:
        config = load_config(
            recipe, [*overrides, *setting, f"train.seed={seed}", f"output.dir={folder}"]
        )
        return run(config).metrics

    name = load_config(recipe, list(overrides)).name
    result = tune(name, grid, train, out)
    add_seeds(result, range(seeds), train, out)
    accuracies = result.test_accuracies()
    best_val = [run["best_val"]["test"]["accuracy"] for _, run in sorted(result.runs.items())]
    summary = {
        "recipe": recipe, "overrides": list(overrides), "grid": grid,
        "trials": [{"setting": setting, "val_accuracy": score} for setting, score in result.trials],
        "chosen": result.chosen, "seeds": sorted(result.runs),
        "test_accuracy": accuracies, "best_val_test_accuracy": best_val,
        "seconds": result.seconds,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "sweep.json", json.dumps(summary, indent=1))
    return result
