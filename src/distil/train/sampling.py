"""Deterministic, resumable, rank-sharded order of training samples.

Epoch ``e`` visits a permutation seeded by ``(seed, e)``; rank ``r`` of ``w`` takes every
``w``-th sample of it, so the ranks' micro-batches together form exactly the single-process
batch (DDP's averaged gradient then equals the single-process gradient). Resuming skips the
micro-batches an epoch already consumed. The permutation is trimmed to a multiple of ``w`` so
every rank runs the same number of steps (a rank waiting for a missing batch would hang).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Subset


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch, identical on every rank and every resume."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_samples, generator=generator)


class ShardedBatches:
    """Yields lists of sample indices: this rank's micro-batches of one epoch."""

    def __init__(
        self,
        num_samples: int,
        micro_batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_samples = num_samples
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.samples_per_rank = num_samples // world_size
        if self.samples_per_rank == 0:
            raise ValueError(
                f"{num_samples} training samples cannot be split over {world_size} processes"
            )

    def __len__(self) -> int:
        return math.ceil(self.samples_per_rank / self.micro_batch_size)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[list[int]]:
        """Micro-batches of ``epoch`` for this rank, starting after ``skip`` of them."""
        order = epoch_permutation(self.num_samples, self.seed, epoch)
        mine = order[: self.samples_per_rank * self.world_size][self.rank :: self.world_size]
        for start in range(skip * self.micro_batch_size, len(mine), self.micro_batch_size):
            yield mine[start : start + self.micro_batch_size].tolist()


def split_holdout(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """(train, holdout) with ``fraction`` of the samples held out, chosen by ``seed``.

    ``Subset`` keeps each sample's original ``index``, so outputs precomputed on the whole
    split still line up.
    """
    if fraction <= 0:
        return dataset, None
    count = max(1, round(len(dataset) * fraction))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed + 7919))
    return Subset(dataset, order[count:].tolist()), Subset(dataset, order[:count].tolist())


def step_groups(batches: list[list[int]], size: int) -> list[list[list[int]]]:
    """Micro-batches grouped per optimizer step (the epoch's last group may be shorter)."""
    return [batches[start : start + size] for start in range(0, len(batches), size)]
