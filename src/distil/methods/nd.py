"""ND loss, "KD++" (Wang et al., ICCV 2023, "Improving Knowledge Distillation via
Regularizing Feature Norm and Direction"): alongside KD, the student's embedding is pushed
along the direction of its class's centre in the teacher's embedding space, with a length
up to the larger of the two embeddings' norms:

    L_ND = mean_i [1 − ⟨s_i, c_{y_i}/‖c_{y_i}‖⟩ / max(‖s_i‖, ‖t_i‖)]
    L = CE + λ_kd · T² · KL(p_t ‖ q) + λ_nd · L_ND

s_i is the student embedding (through a BN → Dropout → Linear projector when the widths
differ), t_i the teacher's embedding of the same sample, c_k the teacher's mean embedding of
class k. The paper computes the centres once over the training set; here they are running
means over the training batches seen so far (buffers, so checkpoints keep them), which
equal the paper's after one epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distil import losses
from distil.errors import ShapeError
from distil.losses.logits import upcast
from distil.methods.base import (
    PAPER_WARMUP,
    LossOutput,
    Method,
    MethodConfig,
    SetupContext,
    one_teacher,
    register_method,
)
from distil.outputs import ModelOutputs


class NDConfig(MethodConfig):
    """Settings of KD++ with the ND loss."""

    name: Literal["nd"] = "nd"
    student_layer: str = Field(description="student module path of the pre-classifier embedding")
    teacher_layer: str = Field(description="teacher module path of the pre-classifier embedding")
    temperature: float = Field(4.0, gt=0.0)
    kd_weight: float = Field(3.5, ge=0.0, description="authors' resnet32x4→resnet8x4 value")
    nd_weight: float = Field(2.0, ge=0.0, description="authors' resnet32x4→resnet8x4 value")
    warmup: float = Field(
        PAPER_WARMUP, ge=0.0, le=1.0,
        description="share of training over which the teacher terms ramp in (20 of 240 epochs)",
    )  # fmt: skip


def nd_loss(
    student_embeddings: Tensor, teacher_embeddings: Tensor, centres: Tensor, labels: Tensor
) -> Tensor:
    """mean_i [1 − ⟨s_i, ĉ_{y_i}⟩ / max(‖s_i‖, ‖t_i‖)], ĉ the unit class centre."""
    directions = F.normalize(centres[labels], dim=1)
    projection = (student_embeddings * directions).sum(1)
    scale = torch.maximum(student_embeddings.norm(dim=1), teacher_embeddings.norm(dim=1))
    return (1.0 - projection / scale.clamp_min(1e-12)).mean()


@register_method
class ND(Method):
    """KD plus the norm-and-direction loss towards the teacher's class centres."""

    name = "nd"
    Config = NDConfig

    def feature_layers(self) -> tuple[list[str], list[str]]:
        return [self.config.student_layer], [self.config.teacher_layer]

    def setup(self, context: SetupContext) -> None:
        # a globally pooled map (C, 1, 1) is a vector too (a ResNet's pool output)
        student_shape = _as_vector(context.student_shapes[self.config.student_layer])
        teacher_shape = _as_vector(context.teacher_shapes[self.config.teacher_layer])
        if len(student_shape) != 1 or len(teacher_shape) != 1:
            raise ShapeError(
                f"nd reads pooled embeddings (vectors): student {student_shape}, teacher "
                f"{teacher_shape}; pick the layers just before the classifier"
            )
        student_dim, teacher_dim = student_shape[0], teacher_shape[0]
        self.projector = (
            nn.Identity() if student_dim == teacher_dim
            else nn.Sequential(nn.BatchNorm1d(student_dim), nn.Dropout(0.5), nn.Linear(student_dim, teacher_dim))
        )  # fmt: skip
        self.register_buffer(
            "centre_sums", torch.zeros(context.num_classes, teacher_dim, dtype=torch.float64)
        )
        self.register_buffer("centre_counts", torch.zeros(context.num_classes, dtype=torch.float64))

    @torch.no_grad()
    def _update_centres(self, teacher_embeddings: Tensor, labels: Tensor) -> Tensor:
        if self.training:
            self.centre_sums.index_add_(0, labels, teacher_embeddings.double())
            self.centre_counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
        return (self.centre_sums / self.centre_counts.clamp_min(1)[:, None]).to(
            teacher_embeddings.dtype
        )

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        teacher = one_teacher(teachers)
        config, labels = self.config, batch["labels"]
        logits = upcast(student.logits)
        teacher_embeddings = upcast(teacher.features[config.teacher_layer].flatten(1))
        student_embeddings = self.projector(
            upcast(student.features[config.student_layer].flatten(1))
        )
        centres = self._update_centres(teacher_embeddings, labels)
        kd = losses.forward_kl(logits, teacher.logits, temperature=config.temperature)
        return LossOutput.combine({
            "ce": (1.0, F.cross_entropy(logits, labels)),
            "kd": (config.kd_weight, kd),
            "nd": (config.nd_weight, nd_loss(student_embeddings, teacher_embeddings, centres, labels)),
        })  # fmt: skip


def _as_vector(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``(C, 1, …, 1)`` → ``(C,)``; any other shape unchanged."""
    return shape[:1] if shape and all(size == 1 for size in shape[1:]) else shape
