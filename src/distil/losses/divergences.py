"""Divergences between a teacher distribution p and a student distribution q over classes.

Each is a pure function of logits, registered by name, with the calling convention of
:mod:`distil.losses.registry`. Temperature T softens both distributions,
``p = softmax(z_t / T)``, ``q = softmax(z_s / T)``, and the result is multiplied by T² so
that gradient magnitudes stay comparable across temperatures (Hinton et al., 2015).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.losses.logits import paired_rows, reduce_rows
from distil.losses.registry import register_loss


def _log_probs(student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask):
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    student_rows, teacher_rows, row_mask = paired_rows(student_logits, teacher_logits, mask)
    student_logprobs = F.log_softmax(student_rows / temperature, dim=-1)
    teacher_logprobs = F.log_softmax(teacher_rows / temperature, dim=-1)
    return student_logprobs, teacher_logprobs, row_mask


def _kl_rows(logprobs_p: Tensor, logprobs_q: Tensor) -> Tensor:
    """KL(p ‖ q) per row, with 0·log 0 = 0 (exact zeros of p contribute nothing)."""
    probs_p = logprobs_p.exp()
    return torch.where(probs_p > 0, probs_p * (logprobs_p - logprobs_q), 0.0).sum(-1)


@register_loss("forward_kl")
def forward_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "batchmean",
    mask: Tensor | None = None,
) -> Tensor:
    """Forward KL, T²·KL(p ‖ q) = T²·Σ_c p_c (log p_c − log q_c): the classic KD term.

    Mean-seeking: the student is pushed to cover every class the teacher gives mass to.
    Shapes: logits ``(N, C)`` or ``(B, T, V)``; ``mask`` ``(N,)``/``(B, T)``, True = keep.
    Reference: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015.
    """
    student_logprobs, teacher_logprobs, row_mask = _log_probs(
        student_logits, teacher_logits, temperature, mask
    )
    per_row = _kl_rows(teacher_logprobs, student_logprobs) * temperature**2
    return reduce_rows(per_row, reduction, row_mask, student_logits.shape[:-1])


@register_loss("reverse_kl")
def reverse_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "batchmean",
    mask: Tensor | None = None,
) -> Tensor:
    """Reverse KL, T²·KL(q ‖ p): mode-seeking, the student may ignore low-mass teacher modes.

    Preferred for generative LMs where covering every teacher mode spreads the small
    student's mass too thin (Gu et al., "MiniLLM", 2024). Shapes as :func:`forward_kl`.
    """
    student_logprobs, teacher_logprobs, row_mask = _log_probs(
        student_logits, teacher_logits, temperature, mask
    )
    per_row = _kl_rows(student_logprobs, teacher_logprobs) * temperature**2
    return reduce_rows(per_row, reduction, row_mask, student_logits.shape[:-1])
