"""A teacher whose outputs were computed ahead of time and are looked up by sample index.

Training then costs no teacher forward pass at all; this is the in-memory form of an offline
teacher cache. Batches must carry ``index`` (the datasets' ``__getitem__`` provides it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from distil.data.datasets import in_order
from distil.errors import ShapeError
from distil.outputs import ModelOutputs
from distil.teachers.base import Teacher


class PrecomputedTeacher:
    """Serves stored logits ``(num_samples, classes)`` by each batch's ``index``."""

    def __init__(self, logits: Tensor) -> None:
        self.logits = logits.float()
        self.device = logits.device
        self.dtype = torch.float32

    @classmethod
    def from_teacher(
        cls, teacher: Teacher, dataset: Dataset, batch_size: int = 512
    ) -> PrecomputedTeacher:
        """Run ``teacher`` once over ``dataset`` (in index order) and keep its logits."""
        chunks = [
            teacher.signal(batch).logits.float().cpu() for batch in in_order(dataset, batch_size)
        ]
        return cls(torch.cat(chunks))

    def signal(self, batch: dict[str, Any]) -> ModelOutputs:
        """The stored logits of the batch's samples."""
        index = batch["index"].to(self.logits.device)
        if int(index.max()) >= len(self.logits):
            raise ShapeError(
                f"batch index {int(index.max())} is out of range for the precomputed teacher "
                f"outputs {tuple(self.logits.shape)}: were they computed on another dataset?"
            )
        return ModelOutputs(logits=self.logits[index])
