"""A teacher whose outputs were computed ahead of time and are looked up by sample index.

Training then costs no teacher forward pass at all; this is the in-memory form of an offline
teacher cache. It is exact only when the teacher and the inputs are deterministic (no
augmentation). Batches must carry ``index`` (the datasets' ``__getitem__`` provides it).

Indices only mean something for the dataset the outputs were computed on, so a checksum of
every sample's inputs is kept: asking about samples of another dataset (the validation split,
say) is an error instead of silently wrong logits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from distil.data.datasets import in_order
from distil.errors import ConfigError, DataError
from distil.outputs import ModelOutputs
from distil.teachers.base import Teacher


def input_checksums(inputs: Tensor | dict[str, Tensor]) -> Tensor:
    """One float64 number per sample summarising its inputs (a tensor or a dict of them)."""
    tensors = inputs.values() if isinstance(inputs, dict) else [inputs]
    return sum(t.reshape(t.shape[0], -1).double().sum(1) for t in tensors)


class PrecomputedTeacher:
    """Serves stored logits ``(num_samples, classes)`` by each batch's ``index``."""

    def __init__(self, logits: Tensor, checksums: Tensor) -> None:
        self.logits = logits.float()
        self.checksums = checksums.double()
        self.device = logits.device
        self.dtype = torch.float32

    @classmethod
    def from_teacher(
        cls, teacher: Teacher, dataset: Dataset, batch_size: int = 512
    ) -> PrecomputedTeacher:
        """Run ``teacher`` once over ``dataset`` (in index order) and keep its logits."""
        logits, checksums = [], []
        for batch in in_order(dataset, batch_size):
            logits.append(teacher.signal(batch).logits.float().cpu())
            checksums.append(input_checksums(batch["inputs"]).cpu())
        return cls(torch.cat(logits), torch.cat(checksums))

    def capture(self, layers: list[str]) -> None:
        """Precomputed outputs are logits only; feature methods need a live teacher."""
        if layers:
            raise ConfigError(
                "teacher.precompute: stored teacher outputs hold logits only, and this method "
                f"reads teacher features {layers}; set teacher.precompute=false"
            )

    def signal(self, batch: dict[str, Any]) -> ModelOutputs:
        """The stored logits of the batch's samples."""
        index = batch["index"].to(self.logits.device)
        if int(index.max()) >= len(self.logits):
            raise DataError(
                f"batch index {int(index.max())} is out of range for the precomputed teacher "
                f"outputs {tuple(self.logits.shape)}: were they computed on another dataset?"
            )
        given = input_checksums(batch["inputs"]).to(self.checksums.device)
        if not torch.allclose(given, self.checksums[index], rtol=1e-5, atol=1e-3):
            raise DataError(
                "the precomputed teacher outputs were computed on another dataset: the inputs "
                "of this batch differ from the samples at the same indices; use a live "
                "teacher for other splits"
            )
        return ModelOutputs(logits=self.logits[index])
