"""The teacher-hacking monitor (Tiapkin et al., "On Teacher Hacking in Language Model
Distillation", 2025).

A teacher is only a proxy of the true distribution. Trained long enough on a fixed set of
teacher outputs, a student keeps moving *closer to the teacher* while moving *away from the
truth* — it fits the teacher's errors. With an oracle model (or a held-out proxy of the
truth) the symptom is visible: over recent evaluations the distance to the teacher falls
while the distance to the oracle rises. The monitor fits a least-squares trend to each over
a sliding window and fires when the first slopes down and the second up, each by more than
``tolerance`` (relative change across the window) so noise alone does not trigger it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distil.jsonl import read_json_lines

log = logging.getLogger("distil")


def relative_trend(values: list[float]) -> float:
    """Least-squares slope over the window × its length, relative to the window's mean: the
    fitted fractional change from its first to its last point."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    slope = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values)) / sum(
        (i - mean_x) ** 2 for i in range(n)
    )
    return slope * (n - 1) / max(abs(mean_y), 1e-12)


@dataclass
class TeacherHackingMonitor:
    """Feed it (step, distance to teacher, distance to oracle) after each evaluation."""

    window: int = 4
    tolerance: float = 0.01
    #: what ``step`` counts, for the warning: optimizer steps, or evaluations (a validator
    #: is not told the step it runs at)
    unit: str = "step"
    history: list[tuple[int, float, float]] = field(default_factory=list)
    fired_at: int | None = None

    def update(self, step: int, teacher_distance: float, oracle_distance: float) -> bool:
        """Record one evaluation; True when the window now shows teacher hacking (warns once)."""
        self.history.append((step, teacher_distance, oracle_distance))
        recent = self.history[-self.window :]
        if len(recent) < self.window:
            return False
        teacher_trend = relative_trend([t for _, t, _ in recent])
        oracle_trend = relative_trend([o for _, _, o in recent])
        hacking = teacher_trend < -self.tolerance and oracle_trend > self.tolerance
        if hacking and self.fired_at is None:
            self.fired_at = step
            log.warning(
                "teacher hacking (at %s %d): over the last %d evaluations the distance to the "
                "teacher fell %.1f%% while the distance to the oracle rose %.1f%% — the student "
                "is fitting the teacher's errors. Stop earlier (best checkpoint), or use more "
                "diverse / on-policy data.",
                self.unit, step, self.window, -100 * teacher_trend, 100 * oracle_trend,
            )  # fmt: skip
        return hacking


def teacher_hacking_verdict(metrics_jsonl: Path, *, window: int = 4) -> dict[str, Any] | None:
    """Replay a run's validation rows through the monitor; None without an oracle."""
    rows = [
        row
        for row in (read_json_lines(metrics_jsonl) if metrics_jsonl.is_file() else [])
        if row.get("kind") == "eval"
        and "student" not in row  # the main student's rows
        and "oracle_kl" in row
        and "teacher_kl" in row
    ]
    if not rows:
        return None
    monitor = TeacherHackingMonitor(window=window)
    monitor.history = []
    for row in rows:
        monitor.update(int(row["step"]), float(row["teacher_kl"]), float(row["oracle_kl"]))
    teacher = [float(r["teacher_kl"]) for r in rows]
    oracle = [float(r["oracle_kl"]) for r in rows]
    return {
        "detected": monitor.fired_at is not None,
        "first_step": monitor.fired_at,
        "teacher_kl": {"first": teacher[0], "min": min(teacher), "last": teacher[-1]},
        "oracle_kl": {"first": oracle[0], "min": min(oracle), "last": oracle[-1]},
    }
