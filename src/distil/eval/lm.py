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
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import Dataset

from distil.eval.monitors import TeacherHackingMonitor
from distil.eval.sharding import gather_scores, scoring_batches
from distil.losses import TopK, forward_kl
from distil.outputs import call_model, move_batch
from distil.teachers.base import Teacher


class LMValidator:
    """Scores a student on token blocks; the teacher and oracle are optional. With the run's
    ``accelerator`` the blocks are sharded over its processes (every process calls it)."""

    def __init__(
        self,
        dataset: Dataset,
        teacher: Teacher | None,
        *,
        batch_size: int,
        oracle: Teacher | None = None,
        hacking_window: int = 4,
        accelerator: Accelerator | None = None,
    ) -> None:
        self.dataset, self.teacher, self.oracle = dataset, teacher, oracle
        self.batch_size, self.accelerator = batch_size, accelerator
        self.monitor = TeacherHackingMonitor(window=hacking_window, unit="evaluation")
        self.evaluations = 0

    def __call__(self, student: nn.Module, device: torch.device) -> dict:
        metrics = lm_metrics(
            student, self.dataset, teacher=self.teacher, oracle=self.oracle,
            batch_size=self.batch_size, device=device, accelerator=self.accelerator,
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
    accelerator: Accelerator | None = None,
) -> dict[str, float]:
    """Perplexity of ``student`` on ``dataset`` and, given them, its distance to the teacher
    and to the oracle; the student is returned to its previous train/eval mode.

    With ``accelerator`` each process scores its shard of the blocks and the per-block sums
    are gathered (:mod:`distil.eval.sharding`): call it on every process; every process gets
    the metrics of the whole split.
    """
    was_training = student.training
    student.eval()
    sums = {"nll": 0.0, "top1_agreement": 0.0, "teacher_kl": 0.0, "oracle_kl": 0.0}
    tokens = 0
    try:
        for batch in scoring_batches(dataset, batch_size, accelerator):
            batch = move_batch(batch, torch.device(device))
            per_block = block_sums(student, batch, teacher, oracle)
            # gathered for every batch, even one without labels: the ranks stay in step
            per_block = gather_scores(accelerator, per_block)
            tokens += int(per_block.pop("tokens").sum())
            for name, values in per_block.items():
                sums[name] += float(values.cpu().double().sum())
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


def block_sums(
    student: nn.Module, batch: dict, teacher: Teacher | None, oracle: Teacher | None
) -> dict[str, Tensor]:
    """Per block ``(B,)``: labelled tokens, summed NLL and, given the teacher / oracle,
    agreeing tokens and summed KL. Sums per block (not per batch) are what can be gathered
    across processes without counting a padding duplicate."""
    labels = batch["labels"]
    mask = labels >= 0
    names = ["nll"] + ["top1_agreement", "teacher_kl"] * (teacher is not None)
    names += ["oracle_kl"] * (oracle is not None)
    if not bool(mask.any()):  # nothing labelled: zeros, without running the models
        zeros = torch.zeros(labels.shape[0], device=labels.device)
        return {"tokens": zeros, **{name: zeros for name in names}}
    logits = call_model(student, batch["inputs"]).float()  # (B, T, V)
    result = {"tokens": mask.sum(-1)}
    result["nll"] = (
        F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
        .view(labels.shape)
        .sum(-1)
    )
    if teacher is not None:
        reference = teacher.signal(batch).to(logits.device).logits
        result["top1_agreement"] = ((logits.argmax(-1) == top1(reference)) & mask).sum(-1)
        result["teacher_kl"] = forward_kl(logits, reference, mask=mask, reduction="none").sum(-1)
    if oracle is not None:
        reference = oracle.signal(batch).to(logits.device).logits
        result["oracle_kl"] = forward_kl(logits, reference, mask=mask, reduction="none").sum(-1)
    # one dtype for every rank's tensors, whichever branch each took (gathers need it)
    return {name: values.float() for name, values in result.items()}


def top1(reference: Tensor | TopK) -> Tensor:
    """The most likely class of dense logits or of a top-k."""
    if isinstance(reference, TopK):
        best = reference.logprobs.argmax(-1, keepdim=True)
        return reference.indices.gather(-1, best).squeeze(-1)
    return reference.argmax(-1)
