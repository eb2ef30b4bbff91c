"""List-wise distillation: the student as a ranking model of the teacher's class order."""

from __future__ import annotations

import torch
from torch import Tensor

from distil.losses.chunked import rowwise
from distil.losses.logits import Teacher, dense_rows, label_rows, reduce_rows
from distil.losses.registry import register_loss


def teacher_permutation(teacher_rows: Tensor, labels: Tensor) -> Tensor:
    """π*: the true class first, then the other classes by descending teacher logit."""
    demoted = teacher_rows.scatter(-1, labels[:, None], float("inf"))
    return demoted.argsort(dim=-1, descending=True, stable=True)


def plackett_luce_rows(
    student_rows: Tensor,
    teacher_rows: Tensor,
    labels: Tensor,
    temperature: float,
    top_k: int | None,
) -> Tensor:
    """Σ_{k ≤ K} w_k·[log Σ_{j ≥ k} exp(s_{π*_j}) − s_{π*_k}] per row, w = softmax(z_t/T)_{π*}:
    the student's logits enter unsoftened; T only softens the teacher's weights."""
    order = teacher_permutation(teacher_rows, labels)
    student_sorted = student_rows.gather(-1, order)
    weights = torch.softmax(teacher_rows / temperature, dim=-1).gather(-1, order)
    # log Σ_{j ≥ k} exp(s_j): a reversed cumulative logsumexp
    suffix_lse = student_sorted.flip(-1).logcumsumexp(-1).flip(-1)
    per_position = weights * (suffix_lse - student_sorted)
    if top_k is not None:
        per_position = per_position[..., :top_k]
    return per_position.sum(-1)


@register_loss("pld", kind="objective")
def pld(
    student_logits: Tensor, teacher_logits: Teacher, *, labels: Tensor,
    temperature: float = 1.0, reduction: str = "batchmean", mask: Tensor | None = None,
    top_k: int | None = None,
) -> Tensor:  # fmt: skip
    """Plackett–Luce distillation: the negative log-likelihood, under the student's
        Plackett–Luce model, of the teacher's ranking π* (true class first, then the teacher's
        order), each position weighted by the teacher's probability of the class placed there:

            L = Σ_{k=1..K} p_{π*_k} · [log Σ_{j≥k} exp(s_{π*_j}) − s_{π*_k}],   p = softmax(z_t / T)

    with the student's Plackett–Luce model on its raw logits and T softening only the teacher's
    weights, as in the paper's code (its Appendix C; no T² factor). The paper uses T = 4 on
    CIFAR-100 and T = 1 on ImageNet.

        The first position is a cross-entropy on the label weighted by the teacher's confidence;
        ``top_k`` keeps only the first K positions (a partial ranking). An objective, not a
        divergence: it is not zero when student and teacher logits agree.
        Reference: "PLD: A Choice-Theoretic List-Wise Knowledge Distillation", 2025.
    """
    student_rows, teacher_rows, row_mask = dense_rows(student_logits, teacher_logits, mask, "pld")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be ≥ 1, got {top_k}")
    safe_labels, row_mask = label_rows(labels, student_logits, row_mask)
    per_row = rowwise(
        lambda student, teacher, target: plackett_luce_rows(
            student, teacher, target, temperature, top_k
        ),
        (student_rows, teacher_rows, safe_labels),
    )
    return reduce_rows(per_row, reduction, row_mask, student_logits.shape[:-1])
