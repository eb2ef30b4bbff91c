"""Benchmarks as code: each suite writes ``benchmarks/results/<suite>.json`` and a plot."""

from distil.bench import (  # noqa: F401  (registers the suites)
    classic,
    diswot,
    features,
    fidelity,
    hacking,
    llm,
    losses,
    overhead,
    privacy,
    reproduce,
)  # fmt: skip
from distil.bench.harness import (
    SUITES,
    SuiteResult,
    load_results,
    pivot_table,
    run_suite,
    summary_table,
)

__all__ = ["SUITES", "SuiteResult", "load_results", "pivot_table", "run_suite", "summary_table"]
