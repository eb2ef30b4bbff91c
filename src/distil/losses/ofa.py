"""The OFA loss: KD with a modulated target class, for heterogeneous teacher–student pairs.

Registered as an objective (it is a cross-entropy against the teacher, so not zero at
agreement). Used by the ``ofa`` method on the student's final logits and on the logits of
the branch heads attached to its intermediate stages.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.losses.chunked import rowwise
from distil.losses.logits import Teacher, dense_rows, label_rows, reduce_rows
from distil.losses.registry import register_loss


def ofa_rows(
    student: Tensor, teacher: Tensor, labels: Tensor, eps: float, temperature: float
) -> Tensor:
    """−Σ_c [(p_t,c + y_c)^ε − y_c] · log p_s,c per row."""
    one_hot = F.one_hot(labels, student.shape[-1]).to(student.dtype)
    teacher_probs = torch.softmax(teacher / temperature, dim=-1)
    weights = (teacher_probs + one_hot).pow(eps) - one_hot
    return -(weights * F.log_softmax(student / temperature, dim=-1)).sum(-1)


@register_loss("ofa", kind="objective")
def ofa(
    student_logits: Tensor, teacher_logits: Teacher, *, labels: Tensor,
    temperature: float = 1.0, reduction: str = "batchmean", mask: Tensor | None = None,
    eps: float = 1.0,
) -> Tensor:  # fmt: skip
    """OFA loss, −Σ_c [(p_t,c + y_c)^ε − y_c] · log q_c with y the one-hot label and p, q
    softened by T — with no T² factor, as in the authors' code (an objective, not a divergence
    of the catalogue's T²-scaled kind).

    The target class is weighted (1 + p_t,target)^ε − 1 and every other class p_t,c^ε; ε = 1
    is the cross-entropy against the teacher's distribution, ε > 1 strengthens the target
    class more where the teacher is confident (the paper uses 1 to 1.5).
    Reference: Hao et al., "One-for-All: Bridge the Gap Between Heterogeneous Architectures
    in Knowledge Distillation", NeurIPS 2023.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    student_rows, teacher_rows, row_mask = dense_rows(student_logits, teacher_logits, mask, "ofa")
    target, row_mask = label_rows(labels, student_logits, row_mask)
    values = rowwise(
        lambda s, t, y: ofa_rows(s, t, y, eps, temperature),
        (student_rows, teacher_rows, target),
    )
    return reduce_rows(values, reduction, row_mask, student_logits.shape[:-1])
