"""The summary table as GitHub markdown, for READMEs, PR comments and the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distil.eval.aggregate import format_mean_std

__all__ = ["MISSING", "format_cell", "markdown_table"]

#: What a cell shows when a method does not report a metric (e.g. agreement without teacher).
MISSING = "—"


def format_cell(row: dict[str, Any], metric: str, digits: int = 3) -> str:
    """``"mean ± std"`` for ``metric`` in a summary row, or :data:`MISSING` when absent."""
    mean = row.get(metric)
    if mean is None:
        return MISSING
    std = row.get(f"{metric}_std")
    return f"{mean:.{digits}f}" if std is None else format_mean_std(mean, std, digits=digits)


#: The columns of a classifier's table.
CLASSIFICATION_COLUMNS = ("accuracy", "ece", "agreement", "nll")


def markdown_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    digits: int = 3,
) -> str:
    """Render summary rows (see :func:`distil.report.summary_rows`) as a markdown table.

    Columns: ``method``, ``n`` (seeds), then one ``mean ± std`` column per entry of
    ``columns`` — by default a classifier's (accuracy, ECE, agreement, NLL) when the rows
    have accuracy, else every metric some row reports; missing values show as ``—``.
    """
    if columns is None:
        columns = default_columns(rows)
    header = ["method", "n", *columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "|:---|---:|" + "---:|" * len(columns),
    ]
    for row in rows:
        cells = [str(row.get("method", MISSING)), str(row.get("n_seeds", MISSING))]
        cells += [format_cell(row, metric, digits) for metric in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def default_columns(rows: Sequence[dict[str, Any]]) -> Sequence[str]:
    """A classifier's columns when the rows have accuracy, else every metric some row has."""
    if any(row.get("accuracy") is not None for row in rows):
        return CLASSIFICATION_COLUMNS
    keys = list(dict.fromkeys(k for row in rows for k in row if k not in ("method", "n_seeds")))
    return [k for k in keys if not k.endswith("_std") and any(r.get(k) is not None for r in rows)]
