"""Divergences that blend forward and reverse KL per sample, with weights read off the data.

The weights are computed from detached quantities: they decide *how much* of each KL a
sample gets, not a direction to move in. Conventions as in :mod:`distil.losses.divergences`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distil.losses.divergences import kl_rows
from distil.losses.logits import Teacher, distribution_loss
from distil.losses.registry import register_loss


def _blend(forward_weight: Tensor, lq: Tensor, lp: Tensor) -> Tensor:
    return forward_weight * kl_rows(lp, lq) + (1.0 - forward_weight) * kl_rows(lq, lp)


def _share(part: Tensor, other: Tensor) -> Tensor:
    """part / (part + other), and ½ where both are zero (identical distributions)."""
    total = part + other
    return torch.where(total > 0, part / total.clamp_min(torch.finfo(total.dtype).tiny), 0.5)


def _maybe_detach(tensor: Tensor, detach: bool) -> Tensor:
    return tensor.detach() if detach else tensor


def akl_rows(lq: Tensor, lp: Tensor, mu: float, detach_weights: bool) -> Tensor:
    """AKL per row: FKL weighted by the head's share of |p − q|, RKL by the tail's."""
    probs_p, probs_q = lp.exp().detach(), _maybe_detach(lq.exp(), detach_weights)
    sorted_p, order = probs_p.sort(dim=-1, descending=True)
    in_tail_sorted = sorted_p.cumsum(-1) > mu
    in_tail_sorted[..., 0] = False  # the teacher's top class always belongs to the head
    in_tail = torch.zeros_like(in_tail_sorted).scatter(-1, order, in_tail_sorted)
    gap = (probs_p - probs_q).abs()
    gap_tail = (gap * in_tail).sum(-1)
    gap_head = (gap * ~in_tail).sum(-1)
    return _blend(_share(gap_head, gap_tail), lq, lp)


@register_loss("akl")
def akl(
    student_logits: Tensor, teacher_logits: Teacher, *, temperature: float = 1.0,
    reduction: str = "batchmean", mask: Tensor | None = None, tail: str = "renormalize",
    mu: float = 0.5, detach_weights: bool = True,
) -> Tensor:  # fmt: skip
    """Adaptive KL: g_head/(g_head+g_tail)·KL(p ‖ q) + g_tail/(g_head+g_tail)·KL(q ‖ p).

    The head is the teacher's most likely classes up to cumulative mass ``mu`` (the top
    class always included), the tail the rest; g_head, g_tail are Σ|p − q| over each, with
    the student detached. Early in training the gap sits in the head and forward KL (which
    fits the head) dominates; later reverse KL fits the tail.
    Reference: Wu et al., "Rethinking Kullback-Leibler Divergence in Knowledge Distillation
    for Large Language Models", COLING 2025 (μ = 0.5).

    ``detach_weights=False`` lets gradients flow through the weights too (the exact
    gradient of the value; used to check the implementation with finite differences).
    """
    if not 0.0 < mu < 1.0:
        raise ValueError(f"mu must be in (0, 1), got {mu}")
    return distribution_loss(
        akl_rows, student_logits, teacher_logits, temperature=temperature,
        reduction=reduction, mask=mask, tail=tail, mu=mu, detach_weights=detach_weights,
    )  # fmt: skip


def bdkd_rows(lq: Tensor, lp: Tensor, detach_weights: bool) -> Tensor:
    """BD-KD per row: forward KL weighted by H(p), reverse KL by H(q), normalised."""
    entropy_p = _maybe_detach(-(lp.exp() * lp).nan_to_num().sum(-1), detach_weights)
    entropy_q = _maybe_detach(-(lq.exp() * lq).nan_to_num().sum(-1), detach_weights)
    return _blend(_share(entropy_p, entropy_q), lq, lp)


@register_loss("bdkd")
def bdkd(
    student_logits: Tensor, teacher_logits: Teacher, *, temperature: float = 1.0,
    reduction: str = "batchmean", mask: Tensor | None = None, tail: str = "renormalize",
    detach_weights: bool = True,
) -> Tensor:  # fmt: skip
    """Balanced-divergence KD: per sample, H(p)/(H(p)+H(q))·KL(p ‖ q) + H(q)/(H(p)+H(q))·KL(q ‖ p).

    A student less confident than its teacher (H(q) > H(p)) gets more reverse KL, which
    sharpens it; an over-confident one gets more forward KL, which spreads its mass — the
    balance BD-KD uses to improve accuracy and calibration in online distillation. Entropies
    are detached. This continuous weighting is our reading of the rule in Amara et al.,
    "BD-KD: Balancing the Divergences for Online Knowledge Distillation", 2022.
    ``detach_weights`` as in :func:`akl`.
    """
    return distribution_loss(
        bdkd_rows, student_logits, teacher_logits, temperature=temperature,
        reduction=reduction, mask=mask, tail=tail, detach_weights=detach_weights,
    )  # fmt: skip
