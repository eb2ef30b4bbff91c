"""``losses``: every catalogue loss as KD's divergence, and their memory at LLM vocabularies.

Quality: the ``kd`` recipe of each classic task with ``method.divergence`` swapped for every
registered loss (same T, α, student, teacher, schedule), 3 seeds, next to ``supervised``,
and the methods ``taid``, ``tgeo`` and ``pseudo_label`` on the same recipes.
Rows ``method = <loss>`` with the last-step test metrics. One shared setting is a drop-in
comparison, not each paper's tuned recipe: read a loss that loses here as "not a free
replacement for forward KL", not as "worse".

Memory: each per-sample loss's forward + backward on ``(B·T, V) = (512, 50 000)`` float32
logits, in a fresh process, chunked (default) and naive; ``metric = peak_memory_buffers`` is
the peak extra memory as a multiple of one ``(B·T × V)`` float32 buffer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from distil import losses
from distil.bench.harness import SUITES, Row, Suite, plot_grouped_bars
from distil.bench.recipe_runs import recipe_rows

TASKS = ("digits", "mnist", "mnist1d")
BATCH_LEVEL = {"sinkhorn", "dist"}
#: Methods of the catalogue issue that are not a divergence swap, at the same T (and α).
METHOD_VARIANTS = {
    "taid": ["method={name: taid, temperature: 4.0, alpha: 0.9}"],
    "tgeo": ["method={name: tgeo, temperature: 4.0}"],
    "pseudo_label": ["method={name: pseudo_label, alpha: 0.9}"],
}  # compare whole batches; not run at LLM scale
MEMORY_SHAPE = (512, 50_000)
# glibc otherwise keeps freed blocks of a growing size in the heap, so the resident set would
# count memory the loss had already released; a fixed mmap threshold returns every block.
EXACT_RSS = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def quality_rows(quick: bool) -> list[Row]:
    """Train each task's student with every loss (and alone)."""
    variants = {"supervised": ["method={name: supervised}"]}
    variants |= {name: [f"method.divergence={name}"] for name in losses.LOSSES.names()}
    variants |= METHOD_VARIANTS
    tasks = TASKS[:1] if quick else TASKS
    return recipe_rows(
        "losses", tasks, variants, quick=quick, extra_overrides=["train.balance_every=0"]
    )


def memory_rows(quick: bool) -> list[Row]:
    """Peak memory of each per-sample loss, chunked and naive, each in its own process."""
    rows_count, vocab = (128, 20_000) if quick else MEMORY_SHAPE
    names = [n for n in losses.LOSSES.names() if n not in BATCH_LEVEL]
    if quick:
        names = names[:2]
    rows: list[Row] = []
    for name in names:
        for mode in ("chunked", "naive"):
            probe = subprocess.run(
                [sys.executable, "-m", "distil.bench.loss_memory", name, mode, str(rows_count), str(vocab)],
                capture_output=True, text=True, check=True, env={**os.environ, **EXACT_RSS},
            )  # fmt: skip
            result = json.loads(probe.stdout)
            rows.append({"suite": "losses", "task": f"memory {rows_count}x{vocab}",
                         "method": f"{name} ({mode})", "metric": "peak_memory_buffers",
                         "value": result["peak_buffers"], "seed": 0})  # fmt: skip
    return rows


def collect(quick: bool) -> list[Row]:
    """Quality rows, then memory rows."""
    return quality_rows(quick) + memory_rows(quick)


def plot(rows: list[Row], path: Path) -> None:
    """Test accuracy per task and loss (the memory rows are in the JSON and the table)."""
    quality = [row for row in rows if row["metric"] == "accuracy"]
    plot_grouped_bars(
        quality, "accuracy", path, "losses: test accuracy with each loss as KD's divergence"
    )
    memory = [row for row in rows if row["metric"] == "peak_memory_buffers"]
    if memory:
        plot_grouped_bars(memory, "peak_memory_buffers", path.with_name(path.stem + "-memory.png"),
                          "losses: peak extra memory / one (B·T × V) fp32 buffer")  # fmt: skip


SUITES.register("losses")(Suite("losses", collect, plot))
