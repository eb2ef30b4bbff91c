"""Evaluation sharded over the run's processes, with metrics identical to one process.

Under ``accelerate launch`` every rank would otherwise score the whole validation or test
split: the same work ``world`` times over. Here each rank takes every ``world``-th batch of
the split in index order (Accelerate's own ``prepare_data_loader``; the last, uneven round is
padded with samples from the start so every rank runs the same number of collectives), and
each batch's per-sample results are gathered with ``Accelerator.gather_for_metrics``, which
drops those padding duplicates. Gathered batches arrive in index order, so the split's
per-sample results equal one process's and the metrics are computed from them as before.

With no accelerator, or one process, the split is read with :func:`distil.data.in_order`
exactly as before (nothing gathered, nothing padded).

Every function here is collective when sharded: every rank must call it, in the same order.
Nothing draws from the global RNG (the loader keeps ``in_order``'s own generator and no RNG
is synchronised), so evaluation mid-training never shifts the training random stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from torch.utils.data import Dataset

from distil.data.datasets import in_order


def is_sharded(accelerator: Accelerator | None) -> bool:
    """Whether evaluation is split over several processes."""
    return accelerator is not None and accelerator.num_processes > 1


def scoring_batches(
    dataset: Dataset, batch_size: int, accelerator: Accelerator | None = None
) -> Iterable[dict[str, Any]]:
    """This rank's batches of ``dataset`` in index order (all of them when not sharded)."""
    loader = in_order(dataset, batch_size)
    if not is_sharded(accelerator):
        return loader
    return prepare_data_loader(
        loader,
        num_processes=accelerator.num_processes,
        process_index=accelerator.process_index,
        put_on_device=False,
        rng_types=None,  # synchronising RNGs would draw from (and shift) the training stream
        dispatch_batches=False,
        even_batches=True,
    )


def gather_scores(accelerator: Accelerator | None, scores: Any) -> Any:
    """Per-sample ``scores`` (tensors, or a dict of them, first dimension = batch) of every
    rank for the current batch, padding duplicates dropped; unchanged when not sharded.

    Call once per batch of :func:`scoring_batches`, on every rank, even for a batch with
    nothing to score (a skipped call would leave the other ranks waiting).
    """
    if not is_sharded(accelerator):
        return scores
    return accelerator.gather_for_metrics(scores)
