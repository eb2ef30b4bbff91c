"""``python -m distil.bench.reproduce_docs``: rewrite the generated blocks of docs/reproduce.md
and the method pages from the saved ``benchmarks/results/reproduce.json`` (run from the
repository root). A module of its own, so that running it does not import the suite twice."""

from __future__ import annotations

from pathlib import Path

from distil.bench.harness import load_results
from distil.bench.reproduce import update_docs

if __name__ == "__main__":
    root = Path.cwd()
    for changed in update_docs(load_results("reproduce", root / "benchmarks" / "results"), root):
        print(f"updated {changed}")
