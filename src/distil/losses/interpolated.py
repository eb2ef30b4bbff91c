"""TAID's interpolated target as a catalogue divergence, so every path (dense classification
logits, sparse cached teachers, the fused LM head) computes it the same way.

    p_t = softmax((1 − t) · stopgrad(log q) + t · log p),    D = KL(p_t ‖ q)

Mixing log-probabilities equals mixing logits: the per-row constants of the log-softmax
cancel inside the outer softmax. With a sparse teacher the mix lives on the top-k support.
Reference: Shing et al., "TAID: Temporally Adaptive Interpolated Distillation", ICLR 2025.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distil.losses.divergences import kl_rows
from distil.losses.logits import Teacher, distribution_loss
from distil.losses.registry import register_loss


def taid_rows(lq: Tensor, lp: Tensor, t: float) -> Tensor:
    """KL(p_t ‖ q) per row with p_t the log-space mix of the detached student and teacher."""
    target = torch.log_softmax((1.0 - t) * lq.detach() + t * lp, dim=-1)
    return kl_rows(target, lq)


@register_loss("taid_kl")
def taid_kl(
    student_logits: Tensor, teacher_logits: Teacher, *, t: float = 1.0, temperature: float = 1.0,
    reduction: str = "batchmean", mask: Tensor | None = None, tail: str = "renormalize",
) -> Tensor:  # fmt: skip
    """T²·KL(p_t ‖ q): forward KL to TAID's target interpolated by ``t`` ∈ [0, 1] (t = 1 is
    plain forward KL; t = 0 is zero). The TAID method moves ``t`` during training."""
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    return distribution_loss(
        lambda lq, lp: taid_rows(lq, lp, t), student_logits, teacher_logits,
        temperature=temperature, reduction=reduction, mask=mask, tail=tail,
    )  # fmt: skip
