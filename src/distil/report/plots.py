"""The report's figures: loss curves, per-method bars, reliability diagrams (teachers beside
students) and teacher-hacking curves, as PNG files.

Figures are built with matplotlib's object-oriented API on an Agg canvas and never through
``pyplot``: nothing opens a window, the user's interactive backend is left alone, and no
figure stays registered in pyplot after saving (each is dropped when its function returns).
Every function takes the data it draws and a path, writes a PNG there and returns the path.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_loss_curves", "plot_method_bars", "plot_reliability", "plot_teacher_hacking"]

_DPI = 100
_PART_LINESTYLES = ("--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself; savefig then renders with Agg
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    figure.clear()
    return path


def _note_no_data(axes: Axes, what: str) -> None:
    axes.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=axes.transAxes)


def _loss_part_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Raw (unweighted) loss part keys ``loss/<part>`` in first-seen order."""
    names: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key.startswith("loss/") and "@" not in key:
                names.setdefault(key, None)
    return list(names)


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows that have both a step and a numeric ``key``."""
    points = [
        (row["step"], row[key])
        for row in rows
        if row.get("step") is not None and isinstance(row.get(key), (int, float))
    ]
    return [step for step, _ in points], [value for _, value in points]


def plot_loss_curves(
    history_by_run: Mapping[str, Sequence[dict[str, Any]]], path: str | Path
) -> Path:
    """Training loss and each raw loss part vs step (left), validation accuracy (an LM's
    perplexity) vs step (right).

    ``history_by_run`` maps a legend label to the rows of a run's ``metrics.jsonl``. Each run
    gets one colour: the total loss is solid and every ``loss/<part>`` has its own dash
    style. The loss axis is logarithmic when every plotted value is positive, because the
    parts of a distillation loss often differ by orders of magnitude.
    """
    entries = sum(
        1 + len({k for row in rows for k in row if k.startswith("loss/") and "@" not in k})
        for rows in history_by_run.values()
    )
    figure = _new_figure(12.0, 4.5 + 0.09 * entries)  # room for the legends below the axes
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    # a language model validates perplexity, not accuracy
    validated = "accuracy"
    if not any("accuracy" in row for rows in history_by_run.values() for row in rows):
        validated = "perplexity"
    plotted_losses: list[float] = []
    plotted_accuracy = False
    for run_index, (label, rows) in enumerate(history_by_run.items()):
        colour = f"C{run_index % 10}"
        train_rows = [row for row in rows if row.get("kind") == "train"]
        steps, losses = _series(train_rows, "loss")
        if steps:
            loss_axes.plot(steps, losses, color=colour, linestyle="-", label=f"{label}: loss")
            plotted_losses += losses
        for part_index, part in enumerate(_loss_part_names(train_rows)):
            steps, values = _series(train_rows, part)
            if steps:
                linestyle = _PART_LINESTYLES[part_index % len(_PART_LINESTYLES)]
                loss_axes.plot(
                    steps, values, color=colour, linestyle=linestyle, label=f"{label}: {part}"
                )
                plotted_losses += values
        val_rows = [
            row
            for row in rows
            if row.get("kind") == "eval" and row.get("split", "val") == "val"
            and "student" not in row  # peers' rows belong to their own curves
        ]  # fmt: skip
        steps, accuracies = _series(val_rows, validated)
        if steps:
            accuracy_axes.plot(steps, accuracies, color=colour, marker=".", label=label)
            plotted_accuracy = True

    loss_axes.set(title="training loss", xlabel="step", ylabel="loss")
    if plotted_losses:
        if min(plotted_losses) > 0:
            loss_axes.set_yscale("log")
        # below the axes: a legend of every run × part would cover the curves
        loss_axes.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.14),
                         ncols=2)  # fmt: skip
    else:
        _note_no_data(loss_axes, "training log")
    accuracy_axes.set(title=f"validation {validated}", xlabel="step", ylabel=validated)
    if plotted_accuracy:
        accuracy_axes.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.14),
                             ncols=2)  # fmt: skip
    else:
        _note_no_data(accuracy_axes, "validation log")
    return _save(figure, path)


def plot_method_bars(rows: Sequence[dict[str, Any]], metric: str, path: str | Path) -> Path:
    """Bar chart of ``metric`` per method from summary rows, with ±1 std error bars.

    ``rows`` are :func:`distil.report.summary_rows` rows (``method``, ``n_seeds``,
    ``<metric>``, ``<metric>_std``). Methods without the metric are left out; each bar is
    annotated with its number of seeds.
    """
    present = [row for row in rows if row.get(metric) is not None]
    title = f"{metric} per method (mean ± std over seeds)"
    # wide enough for the whole title (about 0.09 inch per character at the default size)
    figure = _new_figure(max(4.0, 1.1 * len(present) + 2.0, 0.09 * len(title) + 1.0), 4.0)
    axes = figure.subplots()
    if present:
        positions = list(range(len(present)))
        means = [row[metric] for row in present]
        stds = [row.get(f"{metric}_std") or 0.0 for row in present]
        bars = axes.bar(
            positions,
            means,
            yerr=stds,
            capsize=4,
            color=[f"C{i % 10}" for i in positions],
        )
        axes.set_xticks(positions, [str(row["method"]) for row in present], rotation=20)
        labels = [f"n={row.get('n_seeds', '?')}" for row in present]
        axes.bar_label(bars, labels=labels, label_type="center", fontsize="small", color="white")
    else:
        _note_no_data(axes, metric)
    axes.set(title=title, ylabel=metric)
    return _save(figure, path)


def _draw_reliability(axes: Axes, bins: Mapping[str, Sequence[Any]], colour: str = "C0") -> None:
    lowers, uppers = bins.get("bin_lower", []), bins.get("bin_upper", [])
    accuracies, confidences = bins.get("accuracy", []), bins.get("confidence", [])
    # Empty bins carry None; they are gaps, not bins that were always wrong.
    filled = [i for i, value in enumerate(accuracies) if value is not None]
    axes.bar(
        [lowers[i] for i in filled],
        [accuracies[i] for i in filled],
        width=[uppers[i] - lowers[i] for i in filled],
        align="edge",
        edgecolor="black",
        color=colour,
        alpha=0.8,
        label="accuracy",
    )
    # The gap (Guo et al., 2017): from the bin's accuracy up or down to its mean confidence.
    with_gap = [i for i in filled if confidences[i] is not None]
    axes.bar(
        [lowers[i] for i in with_gap],
        [confidences[i] - accuracies[i] for i in with_gap],
        bottom=[accuracies[i] for i in with_gap],
        width=[uppers[i] - lowers[i] for i in with_gap],
        align="edge",
        edgecolor="C3",
        color="C3",
        alpha=0.3,
        hatch="//",
        label="gap to mean confidence",
    )
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")


def plot_reliability(
    reliability_by_label: Mapping[str, Mapping[str, Sequence[Any]]],
    path: str | Path,
    ece_by_label: Mapping[str, float | None] | None = None,
    teacher_labels: Collection[str] = (),
) -> Path:
    """Reliability diagrams, one subplot per label, up to four per row.

    Each ``reliability_by_label`` value is a :func:`distil.eval.reliability_bins` dict. Bars
    show the accuracy in each confidence bin, hatched bars the gap to the bin's mean
    confidence, and the dashed diagonal perfect calibration; a bar below the diagonal means
    over-confidence. When
    ``ece_by_label`` gives a label's ECE it goes in that subplot's title. Labels in
    ``teacher_labels`` are teachers: their bars are green and their titles say so, so a
    student's calibration can be read against the teacher it learnt from.
    """
    labels = list(reliability_by_label)
    n_columns = max(1, min(len(labels), 4))
    n_rows = max(1, math.ceil(len(labels) / n_columns))
    figure = _new_figure(3.6 * n_columns, 3.6 * n_rows + 0.5)  # + the legend below
    grid = figure.subplots(n_rows, n_columns, squeeze=False)
    all_axes = [axes for axes_row in grid for axes in axes_row]
    if not labels:
        _note_no_data(all_axes[0], "reliability data")
    for axes, label in zip(all_axes, labels, strict=False):  # spare axes stay blank
        is_teacher = label in teacher_labels
        _draw_reliability(axes, reliability_by_label[label], "C2" if is_teacher else "C0")
        ece = (ece_by_label or {}).get(label)
        title = f"{label} (teacher)" if is_teacher and "teacher" not in label else label
        axes.set_title(title if ece is None else f"{title}\nECE = {ece:.3f}", fontsize="small")
    if labels:  # one legend for all, below the diagrams: inside, it covers the bars
        # a student's panel names the bars (a teacher's are the same bars, in green)
        students = [i for i, label in enumerate(labels) if label not in teacher_labels]
        handles, names = all_axes[students[0] if students else 0].get_legend_handles_labels()
        figure.legend(handles, names, fontsize="x-small", loc="outside lower center", ncols=3)
    for axes in all_axes[len(labels) :]:
        axes.axis("off")
    return _save(figure, path)


def plot_teacher_hacking(
    curves_by_label: Mapping[str, Sequence[dict[str, Any]]],
    path: str | Path,
    detected_step_by_label: Mapping[str, int | None] | None = None,
) -> Path:
    """KL to the teacher (solid) and KL to the oracle (dashed) vs step, one colour per run.

    ``curves_by_label`` maps a legend label to a run's validation rows that carry
    ``teacher_kl`` and ``oracle_kl``. Teacher hacking is the two parting ways: the first
    still falling while the second rises; where the monitor saw it
    (``detected_step_by_label``), a dotted vertical line in the run's colour marks the step.
    """
    figure = _new_figure(9.0, 4.6 + 0.18 * 2 * len(curves_by_label))  # legend below the axes
    axes = figure.subplots()
    for index, (label, rows) in enumerate(curves_by_label.items()):
        colour = f"C{index % 10}"
        for key, linestyle, what in (("teacher_kl", "-", "KL to teacher"),
                                     ("oracle_kl", "--", "KL to oracle")):  # fmt: skip
            steps, values = _series(rows, key)
            axes.plot(steps, values, color=colour, linestyle=linestyle, marker=".",
                      label=f"{label}: {what}")  # fmt: skip
        step = (detected_step_by_label or {}).get(label)
        if step is not None:
            axes.axvline(step, color=colour, linestyle=":", linewidth=2,
                         label=f"{label}: hacking detected at step {step}")  # fmt: skip
    axes.set(title="teacher hacking: distance to the teacher and to the oracle",
             xlabel="step", ylabel="KL(· ‖ student), nats per token")  # fmt: skip
    if curves_by_label:
        axes.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2)
    else:
        _note_no_data(axes, "teacher/oracle distances")
    return _save(figure, path)
