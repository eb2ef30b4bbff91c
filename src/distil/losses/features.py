"""Feature and relation losses: pure functions over intermediate representations.

Unlike the output-distribution losses these compare features (hints), spatial attention
maps, or the relations between the samples of a batch. Shapes are per function; all
reduce to a scalar mean. Registered in :data:`FEATURE_LOSSES`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.errors import ShapeError
from distil.registry import Registry

FEATURE_LOSSES: Registry = Registry("feature loss")


def _same_shape(student: Tensor, teacher: Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ShapeError(
            f"{what}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must "
            "have the same shape (project the student first)"
        )


@FEATURE_LOSSES.register("hint")
def hint_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """FitNets hint: mean squared error between (projected) student and teacher features.

    Reference: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015.
    """
    _same_shape(student_features, teacher_features, "hint")
    return F.mse_loss(student_features.float(), teacher_features.float())


def attention_map(features: Tensor, p: float = 2.0, tokens: bool = False) -> Tensor:
    """Spatial attention Q = normalise(mean_c |F_c|^p) as ``(N, positions)``.

    Maps ``(N, C, H, W)``/``(N, C, L)`` average over channels; with ``tokens`` the input is
    ``(N, L, D)`` and the embedding is averaged. L2-normalised per sample, so only *where*
    the network looks matters, not its channel count or scale.
    """
    energy = features.float().abs().pow(p)
    summed = energy.mean(-1) if tokens else energy.mean(1)
    return F.normalize(summed.flatten(1), dim=1)


@FEATURE_LOSSES.register("attention")
def attention_transfer_loss(student_attention: Tensor, teacher_attention: Tensor) -> Tensor:
    """AT: mean squared distance between normalised attention maps ``(N, positions)``.

    Channel counts need not match (attention sums them away); positions must (resize first).
    Reference: Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017.
    """
    _same_shape(student_attention, teacher_attention, "attention")
    return (student_attention - teacher_attention).pow(2).mean()


def _pairwise_distances(embeddings: Tensor) -> Tensor:
    squared = embeddings.pow(2).sum(1)
    gram = embeddings @ embeddings.t()
    return (squared[:, None] + squared[None, :] - 2 * gram).clamp_min(1e-12).sqrt() * (
        1 - torch.eye(len(embeddings), device=embeddings.device, dtype=embeddings.dtype)
    )


@FEATURE_LOSSES.register("rkd_distance")
def rkd_distance_loss(student_embeddings: Tensor, teacher_embeddings: Tensor) -> Tensor:
    """RKD distance-wise: Huber(ψ_D(s_i, s_j), ψ_D(t_i, t_j)) over all pairs, where
    ψ_D = ‖x_i − x_j‖₂ / μ and μ is the batch's mean pairwise distance (scale-free).

    Embeddings ``(N, D_s)`` and ``(N, D_t)``: the dimensions may differ.
    Reference: Park et al., "Relational Knowledge Distillation", CVPR 2019.
    """
    student, teacher = student_embeddings.flatten(1).float(), teacher_embeddings.flatten(1).float()
    if len(student) != len(teacher):
        raise ShapeError(f"rkd: {len(student)} student and {len(teacher)} teacher samples")
    off_diagonal = ~torch.eye(len(student), dtype=torch.bool, device=student.device)
    d_student, d_teacher = _pairwise_distances(student), _pairwise_distances(teacher)
    d_student = d_student / d_student[off_diagonal].mean().clamp_min(1e-12)
    d_teacher = d_teacher / d_teacher[off_diagonal].mean().clamp_min(1e-12)
    # the mean runs over all N² entries, zero diagonals included, as in the authors' code
    return F.smooth_l1_loss(d_student, d_teacher)


def _angles(embeddings: Tensor) -> Tensor:
    """cos ∠(x_i − x_j, x_k − x_j) for all (i, j, k): ``(N, N, N)``."""
    differences = F.normalize(embeddings[None, :, :] - embeddings[:, None, :], dim=2)  # (j, i, D)
    return differences @ differences.transpose(1, 2)  # (j, i, k)


@FEATURE_LOSSES.register("rkd_angle")
def rkd_angle_loss(student_embeddings: Tensor, teacher_embeddings: Tensor) -> Tensor:
    """RKD angle-wise: Huber between the cosines of the angles every triplet forms.

    Reference: Park et al., "Relational Knowledge Distillation", CVPR 2019.
    """
    student, teacher = student_embeddings.flatten(1).float(), teacher_embeddings.flatten(1).float()
    if len(student) != len(teacher):
        raise ShapeError(f"rkd: {len(student)} student and {len(teacher)} teacher samples")
    return F.smooth_l1_loss(_angles(student), _angles(teacher))
