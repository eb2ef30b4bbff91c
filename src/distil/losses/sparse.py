"""A sparse teacher: the top-k classes per position and their log-probabilities.

This is what an offline teacher cache stores for language models, where keeping the whole
vocabulary per token is far too large. Every distribution loss accepts a :class:`TopK` in
place of dense teacher logits; how the teacher's remaining (tail) mass is treated is the
``tail`` option of the loss:

* ``"renormalize"`` — both distributions are restricted to the teacher's top-k classes and
  renormalised there (the student's mass elsewhere is ignored);
* ``"residual"`` — a (k+1)-th bucket holds each distribution's mass outside the top-k, so the
  student is also taught how much mass to leave to the tail. The teacher's tail is known
  only at the temperature its log-probabilities were stored at (1), so this option requires
  T = 1: how a tail spreads over its classes decides how a temperature reshapes it, and a
  cache does not know that.

With k equal to the number of classes both options equal the dense loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from distil.errors import ShapeError

TAILS = ("renormalize", "residual")


@dataclass(frozen=True)
class TopK:
    """Top-k teacher outputs: ``indices`` (…, k) int64 and ``logprobs`` (…, k) at T = 1."""

    indices: Tensor
    logprobs: Tensor

    def __post_init__(self) -> None:
        if self.indices.shape != self.logprobs.shape:
            raise ShapeError(
                f"TopK indices {tuple(self.indices.shape)} and logprobs "
                f"{tuple(self.logprobs.shape)} must have the same shape"
            )

    def to(self, device: torch.device | str) -> TopK:
        """The same top-k on ``device`` (log-probs in float32)."""
        return TopK(self.indices.to(device), self.logprobs.to(device=device, dtype=torch.float32))

    @property
    def k(self) -> int:
        """How many classes per position are kept."""
        return self.indices.shape[-1]

    @classmethod
    def from_logits(cls, logits: Tensor, k: int) -> TopK:
        """Keep the ``k`` most likely classes of dense teacher ``logits`` (…, C)."""
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        values, indices = logprobs.topk(k, dim=-1)
        return cls(indices=indices, logprobs=values)

    def rows(self) -> tuple[Tensor, Tensor]:
        """(indices, logprobs) flattened to rows ``(M, k)``."""
        return self.indices.reshape(-1, self.k), self.logprobs.reshape(-1, self.k)


#: Smallest tail mass kept, so an empty tail (k = C) stays finite and equal on both sides.
TAIL_FLOOR = 1e-12


def log_residual(logprobs: Tensor, floor: float = TAIL_FLOOR) -> Tensor:
    """log(1 − Σ exp(logprobs)) over the last dim, floored so an empty tail stays finite."""
    covered = torch.logsumexp(logprobs, dim=-1, keepdim=True).exp()
    return torch.log((1.0 - covered).clamp_min(floor))


def sparse_logprob_rows(
    student_rows: Tensor,
    indices: Tensor,
    teacher_logprobs: Tensor,
    temperature: float,
    tail: str,
) -> tuple[Tensor, Tensor]:
    """Student and teacher log-probabilities on the top-k support (plus the tail bucket).

    ``student_rows`` (m, V) are logits; ``indices``/``teacher_logprobs`` (m, k). Returns two
    (m, k) or (m, k + 1) tensors of normalised log-probabilities at ``temperature``.
    """
    if tail not in TAILS:
        raise ValueError(f"tail={tail!r} is not one of {TAILS}")
    if tail == "residual" and temperature != 1.0:
        raise ValueError(
            f"tail='residual' needs temperature=1 (got {temperature}): the teacher's tail mass "
            "is only known at the temperature it was stored at; use tail='renormalize'"
        )
    vocab = student_rows.shape[-1]
    if indices.numel() and (int(indices.max()) >= vocab or int(indices.min()) < 0):
        raise ShapeError(
            f"sparse teacher indices range over [{int(indices.min())}, {int(indices.max())}] "
            f"but the student has {vocab} classes (vocabulary mismatch?)"
        )
    # Gather first: renormalising on the support needs only the k gathered logits, and the
    # residual bucket only the full normaliser (one reduction) — never a (m, V) log-softmax,
    # which would cost as much as the cross-entropy it sits beside.
    student_topk = student_rows.gather(-1, indices)
    if temperature != 1.0:
        student_topk = student_topk / temperature
    if tail == "renormalize":
        student = student_topk - torch.logsumexp(student_topk, dim=-1, keepdim=True)
        teacher = torch.log_softmax(teacher_logprobs / temperature, dim=-1)
        return student, teacher
    student_topk = student_topk - torch.logsumexp(student_rows, dim=-1, keepdim=True)
    student = torch.cat([student_topk, log_residual(student_topk)], dim=-1)
    with torch.no_grad():  # the sparse teacher is a fixed target
        teacher = torch.cat([teacher_logprobs, log_residual(teacher_logprobs)], dim=-1)
    return student, teacher
