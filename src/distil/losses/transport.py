"""Optimal-transport distillation: the Sinkhorn distance between a batch of student
distributions and a batch of teacher distributions (SinKD).

Unlike the per-sample divergences, this compares the two *sets* of output distributions:
the cost of moving the student's batch onto the teacher's, where moving sample i onto
sample j costs the distance between their class distributions. It stays informative when
the per-sample supports barely overlap, where KL is unbounded and JSD saturates.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from distil.losses.logits import Teacher, dense_rows
from distil.losses.registry import register_loss

COSTS = ("l1", "sq_l2")


def cost_matrix(student_probs: Tensor, teacher_probs: Tensor, cost: str) -> Tensor:
    """C_ij = d(q_i, p_j) for every student row i and teacher row j: ``(n, n)``."""
    if cost == "l1":
        return (student_probs[:, None, :] - teacher_probs[None, :, :]).abs().sum(-1)
    if cost == "sq_l2":
        return (student_probs[:, None, :] - teacher_probs[None, :, :]).pow(2).sum(-1)
    raise ValueError(f"cost={cost!r} is not one of {COSTS}")


def sinkhorn_potentials(cost: Tensor, epsilon: float, iterations: int) -> tuple[Tensor, Tensor]:
    """Dual potentials (f, g) of entropic OT between uniform marginals, in log domain.

    Solves min_P <P, C> + ε·KL(P ‖ a⊗b) with a = b = 1/n by alternating
    f_i = −ε·log Σ_j b_j exp((g_j − C_ij)/ε) and g_j = −ε·log Σ_i a_i exp((f_i − C_ij)/ε),
    which never exponentiates −C/ε directly and so stays stable for small ε.
    """
    n, m = cost.shape
    log_a = torch.full((n,), -math.log(n), dtype=cost.dtype, device=cost.device)
    log_b = torch.full((m,), -math.log(m), dtype=cost.dtype, device=cost.device)
    f = torch.zeros(n, dtype=cost.dtype, device=cost.device)
    g = torch.zeros(m, dtype=cost.dtype, device=cost.device)
    for _ in range(iterations):
        f = -epsilon * torch.logsumexp(log_b[None, :] + (g[None, :] - cost) / epsilon, dim=1)
        g = -epsilon * torch.logsumexp(log_a[:, None] + (f[:, None] - cost) / epsilon, dim=0)
    return f, g


def transport_plan(cost: Tensor, f: Tensor, g: Tensor, epsilon: float) -> Tensor:
    """P_ij = a_i b_j exp((f_i + g_j − C_ij)/ε)."""
    n, m = cost.shape
    return torch.exp((f[:, None] + g[None, :] - cost) / epsilon - math.log(n) - math.log(m))


def entropic_ot(cost: Tensor, epsilon: float, iterations: int) -> Tensor:
    """OT_ε = <a, f> + <b, g> at the fixed point (= <P, C> + ε·KL(P ‖ a⊗b))."""
    f, g = sinkhorn_potentials(cost, epsilon, iterations)
    return f.mean() + g.mean()


@register_loss("sinkhorn")
def sinkhorn(
    student_logits: Tensor, teacher_logits: Teacher, *, temperature: float = 1.0,
    reduction: str = "batchmean", mask: Tensor | None = None, epsilon: float = 0.1,
    iterations: int = 50, cost: str = "l1", debias: bool = True,
) -> Tensor:  # fmt: skip
    """Batch-wise Sinkhorn distance between student and teacher distributions, × T².

    The n (unmasked) rows of q = softmax(z_s/T) and of p = softmax(z_t/T) are two uniform
    empirical measures; C_ij = ‖q_i − p_j‖₁ (``cost="l1"``, as in SinKD) or ‖q_i − p_j‖²
    (``"sq_l2"``), and ε the entropic regularisation. With ``debias`` (default) the loss is
    the Sinkhorn divergence OT_ε(q, p) − ½·OT_ε(q, q) − ½·OT_ε(p, p) (Feydy et al., 2019):
    ≥ 0 and exactly zero when the batches agree. ``debias=False`` gives SinKD's transport
    cost <P_ε, C> of the entropic plan. Gradients flow through the unrolled iterations.
    ``reduction`` must be ``batchmean`` (the value is already a batch quantity).
    Reference: Cui et al., "SinKD: Sinkhorn Distance Minimization for Knowledge
    Distillation", TNNLS 2024 (ε = 0.1, L1 cost, T = 2).
    """
    if reduction != "batchmean":
        raise ValueError("sinkhorn compares whole batches: only reduction='batchmean' applies")
    if temperature <= 0 or epsilon <= 0 or iterations < 1:
        raise ValueError("temperature and epsilon must be > 0 and iterations ≥ 1")
    student_rows, teacher_rows, row_mask = dense_rows(
        student_logits, teacher_logits, mask, "sinkhorn"
    )
    if row_mask is not None:
        student_rows, teacher_rows = student_rows[row_mask], teacher_rows[row_mask]
    student_probs = torch.softmax(student_rows / temperature, dim=-1)
    teacher_probs = torch.softmax(teacher_rows / temperature, dim=-1)
    cross = cost_matrix(student_probs, teacher_probs, cost)
    if debias:
        value = (
            entropic_ot(cross, epsilon, iterations)
            - 0.5
            * entropic_ot(cost_matrix(student_probs, student_probs, cost), epsilon, iterations)
            - 0.5
            * entropic_ot(cost_matrix(teacher_probs, teacher_probs, cost), epsilon, iterations)
        )
    else:
        f, g = sinkhorn_potentials(cross, epsilon, iterations)
        value = (transport_plan(cross, f, g, epsilon) * cross).sum()
    return value * temperature**2
