"""Divergences between a teacher distribution p and a student distribution q over classes.

Each public function is registered by name and follows the calling convention of
:mod:`distil.losses.registry`: temperature T softens both sides, ``p = softmax(z_t / T)``,
``q = softmax(z_s / T)``, and the result is multiplied by T² so gradient magnitudes stay
comparable across temperatures (Hinton et al., 2015). The teacher may be dense logits or a
sparse :class:`~distil.losses.sparse.TopK` (see its ``tail`` option). The ``_rows``
functions take normalised log-probabilities ``(m, K)`` and return one value per row.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from distil.losses.logits import Teacher, distribution_loss
from distil.losses.registry import register_loss


def kl_rows(logprobs_p: Tensor, logprobs_q: Tensor) -> Tensor:
    """KL(p ‖ q) per row, with 0·log 0 = 0 (exact zeros of p contribute nothing)."""
    probs_p = logprobs_p.exp()
    return torch.where(probs_p > 0, probs_p * (logprobs_p - logprobs_q), 0.0).sum(-1)


def _log_mixture(weight_a: float, logprobs_a: Tensor, logprobs_b: Tensor) -> Tensor:
    """log(w·a + (1 − w)·b) computed in log space; w ∈ [0, 1] (the ends are exact)."""
    if weight_a <= 0.0:
        return logprobs_b
    if weight_a >= 1.0:
        return logprobs_a
    return torch.logaddexp(logprobs_a + math.log(weight_a), logprobs_b + math.log1p(-weight_a))


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


@register_loss("forward_kl")
def forward_kl(
    student_logits: Tensor, teacher_logits: Teacher, *, temperature: float = 1.0,
    reduction: str = "batchmean", mask: Tensor | None = None, tail: str = "renormalize",
) -> Tensor:  # fmt: skip
    """Forward KL, T²·KL(p ‖ q) = T²·Σ_c p_c (log p_c − log q_c): the classic KD term.

    Mean-seeking: the student is pushed to cover every class the teacher gives mass to.
    Shapes: logits ``(N, C)`` or ``(B, T, V)``; ``mask`` ``(N,)``/``(B, T)``, True = keep.
    Reference: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015.
    """
    return distribution_loss(
        lambda lq, lp: kl_rows(lp, lq), student_logits, teacher_logits,
        temperature=temperature, reduction=reduction, mask=mask, tail=tail,
    )  # fmt: skip


@register_loss("reverse_kl")
def reverse_kl(
    student_logits: Tensor, teacher_logits: Teacher, *, temperature: float = 1.0,
    reduction: str = "batchmean", mask: Tensor | None = None, tail: str = "renormalize",
) -> Tensor:  # fmt: skip
    """Reverse KL, T²·KL(q ‖ p): mode-seeking, the student may ignore low-mass teacher modes.

    Preferred for generative LMs where covering every teacher mode spreads a small student's
    mass too thin (Gu et al., "MiniLLM", ICLR 2024).
    """
    return distribution_loss(
        lambda lq, lp: kl_rows(lq, lp), student_logits, teacher_logits,
        temperature=temperature, reduction=reduction, mask=mask, tail=tail,
    )  # fmt: skip


def jsd_rows(lq: Tensor, lp: Tensor, beta: float) -> Tensor:
    """β·KL(p ‖ m) + (1 − β)·KL(q ‖ m) with m = β·p + (1 − β)·q."""
    log_m = _log_mixture(beta, lp, lq)
    return beta * kl_rows(lp, log_m) + (1.0 - beta) * kl_rows(lq, log_m)


@register_loss("jsd")
def jsd(
    student_logits: Tensor, teacher_logits: Teacher, *, temperature: float = 1.0,
    reduction: str = "batchmean", mask: Tensor | None = None, tail: str = "renormalize",
    beta: float = 0.5,
) -> Tensor:  # fmt: skip
    """Generalised Jensen–Shannon divergence JSD(β) = β·KL(p ‖ m) + (1 − β)·KL(q ‖ m),
    m = β·p + (1 − β)·q, p the teacher, q the student.

    β = 0.5 is the symmetric JSD (bounded by log 2). The formula vanishes at both ends
    (JSD(β)/β → KL(p ‖ q) as β → 0, JSD(β)/(1 − β) → KL(q ‖ p) as β → 1), which would train
    nothing; like TRL's GKD trainer and Liger-Kernel's fused JSD, β = 0 *is* forward KL(p ‖ q)
    and β = 1 reverse KL(q ‖ p), so a configuration ported from them means the same here.
    Reference: Agarwal et al., "On-Policy Distillation of Language Models" (GKD), ICLR 2024.
    """
    _check_unit("beta", beta)
    if beta in (0.0, 1.0):
        ends = forward_kl if beta == 0.0 else reverse_kl
        return ends(
            student_logits, teacher_logits, temperature=temperature, reduction=reduction,
            mask=mask, tail=tail,
        )  # fmt: skip
    return distribution_loss(
        jsd_rows, student_logits, teacher_logits, temperature=temperature,
        reduction=reduction, mask=mask, tail=tail, beta=beta,
    )  # fmt: skip


@register_loss("skew_forward_kl")
def skew_forward_kl(
    student_logits: Tensor, teacher_logits: Teacher, *, temperature: float = 1.0,
    reduction: str = "batchmean", mask: Tensor | None = None, tail: str = "renormalize",
    alpha: float = 0.1,
) -> Tensor:  # fmt: skip
    """Skew KL, KL(p ‖ α·p + (1 − α)·q): forward KL with α of the teacher mixed into the
    student's side, which bounds the divergence (≤ −log α) and smooths its gradient.

    α = 0 is forward KL; α = 1 is zero. Reference: Ko et al., "DistiLLM", ICML 2024 (α=0.1).
    """
    _check_unit("alpha", alpha)
    return distribution_loss(
        lambda lq, lp: kl_rows(lp, _log_mixture(alpha, lp, lq)), student_logits, teacher_logits,
        temperature=temperature, reduction=reduction, mask=mask, tail=tail,
    )  # fmt: skip


@register_loss("skew_reverse_kl")
def skew_reverse_kl(
    student_logits: Tensor, teacher_logits: Teacher, *, temperature: float = 1.0,
    reduction: str = "batchmean", mask: Tensor | None = None, tail: str = "renormalize",
    alpha: float = 0.1,
) -> Tensor:  # fmt: skip
    """Skew reverse KL, KL(q ‖ α·q + (1 − α)·p): reverse KL with α of the student mixed into
    the teacher's side. α = 0 is reverse KL; α = 1 is zero. Reference: Ko et al., DistiLLM.
    """
    _check_unit("alpha", alpha)
    return distribution_loss(
        lambda lq, lp: kl_rows(lq, _log_mixture(alpha, lq, lp)), student_logits, teacher_logits,
        temperature=temperature, reduction=reduction, mask=mask, tail=tail,
    )  # fmt: skip


@register_loss("tvd")
def tvd(
    student_logits: Tensor, teacher_logits: Teacher, *, temperature: float = 1.0,
    reduction: str = "batchmean", mask: Tensor | None = None, tail: str = "renormalize",
) -> Tensor:  # fmt: skip
    """Total variation distance, ½·Σ_c |p_c − q_c| ∈ [0, 1]: symmetric and bounded.

    Reference: Wen et al., "f-Divergence Minimization for Sequence-Level KD", ACL 2023.
    """
    return distribution_loss(
        lambda lq, lp: 0.5 * (lp.exp() - lq.exp()).abs().sum(-1), student_logits,
        teacher_logits, temperature=temperature, reduction=reduction, mask=mask, tail=tail,
    )  # fmt: skip


def ab_rows(lq: Tensor, lp: Tensor, alpha: float, beta: float) -> Tensor:
    """The alpha-beta divergence D_AB^(α,β)(p ‖ q) per row, with its limiting cases."""
    if alpha != 0 and beta != 0 and alpha + beta != 0:
        total = alpha + beta
        terms = (
            torch.exp(alpha * lp + beta * lq)
            - alpha / total * torch.exp(total * lp)
            - beta / total * torch.exp(total * lq)
        )
        return -terms.sum(-1) / (alpha * beta)
    if alpha == 0 and beta == 0:
        return 0.5 * (lp - lq).pow(2).sum(-1)
    if alpha == 0:
        q_b, p_b = torch.exp(beta * lq), torch.exp(beta * lp)
        return (q_b * beta * (lq - lp) - q_b + p_b).sum(-1) / beta**2
    if beta == 0:
        p_a, q_a = torch.exp(alpha * lp), torch.exp(alpha * lq)
        return (p_a * alpha * (lp - lq) - p_a + q_a).sum(-1) / alpha**2
    ratio = alpha * (lp - lq)  # α = −β ≠ 0
    return (-ratio + torch.exp(ratio) - 1.0).sum(-1) / alpha**2


@register_loss("ab_div")
def ab_div(
    student_logits: Tensor, teacher_logits: Teacher, *, temperature: float = 1.0,
    reduction: str = "batchmean", mask: Tensor | None = None, tail: str = "renormalize",
    alpha: float = 0.5, beta: float = 0.5,
) -> Tensor:  # fmt: skip
    """Alpha-beta divergence (Cichocki et al., 2011) as a KD loss (ABKD, Wang et al., 2025):

        D_AB^(α,β)(p ‖ q) = −1/(αβ) · Σ_c [p_c^α q_c^β − α/(α+β)·p_c^(α+β) − β/(α+β)·q_c^(α+β)]

    with the continuous limits at α = 0, β = 0 and α + β = 0. (α, β) = (1, 0) is KL(p ‖ q),
    (0, 1) is KL(q ‖ p); α trades off hardness (focus on the target), β confidence (spread of
    mass). The default (½, ½) is four times the squared Hellinger distance. Negative
    exponents are infinite where a probability is exactly zero.
    """
    return distribution_loss(
        ab_rows, student_logits, teacher_logits, temperature=temperature,
        reduction=reduction, mask=mask, tail=tail, alpha=alpha, beta=beta,
    )  # fmt: skip
