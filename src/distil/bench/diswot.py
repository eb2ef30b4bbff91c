"""``diswot``: does the training-free DisWOT ranking predict distilled accuracy?

The candidates of the ``search-mnist`` recipe are scored without training, then each is
distilled with the recipe's ``kd`` setting and tested. Rows: each candidate's
``diswot_score`` and ``accuracy``, and one ``kendall_tau`` between the two rankings (the
number the paper reports).
"""

from __future__ import annotations

from pathlib import Path
from tempfile import TemporaryDirectory

from distil.bench.harness import SUITES, Row, Suite, plot_grouped_bars
from distil.config import load_config
from distil.pipeline import run
from distil.search import kendall_tau, rank_candidates
from distil.tasks import task_for

RECIPE = "search-mnist"


def collect(quick: bool) -> list[Row]:
    """Score the candidates, distil each, and correlate."""
    overrides = ["train.progress=false", "output.report=false", "train.balance_every=0"]
    if quick:
        overrides += ["train.epochs=1", "teacher.pretrain.epochs=2", "search.repeats=1"]
    config = load_config(RECIPE, overrides)
    data = task_for(config).load_data()
    ranked = rank_candidates(config, data)
    if quick:
        ranked = ranked[:3]
    rows: list[Row] = []
    accuracies, scores = [], []
    with TemporaryDirectory(prefix="distil-bench-diswot-") as scratch:
        for index, candidate in enumerate(ranked):
            candidate_config = config.model_copy(update={
                "student": candidate.student,
                "output": config.output.model_copy(update={"dir": str(Path(scratch) / str(index))}),
            })  # fmt: skip
            accuracy = run(candidate_config, data=data).metrics["last"]["test"]["accuracy"]
            accuracies.append(accuracy)
            scores.append(candidate.score)
            base = {"suite": "diswot", "task": "mnist", "method": candidate.label, "seed": 0,
                    "parameters": candidate.parameters}  # fmt: skip
            rows.append({**base, "metric": "diswot_score", "value": candidate.score})
            rows.append({**base, "metric": "accuracy", "value": accuracy})
    rows.append({"suite": "diswot", "task": "mnist", "method": "diswot", "seed": 0,
                 "metric": "kendall_tau", "value": kendall_tau(scores, accuracies),
                 "candidates": len(ranked)})  # fmt: skip
    return rows


def plot(rows: list[Row], path: Path) -> None:
    """Distilled accuracy per candidate, in DisWOT's order (best score first)."""
    plot_grouped_bars([r for r in rows if r["metric"] == "accuracy"], "accuracy", path,
                      "diswot: distilled accuracy, candidates in DisWOT order")  # fmt: skip


SUITES.register("diswot")(Suite("diswot", collect, plot))
