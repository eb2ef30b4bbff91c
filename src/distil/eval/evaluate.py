"""Run a student (and its teacher) over a split and score it with :mod:`distil.eval.metrics`."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from distil.data.datasets import in_order
from distil.eval.metrics import classification_metrics, reliability_bins
from distil.outputs import call_model, move_batch
from distil.teachers.base import Teacher


@torch.no_grad()
def predict_logits(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 512, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Logits ``(N, C)`` in float32 on CPU and labels ``(N,)`` for ``dataset`` in order.

    The model is put in eval mode and returned to its previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for batch in in_order(dataset, batch_size):
            batch = move_batch(batch, torch.device(device))
            logits.append(call_model(model, batch["inputs"]).float().cpu())
            labels.append(batch["labels"].cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


@torch.no_grad()
def teacher_logits(teacher: Teacher, dataset: Dataset, *, batch_size: int = 512) -> Tensor:
    """The teacher's logits ``(N, C)`` over ``dataset`` in order, float32 on CPU."""
    return torch.cat(
        [teacher.signal(batch).logits.float().cpu() for batch in in_order(dataset, batch_size)]
    )


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    *,
    reference_logits: Tensor | None = None,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    ece_bins: int = 15,
    with_reliability: bool = False,
) -> dict:
    """Accuracy, NLL, ECE and, given the teacher's logits, agreement and KL(teacher‖student).

    With ``with_reliability`` the result also holds the reliability diagram's bins under
    ``"reliability"``.
    """
    logits, labels = predict_logits(model, dataset, batch_size=batch_size, device=device)
    result: dict = classification_metrics(
        logits, labels, teacher_logits=reference_logits, n_bins=ece_bins
    )
    if with_reliability:
        result["reliability"] = reliability_bins(logits, labels, n_bins=ece_bins)
    return result
