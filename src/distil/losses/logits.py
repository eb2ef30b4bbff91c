"""Shared plumbing for logit losses: shape checks, flattening, masking and reduction.

Losses accept logits ``(N, C)`` or ``(B, T, V)``; these helpers turn both into rows
``(M, C)`` of at least float32 (fp16/bf16 inputs are upcast, float64 kept for gradcheck), apply
an optional boolean mask of valid rows (padding, prompt tokens), and reduce per-row values
the way ``torch.nn.functional`` does. No loss formulas live here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distil.errors import ShapeError

REDUCTIONS = ("batchmean", "sum", "none")


def paired_rows(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Check that student and teacher logits fit and flatten both to float32 rows ``(M, C)``.

    Returns ``(student_rows, teacher_rows, row_mask)`` where ``row_mask`` is a boolean
    ``(M,)`` or None. A mismatch raises ``ShapeError`` naming both shapes, which is the
    message a user with a teacher/student vocabulary mismatch needs.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ShapeError(
            f"student_logits {tuple(student_logits.shape)} and teacher_logits "
            f"{tuple(teacher_logits.shape)} must have the same shape "
            "(same batch, sequence length and number of classes / vocabulary size)"
        )
    if student_logits.dim() < 2:
        raise ShapeError(f"logits must be (N, C) or (B, T, V), got {tuple(student_logits.shape)}")
    num_classes = student_logits.shape[-1]
    student_rows = upcast(student_logits.reshape(-1, num_classes))
    teacher_rows = upcast(teacher_logits.reshape(-1, num_classes))
    row_mask = None
    if mask is not None:
        if tuple(mask.shape) != tuple(student_logits.shape[:-1]):
            raise ShapeError(
                f"mask {tuple(mask.shape)} must match the logits' leading dimensions "
                f"{tuple(student_logits.shape[:-1])}"
            )
        row_mask = mask.reshape(-1).to(torch.bool)
    return student_rows, teacher_rows, row_mask


def upcast(tensor: Tensor) -> Tensor:
    """fp16/bf16 are upcast (softmax of large logits overflows them); float64 stays float64."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def reduce_rows(
    per_row: Tensor, reduction: str, row_mask: Tensor | None, leading_shape: torch.Size
) -> Tensor:
    """Reduce per-row loss values ``(M,)``.

    * ``batchmean`` — mean over valid rows (samples, or unmasked tokens);
    * ``sum`` — sum over valid rows;
    * ``none`` — the per-row values reshaped to the logits' leading shape, masked rows 0.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"reduction={reduction!r} is not one of {REDUCTIONS}; 'batchmean' averages the "
            "per-sample divergence (torch's elementwise 'mean' is deliberately not offered)"
        )
    if row_mask is not None:
        per_row = per_row * row_mask
    if reduction == "none":
        return per_row.reshape(leading_shape)
    total = per_row.sum()
    if reduction == "sum":
        return total
    count = row_mask.sum() if row_mask is not None else per_row.new_tensor(per_row.numel())
    return total / count.clamp_min(1)
