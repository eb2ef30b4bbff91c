"""Language-model metrics over token blocks: perplexity, agreement with the teacher, and the
distances the teacher-hacking monitor watches.

Everything is a mean over labelled tokens (labels ≠ −100), accumulated batch by batch so
no split-sized ``(tokens, vocab)`` tensor ever exists:

* ``perplexity`` = exp(mean NLL of the labels) — the student alone, no teacher needed;
* ``top1_agreement`` — share of tokens where the student's most likely next token is the
  teacher's;
* ``teacher_kl`` — KL(teacher ‖ student) per token (with a cached top-k teacher: on the
  teacher's support, renormalised — a lower bound of the dense value's trend, not its value);
* ``oracle_kl`` — KL(oracle ‖ student), given an oracle (or held-out proxy) model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from distil.data.datasets import in_order
from distil.eval.monitors import TeacherHackingMonitor
from distil.losses import TopK, forward_kl
from distil.outputs import call_model, move_batch
from distil.teachers.base import Teacher


class LMValidator:
    """Scores a student on token blocks; the teacher and oracle are optional."""

    def __init__(
        self,
        dataset: Dataset,
        teacher: Teacher | None,
        *,
        batch_size: int,
        oracle: Teacher | None = None,
        hacking_window: int = 4,
    ) -> None:
        self.dataset, self.teacher, self.oracle = dataset, teacher, oracle
        self.batch_size = batch_size
        self.monitor = TeacherHackingMonitor(window=hacking_window)
        self.evaluations = 0

    def __call__(self, student: nn.Module, device: torch.device) -> dict:
        metrics = lm_metrics(
            student, self.dataset, teacher=self.teacher, oracle=self.oracle,
            batch_size=self.batch_size, device=device,
        )  # fmt: skip
        self.evaluations += 1
        if "oracle_kl" in metrics and "teacher_kl" in metrics:
            hacking = self.monitor.update(
                self.evaluations, metrics["teacher_kl"], metrics["oracle_kl"]
            )
            metrics["teacher_hacking"] = float(hacking)
        return metrics


@torch.no_grad()
def lm_metrics(
    student: nn.Module,
    dataset: Dataset,
    *,
    teacher: Teacher | None = None,
    oracle: Teacher | None = None,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Perplexity of ``student`` on ``dataset`` and, given them, its distance to the teacher
    and to the oracle; the student is returned to its previous train/eval mode."""
    was_training = student.training
    student.eval()
    sums = {"nll": 0.0, "top1_agreement": 0.0, "teacher_kl": 0.0, "oracle_kl": 0.0}
    tokens = 0
    try:
        for batch in in_order(dataset, batch_size):
            batch = move_batch(batch, torch.device(device))
            labels = batch["labels"]
            mask = labels >= 0
            count = int(mask.sum())
            if count == 0:
                continue
            logits = call_model(student, batch["inputs"]).float()
            sums["nll"] += float(
                F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
            )
            if teacher is not None:
                reference = teacher.signal(batch).to(logits.device).logits
                sums["top1_agreement"] += float(
                    ((logits.argmax(-1) == top1(reference)) & mask).sum()
                )
                sums["teacher_kl"] += float(
                    forward_kl(logits, reference, mask=mask, reduction="sum")
                )
            if oracle is not None:
                reference = oracle.signal(batch).to(logits.device).logits
                sums["oracle_kl"] += float(
                    forward_kl(logits, reference, mask=mask, reduction="sum")
                )
            tokens += count
    finally:
        student.train(was_training)
    if tokens == 0:
        raise ValueError("no labelled tokens to evaluate")
    result = {"nll": sums["nll"] / tokens, "tokens": float(tokens)}
    result["perplexity"] = math.exp(min(result["nll"], 50.0))
    if teacher is not None:
        result["top1_agreement"] = sums["top1_agreement"] / tokens
        result["teacher_kl"] = sums["teacher_kl"] / tokens
    if oracle is not None:
        result["oracle_kl"] = sums["oracle_kl"] / tokens
    return result


def top1(reference: Tensor | TopK) -> Tensor:
    """The most likely class of dense logits or of a top-k."""
    if isinstance(reference, TopK):
        best = reference.logprobs.argmax(-1, keepdim=True)
        return reference.indices.gather(-1, best).squeeze(-1)
    return reference.argmax(-1)
