"""The ``reproduce`` plot: each method's gain over the student alone, one panel per task.

Accuracies from 90 to 97 % drawn from zero hide the one-point gaps the suite is about, so each
bar is a method's last-step test accuracy minus the student alone's mean (percentage points,
mean ± std over seeds), coloured by whether the gap is beyond two standard deviations; the
teacher's own gap marks how much there was to gain.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from distil.bench.harness import Row

#: verdict (:func:`distil.bench.reproduce.direction`) → (colour, legend label)
VERDICT_STYLE = {
    "+": ("#2ca02c", "better than the student alone (≥ 2 std)"),
    "≈": ("#7f7f7f", "within 2 std of the student alone"),
    "−": ("#d62728", "worse than the student alone (≥ 2 std)"),
}

#: the left edge of a panel (points below the student alone); lower bars are cut and labelled
FLOOR = -6.0


def plot_gains(rows: list[Row], path: Path) -> None:
    """Write the gain-over-the-student plot of ``rows`` (the suite's JSON rows) to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from distil.bench.reproduce import accuracies, direction

    tasks = list(dict.fromkeys(r["task"] for r in rows if r["metric"] == "accuracy"))
    methods = [m for m in dict.fromkeys(r["method"] for r in rows if r["metric"] == "accuracy")
               if m != "supervised"]  # fmt: skip
    figure = Figure(figsize=(4.2 * max(1, len(tasks)) + 3.2, 0.32 * len(methods) + 1.6),
                    layout="constrained")  # fmt: skip
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, max(1, len(tasks)), sharey=True, squeeze=False)[0]
    positions = {method: index for index, method in enumerate(methods)}
    for axes, task in zip(panels, tasks, strict=False):  # no tasks: one empty panel
        student = accuracies(rows, task, "supervised")
        base = statistics.fmean(student) if student else 0.0
        for method in methods:
            ours = accuracies(rows, task, method)
            if not ours:
                continue
            gain = 100 * (statistics.fmean(ours) - base)
            spread = 100 * statistics.stdev(ours) if len(ours) > 1 else 0.0
            colour = VERDICT_STYLE.get(direction(ours, student), ("#1f77b4", ""))[0]
            y = positions[method]
            if gain < FLOOR:
                axes.barh(y, FLOOR, color=colour, height=0.7, hatch="//", edgecolor="white")
                label = f"{gain:.1f} ± {spread:.1f}".replace("-", "−")
                axes.text(FLOOR * 0.95, y, label, va="center", ha="left", color="white",
                          fontsize=8, fontweight="bold")  # fmt: skip
            else:
                axes.barh(y, gain, xerr=spread, color=colour, capsize=2, height=0.7)
        if len(student) > 1:  # the student's own seed spread, for scale, behind the bars
            band = 100 * statistics.stdev(student)
            axes.axvspan(-band, band, color="#bbbbbb", alpha=0.35, lw=0, zorder=0)
        teacher = accuracies(rows, task, "teacher", "teacher_accuracy")
        if teacher:
            axes.axvline(100 * (teacher[0] - base), color="black", ls="--", lw=1)
        axes.axvline(0, color="black", lw=0.8)
        left, right = axes.get_xlim()
        axes.set_xlim(max(left, FLOOR), right)
        axes.set_title(f"{task}\nstudent alone {100 * base:.1f} %", fontsize=10)
        axes.set_xlabel("gain in test accuracy (points)")
        axes.grid(axis="x", alpha=0.3)
    panels[0].set_yticks(range(len(methods)), methods, fontsize=9)
    panels[0].invert_yaxis()
    handles = [Patch(color=colour, label=label) for colour, label in VERDICT_STYLE.values()]
    handles += [Patch(color="#bbbbbb", alpha=0.35, label="± 1 std of the student alone"),
                Line2D([], [], color="black", ls="--", lw=1, label="the teacher's gain")]  # fmt: skip
    figure.legend(handles=handles, loc="outside right upper", fontsize=8)
    figure.suptitle("reproduce: last-step test accuracy minus the student alone's "
                    "(mean ± std over seeds)", fontsize=11)  # fmt: skip
    figure.savefig(path, dpi=120)
