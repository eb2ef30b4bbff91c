"""The benchmark harness: suites produce rows, the harness writes them as JSON and a plot.

A row is ``{suite, task, method, metric, value, seed, …}``; the JSON file
``<out>/<suite>.json`` holds the list of rows and a few facts about the machine. Docs and
README quote these files, never numbers typed by hand.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from distil.errors import DataError
from distil.eval.aggregate import mean_std
from distil.registry import Registry

Row = dict[str, Any]


@dataclass
class SuiteResult:
    """Where a suite's results went, and a markdown table of them."""

    rows: list[Row]
    json_path: Path
    plot_path: Path
    table: str


@dataclass
class Suite:
    """A named benchmark: ``collect(quick) -> rows`` and ``plot(rows, path)``."""

    name: str
    collect: Callable[[bool], list[Row]]
    plot: Callable[[list[Row], Path], None]


SUITES: Registry[Suite] = Registry("benchmark suite")


def run_suite(name: str, out: Path, *, quick: bool = False) -> SuiteResult:
    """Run suite ``name`` and write ``<out>/<name>.json`` and ``<out>/<name>.png``."""
    return write_results(name, SUITES.get(name).collect(quick), out, quick=quick)


def write_results(name: str, rows: list[Row], out: Path, *, quick: bool = False) -> SuiteResult:
    """Write suite ``name``'s rows as ``<out>/<name>.json`` (atomically) and its plot."""
    suite = SUITES.get(name)
    out.mkdir(parents=True, exist_ok=True)
    json_path, plot_path = out / f"{name}.json", out / f"{name}.png"
    payload = {
        "suite": name,
        "quick": quick,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "rows": rows,
    }
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(json_path)
    suite.plot(rows, plot_path)
    return SuiteResult(
        rows=rows, json_path=json_path, plot_path=plot_path, table=summary_table(rows)
    )


def load_results(name: str, out: Path) -> list[Row]:
    """The rows a previous run of suite ``name`` saved in ``out``."""
    path = out / f"{name}.json"
    try:
        return json.loads(path.read_text())["rows"]
    except FileNotFoundError:
        raise DataError(f"{path}: no saved results; run `distil bench {name}` first") from None
    except (json.JSONDecodeError, KeyError) as error:
        raise DataError(f"{path}: not a distil benchmark results file ({error})") from None


def summary_table(rows: list[Row]) -> str:
    """Markdown: one line per (task, method), one "mean ± std (over seeds)" column per metric.

    Rows that carry a ``step`` are points of a curve: plotted, not tabulated."""
    rows = [row for row in rows if "step" not in row]
    metrics = list(dict.fromkeys(row["metric"] for row in rows))
    cells: dict[tuple[str, str], dict[str, list[float]]] = {}
    for row in rows:
        cells.setdefault((row["task"], row["method"]), {}).setdefault(row["metric"], []).append(
            row["value"]
        )
    lines = [
        "| task | method | n | " + " | ".join(metrics) + " |",
        "|:---|:---|---:|" + "---:|" * len(metrics),
    ]
    for (task, method), by_metric in cells.items():
        n = max(len(values) for values in by_metric.values())
        shown = [_mean_std_text(by_metric[m]) if m in by_metric else "—" for m in metrics]
        lines.append(f"| {task} | {method} | {n} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def pivot_table(rows: list[Row], metric: str) -> str:
    """Markdown: one line per method, one "mean ± std" column per task, for one metric."""
    data = grouped(rows, metric)
    tasks = list(data)
    methods = list(dict.fromkeys(m for per_task in data.values() for m in per_task))
    lines = [f"| method | {' | '.join(tasks)} |", "|:---|" + "---:|" * len(tasks)]
    for method in methods:
        cells = [
            f"{data[t][method][0]:.4g} ± {data[t][method][1]:.2g}" if method in data[t] else "—"
            for t in tasks
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mean_std_text(values: list[float]) -> str:
    # Significant digits, not fixed decimals: step times are milliseconds, accuracies ~0.9.
    mean, std = mean_std(values)
    return f"{mean:.4g} ± {std:.2g}"


def grouped(rows: list[Row], metric: str) -> dict[str, dict[str, tuple[float, float]]]:
    """``{task: {method: (mean, std)}}`` of one metric, keeping first-seen order."""
    values: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        if row["metric"] == metric:
            values.setdefault(row["task"], {}).setdefault(row["method"], []).append(row["value"])
    return {
        task: {method: mean_std(v) for method, v in methods.items()}
        for task, methods in values.items()
    }


def plot_grouped_bars(rows: list[Row], metric: str, path: Path, title: str) -> None:
    """Bars of ``metric`` per task (groups) and method (colours), std as error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = grouped(rows, metric)
    methods = list(dict.fromkeys(m for per_task in data.values() for m in per_task))
    # axes wide enough for the whole title, the legend outside them in as many columns as
    # keep it within the figure's height, one colour per method (tab20 pairs beyond ten)
    from matplotlib import colormaps

    columns = math.ceil(len(methods) / 14)
    axes_inches = max(1.2 + 1.6 * max(1, len(data)), 0.085 * len(title) + 0.8)
    legend_inches = columns * (0.6 + 0.065 * max(len(str(m)) for m in methods))
    width_inches = axes_inches + legend_inches
    height_inches = max(3.6, 0.24 * math.ceil(len(methods) / columns) + 0.9)
    figure = Figure(figsize=(width_inches, height_inches), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    palette = colormaps["tab10" if len(methods) <= 10 else "tab20"].colors
    width = 0.8 / max(1, len(methods))
    for offset, method in enumerate(methods):
        xs = [i + offset * width for i in range(len(data))]
        means = [data[task].get(method, (float("nan"), 0.0))[0] for task in data]
        stds = [data[task].get(method, (0.0, 0.0))[1] for task in data]
        colour = palette[offset % len(palette)]
        axes.bar(xs, means, width, yerr=stds, capsize=3, label=method, color=colour)
    axes.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(data))], list(data))
    axes.set_ylabel(metric)
    axes.set_title(title)  # the axes are sized to hold it whole
    figure.legend(fontsize=8, loc="outside right upper", ncols=columns)
    figure.savefig(path, dpi=120)
