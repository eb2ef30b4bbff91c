"""What the trainer calls to score the student on the validation split, per task.

A validator is any callable ``(student, device) -> {metric: value}``. The classification one
computes the teacher's validation logits once (they never change) and scores accuracy, NLL,
ECE and agreement with the teacher; the language-model one is in :mod:`distil.eval.lm`.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import Dataset

from distil.eval.evaluate import evaluate_model, teacher_logits
from distil.teachers.base import Teacher


class ClassificationValidator:
    """Accuracy, NLL, ECE and — with a teacher — agreement and KL on a classification split;
    with the run's ``accelerator`` sharded over its processes (every process calls it)."""

    def __init__(
        self,
        dataset: Dataset,
        teacher: Teacher | None,
        *,
        batch_size: int,
        ece_bins: int,
        accelerator: Accelerator | None = None,
    ) -> None:
        self.dataset, self.teacher, self.accelerator = dataset, teacher, accelerator
        self.batch_size, self.ece_bins = batch_size, ece_bins
        self._reference: Tensor | None = None

    def __call__(self, student: nn.Module, device: torch.device) -> dict:
        if self.teacher is not None and self._reference is None:
            self._reference = teacher_logits(
                self.teacher, self.dataset, batch_size=self.batch_size,
                accelerator=self.accelerator,
            )  # fmt: skip
        return evaluate_model(
            student, self.dataset, reference_logits=self._reference,
            batch_size=self.batch_size, device=device, ece_bins=self.ece_bins,
            accelerator=self.accelerator,
        )  # fmt: skip
