"""Run a student (and its teacher) over a split and score it with :mod:`distil.eval.metrics`.

Given the run's ``accelerator``, each process runs the models over its shard of the split
only and the per-sample logits are gathered (:mod:`distil.eval.sharding`), so every process
ends with the whole split's logits and the metrics one process would compute.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import Dataset

from distil.eval.metrics import classification_metrics, reliability_bins
from distil.eval.sharding import gather_scores, scoring_batches
from distil.outputs import call_model, move_batch
from distil.teachers.base import Teacher


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    accelerator: Accelerator | None = None,
) -> tuple[Tensor, Tensor]:
    """Logits ``(N, C)`` in float32 on CPU and labels ``(N,)`` for ``dataset`` in order.

    The model is put in eval mode and returned to its previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for batch in scoring_batches(dataset, batch_size, accelerator):
            batch = move_batch(batch, torch.device(device))
            scored = gather_scores(
                accelerator,
                {"logits": call_model(model, batch["inputs"]).float(), "labels": batch["labels"]},
            )
            logits.append(scored["logits"].cpu())
            labels.append(scored["labels"].cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


@torch.no_grad()
def teacher_logits(
    teacher: Teacher,
    dataset: Dataset,
    *,
    batch_size: int = 512,
    accelerator: Accelerator | None = None,
) -> Tensor:
    """The teacher's logits ``(N, C)`` over ``dataset`` in order, float32 on CPU."""
    logits = []
    for batch in scoring_batches(dataset, batch_size, accelerator):
        scored = teacher.signal(batch).logits.float()
        if accelerator is not None:  # gathered on the process group's device
            scored = scored.to(accelerator.device)
        logits.append(gather_scores(accelerator, scored).cpu())
    return torch.cat(logits)


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    *,
    reference_logits: Tensor | None = None,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    ece_bins: int = 15,
    with_reliability: bool = False,
    accelerator: Accelerator | None = None,
) -> dict:
    """Accuracy, NLL, ECE and, given the teacher's logits, agreement and KL(teacher‖student).

    With ``with_reliability`` the result also holds the reliability diagram's bins under
    ``"reliability"``. With ``accelerator`` the split is sharded over its processes (call it
    on every process).
    """
    logits, labels = predict_logits(
        model, dataset, batch_size=batch_size, device=device, accelerator=accelerator
    )
    result: dict = classification_metrics(
        logits, labels, teacher_logits=reference_logits, n_bins=ece_bins
    )
    if with_reliability:
        result["reliability"] = reliability_bins(logits, labels, n_bins=ece_bins)
    return result
