"""What a finished run says about itself beyond its score: the teacher's calibration beside
the student's, the teacher-hacking curves and verdict of an LM run with an oracle, and the
side-by-side view ``distil eval`` prints (generalisation: how good the student is; fidelity:
how closely it follows its teacher — Stanton et al. 2021 show the two can part ways).

Everything here reads :class:`~distil.report.runs.RunRecord` objects or metric dicts and
returns plain data or text; drawing lives in ``plots.py``, the page in ``html.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from distil.report.runs import RunRecord, nested_get

__all__ = ["hacking_curves", "hacking_rows", "side_by_side", "teacher_calibration"]


def teacher_calibration(
    runs: Sequence[RunRecord], labels: Sequence[str]
) -> tuple[dict[str, Any], dict[str, float | None]]:
    """Each teacher's test reliability bins and ECE, by legend label.

    Runs that share a teacher store the same bins; they are drawn once, as ``teacher`` (or
    ``teacher:<name>`` when runs have several names). Teachers of one name that differ
    between runs (a comparison of teachers) each get the label ``teacher of <run label>``.
    """
    found: dict[str, dict[str, tuple[str, Any, Any]]] = {}  # name → {bins json: (run, bins, ece)}
    for run, label in zip(runs, labels, strict=True):
        task = run.metrics.get("task")
        bins_by_name = nested_get(run.metrics, task, "teacher_reliability") if task else None
        tests = run.teacher_tests()
        for name, bins in (bins_by_name or {}).items():
            if isinstance(bins, dict):
                ece = (tests.get(name) or {}).get("ece")
                found.setdefault(name, {}).setdefault(json.dumps(bins, sort_keys=True),
                                                      (label, bins, ece))  # fmt: skip
    reliability: dict[str, Any] = {}
    eces: dict[str, float | None] = {}
    for name, distinct in found.items():
        for run_label, bins, ece in distinct.values():
            base = "teacher" if len(found) == 1 else f"teacher:{name}"
            key = base if len(distinct) == 1 else f"{base} of {run_label}"
            reliability[key], eces[key] = bins, ece
    return reliability, eces


def hacking_curves(run: RunRecord) -> list[dict[str, Any]]:
    """The main student's validation rows that hold both KL to the teacher and to the oracle
    (an LM run evaluated against an oracle); empty otherwise."""
    return [
        row
        for row in run.history
        if row.get("kind") == "eval"
        and "student" not in row  # a peer's rows are its own
        and isinstance(row.get("teacher_kl"), int | float)
        and isinstance(row.get("oracle_kl"), int | float)
    ]


def _verdict(run: RunRecord) -> dict[str, Any] | None:
    task = run.metrics.get("task")
    verdict = nested_get(run.metrics, task, "teacher_hacking") if task else None
    return verdict if isinstance(verdict, dict) else None


def detected_step(run: RunRecord) -> int | None:
    """The step at which the run's teacher-hacking monitor fired, if it did."""
    verdict = _verdict(run)
    return verdict.get("first_step") if verdict and verdict.get("detected") else None


def _trajectory(block: Any) -> str:
    if not isinstance(block, dict) or any(block.get(k) is None for k in ("first", "min", "last")):
        return "—"
    return f"{block['first']:.3f} → min {block['min']:.3f} → {block['last']:.3f}"


def hacking_rows(runs: Sequence[RunRecord], labels: Sequence[str]) -> list[dict[str, str]]:
    """One row per run with curves: its verdict in words and both distances' trajectories."""
    rows = []
    for run, label in zip(runs, labels, strict=True):
        if not hacking_curves(run):
            continue
        verdict = _verdict(run)
        if verdict is None:
            said = "no verdict recorded"
        elif verdict.get("detected"):
            said = f"detected at step {verdict.get('first_step')}"
        else:
            said = "not detected"
        rows.append({
            "run": label, "verdict": said,
            "teacher_kl": _trajectory((verdict or {}).get("teacher_kl")),
            "oracle_kl": _trajectory((verdict or {}).get("oracle_kl")),
        })  # fmt: skip
    return rows


#: (key, label) of the student's generalisation and its fidelity to the teacher.
GENERALISATION = (("accuracy", "accuracy"), ("ece", "ECE"), ("nll", "NLL"),
                  ("perplexity", "perplexity"))  # fmt: skip
FIDELITY = (("agreement", "agreement (top-1)"), ("top1_agreement", "agreement (top-1)"),
            ("teacher_kl", "KL(teacher ‖ student)"), ("oracle_kl", "KL(oracle ‖ student)"))  # fmt: skip


def side_by_side(student: Mapping[str, Any], teacher: Mapping[str, Any] | None, split: str) -> str:
    """Two columns of text: generalisation (student, then teacher) | fidelity to the teacher.

    ``student`` is what a task's ``evaluate`` returns; ``teacher`` the teacher's own metrics
    on the same split (None when the run has no live teacher to score)."""
    left = [(f"student {label}", student[key]) for key, label in GENERALISATION
            if isinstance(student.get(key), int | float)]  # fmt: skip
    left += [(f"teacher {label}", teacher[key]) for key, label in GENERALISATION
             if teacher and isinstance(teacher.get(key), int | float)]  # fmt: skip
    right = [(label, student[key]) for key, label in FIDELITY
             if isinstance(student.get(key), int | float)]  # fmt: skip
    if not right:
        right = [("(no teacher to compare with)", None)]
    width_left = max(len(name) for name, _ in left) + 2 if left else 0
    width_right = max(len(name) for name, _ in right) + 2
    column = width_left + 8 + 4
    lines = [f"{'generalisation (' + split + ')':<{column}}fidelity to the teacher ({split})"]
    for index in range(max(len(left), len(right))):
        cell_left = (f"{left[index][0]:<{width_left}}{left[index][1]:>8.4f}"
                     if index < len(left) else "")  # fmt: skip
        name, value = right[index] if index < len(right) else ("", None)
        cell_right = f"{name:<{width_right}}{value:>8.4f}" if value is not None else name
        lines.append(f"{cell_left:<{column}}{cell_right}".rstrip())
    return "\n".join(lines)
