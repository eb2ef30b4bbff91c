"""Logit-distillation losses from the image-classification literature that go beyond one
divergence of softened outputs: decoupled target/non-target KD, correlation-based DIST and
KD on standardised logits. They need the teacher's full logits (not a top-k)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.losses.chunked import rowwise
from distil.losses.divergences import kl_rows
from distil.losses.logits import Teacher, dense_rows, label_rows, reduce_rows
from distil.losses.registry import register_loss


def _binary_logprobs(logprobs: Tensor, target: Tensor) -> Tensor:
    """log [p_target, 1 − p_target] per row, computed without subtracting probabilities."""
    log_target = logprobs.gather(-1, target[:, None])
    log_rest = torch.logsumexp(
        logprobs.scatter(-1, target[:, None], float("-inf")), -1, keepdim=True
    )
    return torch.cat([log_target, log_rest], dim=-1)


@register_loss("dkd")
def dkd(
    student_logits: Tensor, teacher_logits: Teacher, *, labels: Tensor,
    temperature: float = 1.0, reduction: str = "batchmean", mask: Tensor | None = None,
    alpha: float = 1.0, beta: float = 8.0,
) -> Tensor:  # fmt: skip
    """Decoupled KD: T²·(α·TCKD + β·NCKD).

    TCKD = KL(b_t ‖ b_s) over the binary split [p_target, 1 − p_target]; NCKD = KL(p̂_t ‖ p̂_s)
    over the non-target classes renormalised among themselves. Classic KD equals
    TCKD + (1 − p_t,target)·NCKD, which suppresses the non-target ("dark") knowledge exactly
    where the teacher is confident; DKD frees its weight. Recipes usually use T = 4.
    Reference: Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022 (α = 1, β = 8).
    """
    student_rows, teacher_rows, row_mask = dense_rows(student_logits, teacher_logits, mask, "dkd")
    target, row_mask = label_rows(labels, student_logits, row_mask)

    def per_row(student: Tensor, teacher: Tensor, target: Tensor) -> Tensor:
        student_lp = F.log_softmax(student / temperature, dim=-1)
        teacher_lp = F.log_softmax(teacher / temperature, dim=-1)
        tckd = kl_rows(_binary_logprobs(teacher_lp, target), _binary_logprobs(student_lp, target))
        drop = torch.zeros_like(student, dtype=torch.bool).scatter(-1, target[:, None], True)
        student_nt = F.log_softmax((student / temperature).masked_fill(drop, float("-inf")), -1)
        teacher_nt = F.log_softmax((teacher / temperature).masked_fill(drop, float("-inf")), -1)
        return alpha * tckd + beta * kl_rows(teacher_nt, student_nt)

    per_row_values = rowwise(per_row, (student_rows, teacher_rows, target)) * temperature**2
    return reduce_rows(per_row_values, reduction, row_mask, student_logits.shape[:-1])


def _pearson(a: Tensor, b: Tensor, dim: int) -> Tensor:
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim)).clamp_min(1e-12)


@register_loss("dist")
def dist(
    student_logits: Tensor, teacher_logits: Teacher, *, temperature: float = 1.0,
    reduction: str = "batchmean", mask: Tensor | None = None, beta: float = 1.0,
    gamma: float = 1.0,
) -> Tensor:  # fmt: skip
    """DIST: T²·(β·(1 − mean_i ρ(q_i, p_i)) + γ·(1 − mean_c ρ(q_:c, p_:c))), ρ = Pearson.

    Matches *relations* instead of values: inter-class (each sample's ranking of classes) and
    intra-class (each class's ranking of the batch's samples), so a student need not match a
    much stronger teacher's exact probabilities. Batch-coupled: only ``batchmean`` applies.
    Reference: Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022.
    """
    if reduction != "batchmean":
        raise ValueError("dist couples the samples of a batch: only reduction='batchmean' applies")
    student_rows, teacher_rows, row_mask = dense_rows(student_logits, teacher_logits, mask, "dist")
    if row_mask is not None:
        student_rows, teacher_rows = student_rows[row_mask], teacher_rows[row_mask]
    student_probs = torch.softmax(student_rows / temperature, dim=-1)
    teacher_probs = torch.softmax(teacher_rows / temperature, dim=-1)
    inter = 1.0 - _pearson(student_probs, teacher_probs, dim=1).mean()
    intra = 1.0 - _pearson(student_probs, teacher_probs, dim=0).mean()
    return (beta * inter + gamma * intra) * temperature**2


def standardize(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Z-score each row: (z − mean) / (std + ε), std with Bessel's correction."""
    return (logits - logits.mean(-1, keepdim=True)) / (logits.std(-1, keepdim=True) + eps)


@register_loss("logit_std_kd")
def logit_std_kd(
    student_logits: Tensor, teacher_logits: Teacher, *, temperature: float = 1.0,
    reduction: str = "batchmean", mask: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """KD on z-scored logits: T²·KL(softmax(Z(z_t)/T) ‖ softmax(Z(z_s)/T)).

    Standardising removes each model's logit shift and scale, so the student matches the
    teacher's *relations* between logits rather than their magnitude, which a small student
    cannot reach. The paper's base temperature is 2 (recipes set ``temperature``).
    Reference: Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024.
    """
    student_rows, teacher_rows, row_mask = dense_rows(
        student_logits, teacher_logits, mask, "logit_std_kd"
    )

    def per_row(student: Tensor, teacher: Tensor) -> Tensor:
        return kl_rows(
            F.log_softmax(standardize(teacher) / temperature, dim=-1),
            F.log_softmax(standardize(student) / temperature, dim=-1),
        )

    values = rowwise(per_row, (student_rows, teacher_rows)) * temperature**2
    return reduce_rows(values, reduction, row_mask, student_logits.shape[:-1])
