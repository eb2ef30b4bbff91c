"""Reading finished runs from disk and summarising them per method over seeds.

A run folder holds ``metrics.json`` (final metrics, required), ``metrics.jsonl`` (the per-step
log) and ``config.yaml`` (the resolved recipe). This module turns folders into
:class:`RunRecord` objects, and records into summary rows (mean and std over seeds). It draws
nothing and writes nothing; plots and documents live next to it in ``plots.py``,
``markdown.py`` and ``html.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distil.errors import DataError
from distil.eval.aggregate import mean_std
from distil.run_folder import read_run_config, read_run_text, read_step_log

__all__ = ["SUMMARY_METRICS", "RunRecord", "load_run", "nested_get", "summary_rows"]

#: Test metrics summarised per method, taken from ``metrics.json`` → ``last.test``.
SUMMARY_METRICS: tuple[str, ...] = (
    "accuracy", "ece", "agreement", "nll", "teacher_kl", "perplexity", "top1_agreement",
)  # fmt: skip


@dataclass
class RunRecord:
    """One finished run: where it lives, its resolved config, final metrics and step log."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def _run_info(self) -> dict[str, Any]:
        return self.metrics.get("run") or {}

    @property
    def name(self) -> str:
        """The run's name from ``metrics.json``, else its folder name."""
        return str(self._run_info.get("name") or self.path.name)

    @property
    def method(self) -> str:
        """The distillation method: ``run.method``, else the recipe's ``method.name``."""
        method = self._run_info.get("method") or nested_get(self.config, "method", "name")
        return str(method) if method else "unknown"

    @property
    def seed(self) -> int | None:
        """The run's seed, if ``metrics.json`` records one."""
        return self._run_info.get("seed")

    @property
    def reliability(self) -> dict[str, Any] | None:
        """The main student's reliability bins on the test split (classification runs)."""
        task = self.metrics.get("task")
        bins = nested_get(self.metrics, task, "reliability", "student") if task else None
        return (
            bins if bins is not None else self.metrics.get("reliability")
        )  # runs written before the envelope

    def student_entries(self) -> list[tuple[str, dict[str, Any], Any]]:
        """(row label, last-step test metrics, test accuracy at the best validation step)
        for every student of the run: the main one under the method's name, each peer a
        method trains beside it as ``method:peer``."""
        entries = [(self.method, nested_get(self.metrics, "last", "test") or {},
                    nested_get(self.metrics, "best_val", "test", "accuracy"))]  # fmt: skip
        for name, block in (self.metrics.get("students") or {}).items():
            if name != "student" and isinstance(block, dict):
                entries.append((f"{self.method}:{name}", nested_get(block, "last", "test") or {},
                                nested_get(block, "best_val", "test", "accuracy")))  # fmt: skip
        return entries

    def teacher_tests(self) -> dict[str, dict[str, Any]]:
        """Each teacher's own test metrics, by name (``teachers``; older runs: ``teacher``)."""
        named = {
            name: nested_get(block, "test")
            for name, block in (self.metrics.get("teachers") or {}).items()
        }
        if not named and isinstance(nested_get(self.metrics, "teacher", "test"), dict):
            named = {"teacher": self.metrics["teacher"]["test"]}
        return {name: test for name, test in named.items() if isinstance(test, dict)}

    @property
    def label(self) -> str:
        """A short label for legends: the name, plus the seed when known."""
        return self.name if self.seed is None else f"{self.name} (seed {self.seed})"


def nested_get(mapping: Any, *keys: str) -> Any:
    """``mapping[k1][k2]…``, or ``None`` as soon as a level is missing or not a dict."""
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _read_metrics(path: Path) -> dict[str, Any]:
    text = read_run_text(path)
    if text is None:
        raise DataError(f"{path}: metrics.json not found; is this a finished run folder?")
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    if not isinstance(metrics, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(metrics).__name__}")
    return metrics


def load_run(run_dir: str | Path) -> RunRecord:
    """Load a run folder: ``metrics.json`` (required), ``config.yaml`` and ``metrics.jsonl``.

    Raises :class:`distil.errors.DataError` naming the file when ``metrics.json`` is missing,
    when any of the three files cannot be parsed, or when one differs from the checksum its
    folder recorded when the run wrote it (:mod:`distil.run_folder`).
    """
    run_dir = Path(run_dir)
    return RunRecord(
        path=run_dir,
        # a run without its recipe can still be reported (unless its seal lists the recipe)
        config=read_run_config(run_dir / "config.yaml") or {},
        metrics=_read_metrics(run_dir / "metrics.json"),
        # a run that logged nothing still has final metrics to report
        history=read_step_log(run_dir / "metrics.jsonl"),
    )


def _summarise(method: str, metric_dicts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std of every summary metric over ``metric_dicts``; absent metrics → None."""
    row: dict[str, Any] = {"method": method, "n_seeds": len(metric_dicts)}
    # the usual metrics first, then whatever else a task reports (a regression's mse)
    others = sorted(
        {k for d in metric_dicts for k, v in d.items() if isinstance(v, int | float)}
        - set(SUMMARY_METRICS)
        - {"tokens"}
    )
    for metric in (*SUMMARY_METRICS, *others):
        values = [d[metric] for d in metric_dicts if d.get(metric) is not None]
        row[metric], row[f"{metric}_std"] = mean_std(values) if values else (None, None)
    return row


def _teacher_rows(runs: Iterable[RunRecord]) -> list[dict[str, Any]]:
    """One row per teacher name (``teacher``, or ``teacher:<name>`` when runs have several).

    Runs that share one teacher repeat its metrics verbatim; counting each copy would claim
    seeds the teacher never had, so identical entries count once."""
    distinct: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        for name, test in run.teacher_tests().items():
            distinct.setdefault(name, {}).setdefault(json.dumps(test, sort_keys=True), test)
    rows = []
    for name, tests in distinct.items():
        label = "teacher" if len(distinct) == 1 else f"teacher:{name}"
        row = _summarise(label, list(tests.values()))
        row["best_val_accuracy"] = row["best_val_accuracy_std"] = None
        rows.append(row)
    return rows


def summary_rows(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per method (first-seen order) with mean and std over its runs (seeds).

    Each row holds ``method``, ``n_seeds`` and, for every metric in
    :data:`SUMMARY_METRICS`, the mean ``<metric>`` and sample std ``<metric>_std`` of
    ``last.test`` over the runs that report it (``None`` when none does). The test accuracy
    at the best-validation step (``best_val.test.accuracy``) is kept apart as
    ``best_val_accuracy`` / ``best_val_accuracy_std``, because choosing the step on
    validation is a different protocol from taking the last step.

    When any run records teacher metrics, first rows (method ``"teacher"``, or
    ``"teacher:<name>"`` for several teachers) summarise each teacher's ``test`` block. A
    peer student a method trains beside the main one gets its own row, ``method:peer``.
    """
    entries_by_label: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for run in runs:
        for label, last_test, best_val in run.student_entries():
            entries_by_label.setdefault(label, []).append((last_test, best_val))

    rows: list[dict[str, Any]] = _teacher_rows(runs)
    for method, entries in entries_by_label.items():
        row = _summarise(method, [last_test for last_test, _ in entries])
        best_val_values = [value for _, value in entries if value is not None]
        row["best_val_accuracy"], row["best_val_accuracy_std"] = (
            mean_std(best_val_values) if best_val_values else (None, None)
        )
        rows.append(row)
    return rows
