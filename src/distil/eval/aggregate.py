"""Summaries of one metric over several seeds: mean, spread and how to print them.

Results are reported as ``mean ± std`` over seeds, never as a single lucky run. The standard
deviation is the sample one (ddof = 1) because seeds are a sample of all possible seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["format_mean_std", "mean_std"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of ``values``.

        mean = (1/n) Σ v_i,    std = sqrt( Σ (v_i − mean)² / (n − 1) )

    With a single value the spread is unknown rather than infinite; we report ``0.0`` so a
    one-seed run still prints as ``x ± 0.000``.
    """
    if len(values) == 0:
        raise ValueError("mean_std needs at least one value")
    floats = [float(v) for v in values]
    mean = math.fsum(floats) / len(floats)
    if len(floats) == 1:
        return mean, 0.0
    variance = math.fsum((v - mean) ** 2 for v in floats) / (len(floats) - 1)
    return mean, math.sqrt(variance)


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """Format a mean and its spread with a fixed number of decimals, e.g. ``"0.912 ± 0.004"``."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
