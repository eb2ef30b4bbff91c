"""Shared plumbing for logit losses: shape checks, flattening, masking, reduction, and the
driver that turns a per-row divergence of log-probabilities into a full loss.

Losses accept logits ``(N, C)`` or ``(B, T, V)``; rows are upcast to at least float32 (fp16
and bf16 inputs are safe; float64 stays float64 for gradcheck). The teacher may be dense
logits of the same shape or a sparse :class:`~distil.losses.sparse.TopK`. No loss formula
lives here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.errors import ShapeError
from distil.losses.chunked import rowwise
from distil.losses.sparse import TopK, sparse_logprob_rows

REDUCTIONS = ("batchmean", "sum", "none")

Teacher = Tensor | TopK


def upcast(tensor: Tensor) -> Tensor:
    """fp16/bf16 are upcast (softmax of large logits overflows them); float64 stays float64."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def check_pair(student_logits: Tensor, teacher: Teacher) -> None:
    """Raise ``ShapeError`` naming both shapes when student and teacher do not fit."""
    if student_logits.dim() < 2:
        raise ShapeError(f"logits must be (N, C) or (B, T, V), got {tuple(student_logits.shape)}")
    if isinstance(teacher, TopK):
        if tuple(teacher.indices.shape[:-1]) != tuple(student_logits.shape[:-1]):
            raise ShapeError(
                f"student_logits {tuple(student_logits.shape)} and sparse teacher indices "
                f"{tuple(teacher.indices.shape)} must agree on every dimension but the last"
            )
        return
    if student_logits.shape != teacher.shape:
        raise ShapeError(
            f"student_logits {tuple(student_logits.shape)} and teacher_logits "
            f"{tuple(teacher.shape)} must have the same shape "
            "(same batch, sequence length and number of classes / vocabulary size)"
        )


def row_mask_of(mask: Tensor | None, leading_shape: torch.Size) -> Tensor | None:
    """A boolean ``(M,)`` mask of the rows to keep, checked against the logits' shape."""
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(leading_shape):
        raise ShapeError(
            f"mask {tuple(mask.shape)} must match the logits' leading dimensions "
            f"{tuple(leading_shape)}"
        )
    return mask.reshape(-1).to(torch.bool)


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


LogProbDivergence = Callable[..., Tensor]


def distribution_loss(
    divergence: LogProbDivergence,
    student_logits: Tensor,
    teacher: Teacher,
    *,
    temperature: float,
    reduction: str,
    mask: Tensor | None,
    tail: str = "renormalize",
    **options: float,
) -> Tensor:
    """T² · ``divergence(student_logprobs, teacher_logprobs, **options)`` row by row, reduced.

    ``divergence`` takes two ``(m, K)`` tensors of normalised log-probabilities (student,
    teacher) and returns ``(m,)``. Large inputs are processed in row blocks by
    :func:`~distil.losses.chunked.rowwise`, so memory stays a small constant multiple of one
    ``(M, V)`` buffer.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    check_pair(student_logits, teacher)
    leading_shape = student_logits.shape[:-1]
    row_mask = row_mask_of(mask, leading_shape)
    student_rows = upcast(student_logits.reshape(-1, student_logits.shape[-1]))

    if isinstance(teacher, TopK):
        indices, teacher_logprobs = teacher.rows()

        def per_row(student: Tensor, teacher_lp: Tensor, teacher_idx: Tensor) -> Tensor:
            student_lp, teacher_lp = sparse_logprob_rows(
                student, teacher_idx, upcast(teacher_lp), temperature, tail
            )
            return divergence(student_lp, teacher_lp, **options)

        inputs = (student_rows, teacher_logprobs, indices)
    else:
        teacher_rows = upcast(teacher.reshape(-1, teacher.shape[-1]))

        def per_row(student: Tensor, teacher_logits: Tensor) -> Tensor:
            return divergence(
                F.log_softmax(student / temperature, dim=-1),
                F.log_softmax(teacher_logits / temperature, dim=-1),
                **options,
            )

        inputs = (student_rows, teacher_rows)
    values = rowwise(per_row, inputs) * temperature**2
    return reduce_rows(values, reduction, row_mask, leading_shape)


def label_rows(
    labels: Tensor, student_logits: Tensor, row_mask: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Labels flattened to rows ``(M,)`` for the losses that read them, and the row mask.

    Negative labels (``ignore_index``-style, e.g. −100 on padding) drop their rows: they are
    masked out and replaced by 0 so that indexing with them stays safe.
    """
    flat = labels.reshape(-1)
    leading = tuple(student_logits.shape[:-1])
    if flat.shape[0] != math.prod(leading):
        raise ShapeError(
            f"labels {tuple(labels.shape)} must match the logits' leading dimensions {leading}"
        )
    valid = flat >= 0
    return flat.clamp_min(0), valid if row_mask is None else row_mask & valid


def dense_rows(
    student_logits: Tensor, teacher: Teacher, mask: Tensor | None, loss_name: str
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Rows ``(M, C)`` for losses that need the teacher's full logits (not a top-k)."""
    if isinstance(teacher, TopK):
        raise ShapeError(
            f"loss {loss_name!r} needs the teacher's full logits; a sparse top-k teacher "
            "is not enough"
        )
    check_pair(student_logits, teacher)
    num_classes = student_logits.shape[-1]
    row_mask = row_mask_of(mask, student_logits.shape[:-1])
    return (
        upcast(student_logits.reshape(-1, num_classes)),
        upcast(teacher.reshape(-1, num_classes)),
        row_mask,
    )
