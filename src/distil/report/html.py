"""One self-contained HTML report for one run or a comparison of many.

The report holds the summary table (mean ± std over seeds), the figures — training curves,
test accuracy (an LM's perplexity) per method, and for classifiers the reliability diagrams
of teachers and students; for an LM run with an oracle its teacher-hacking curves, and the
monitor's verdict — embedded as base64 ``data:`` URIs (so the file can be mailed or attached to a CI run on its own), and a
short section per run with its resolved config. Loading runs and computing the table live
in ``runs.py``; drawing lives in ``plots.py``; this module only assembles them into the
jinja2 template ``templates/report.html``.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import yaml

from distil.errors import DistilError
from distil.report.diagnostics import (
    detected_step,
    hacking_curves,
    hacking_rows,
    teacher_calibration,
)
from distil.report.markdown import MISSING, format_cell
from distil.report.plots import (
    plot_loss_curves,
    plot_method_bars,
    plot_reliability,
    plot_teacher_hacking,
)
from distil.report.runs import RunRecord, load_run, nested_get, summary_rows

__all__ = ["write_report"]

#: Summary-table columns: (row key, heading). Best-validation accuracy comes last, apart.
_TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("ece", "ECE"),
    ("agreement", "agreement"),
    ("nll", "NLL"),
    ("teacher_kl", "KL(teacher ‖ student)"),
    ("best_val_accuracy", "accuracy at best validation step"),
    ("perplexity", "perplexity"),
    ("top1_agreement", "top-1 agreement"),
)


def _load_template() -> jinja2.Template:
    text = (
        resources.files("distil.report")
        .joinpath("templates", "report.html")
        .read_text(encoding="utf-8")
    )
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(text)


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _unique_labels(runs: Sequence[RunRecord]) -> list[str]:
    """Legend labels per run, numbered when two runs would otherwise share one."""
    seen: dict[str, int] = {}
    labels = []
    for run in runs:
        label = run.label
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return labels


def _figures(
    runs: Sequence[RunRecord], labels: Sequence[str], rows: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """Draw the figures into a scratch folder and return them as (title, data URI)."""
    history_by_run = {label: run.history for label, run in zip(labels, runs, strict=True)}
    reliability_by_label = {
        label: run.reliability
        for label, run in zip(labels, runs, strict=True)
        if isinstance(run.reliability, dict)
    }
    ece_by_label = {
        label: nested_get(run.metrics, "last", "test", "ece")
        for label, run in zip(labels, runs, strict=True)
    }
    # the teachers first, so each student's calibration is read against theirs
    teacher_bins, teacher_eces = teacher_calibration(runs, labels)
    reliability_by_label = {**teacher_bins, **reliability_by_label}
    ece_by_label = {**teacher_eces, **ece_by_label}
    curves = {label: hacking_curves(run) for label, run in zip(labels, runs, strict=True)}
    curves = {label: rows for label, rows in curves.items() if rows}
    with tempfile.TemporaryDirectory(prefix="distil-report-") as scratch:
        scratch_dir = Path(scratch)
        # a language model's bars show its perplexity: it has no accuracy to show
        bar_metric = next((m for m in ("accuracy", "perplexity")
                           if any(row.get(m) is not None for row in rows)), "accuracy")  # fmt: skip
        paths = [
            ("Training curves", plot_loss_curves(history_by_run, scratch_dir / "loss.png")),
            (
                f"Test {bar_metric} per method",
                plot_method_bars(rows, bar_metric, scratch_dir / "bars.png"),
            ),
        ]
        if reliability_by_label:  # classifiers (an LM has no reliability bins)
            paths.append((
                "Reliability diagrams on the test set at the last step: each teacher (green) "
                "beside the students (ECE in the titles)",
                plot_reliability(reliability_by_label, scratch_dir / "reliability.png",
                                 ece_by_label, teacher_labels=teacher_bins),
            ))  # fmt: skip
        if curves:  # an LM run evaluated against an oracle
            detected = {label: detected_step(run) for label, run in zip(labels, runs, strict=True)}
            paths.append((
                "Teacher hacking: KL to the teacher and to the oracle on held-out data at each "
                "evaluation; a dotted line marks the step the monitor fired",
                plot_teacher_hacking(curves, scratch_dir / "hacking.png", detected),
            ))  # fmt: skip
        return [{"title": title, "src": _png_data_uri(path)} for title, path in paths]


def _run_section(run: RunRecord, label: str) -> dict[str, Any]:
    """What the template shows about one run: identity, key facts and the config as YAML."""
    run_info = run.metrics.get("run") or {}
    facts = {
        "method": run.method,
        "dataset": run_info.get("dataset") or nested_get(run.config, "data", "dataset"),
        "student": run_info.get("student") or nested_get(run.config, "student", "model"),
        "teacher": run_info.get("teacher") or nested_get(run.config, "teacher", "model"),
        "seed": run.seed,
        "last step": nested_get(run.metrics, "last", "step"),
        "best validation step": nested_get(run.metrics, "best_val", "step"),
        "train seconds": run.metrics.get("train_seconds"),
    }
    config_yaml = (
        yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True)
        if run.config
        else "(no config.yaml)"
    )
    return {
        "label": label,
        "path": str(run.path),
        "facts": {key: MISSING if value is None else value for key, value in facts.items()},
        "config_yaml": config_yaml,
    }


def write_report(run_dirs: Sequence[str | Path], out_path: str | Path, title: str) -> Path:
    """Write one self-contained HTML report for the runs in ``run_dirs``; return its path.

    Works for a single run (``report.html`` in its own folder) and for comparisons: the
    summary table groups runs by method and shows mean ± std over seeds, the figures are
    embedded as PNG ``data:`` URIs, and each run gets a section with its resolved config.
    Raises :class:`distil.errors.DataError` when a run folder cannot be read.
    """
    if not run_dirs:
        raise DistilError("write_report needs at least one run folder")
    runs = [load_run(run_dir) for run_dir in run_dirs]
    labels = _unique_labels(runs)
    rows = summary_rows(runs)
    # Only the columns some run reports: classifiers have no perplexity, LMs no accuracy.
    columns = [(k, h) for k, h in _TABLE_COLUMNS if any(row.get(k) is not None for row in rows)]
    table_rows = [
        {
            "method": row["method"],
            "n_seeds": row["n_seeds"],
            "cells": [format_cell(row, key) for key, _ in columns],
        }
        for row in rows
    ]
    html = _load_template().render(
        title=title,
        headings=[heading for _, heading in columns],
        table_rows=table_rows,
        figures=_figures(runs, labels, rows),
        hacking=hacking_rows(runs, labels),
        runs=[_run_section(run, label) for run, label in zip(runs, labels, strict=True)],
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(html, encoding="utf-8")
    return out_path
