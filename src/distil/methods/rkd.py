"""Relational KD (Park et al., CVPR 2019): the student's embeddings keep the *relations*
the teacher's embeddings have between the samples of a batch:

    L = CE + w_d · Huber(ψ_D^s, ψ_D^t) + w_a · Huber(ψ_A^s, ψ_A^t)

ψ_D are pairwise distances normalised by their batch mean, ψ_A the cosines of the angles
every triplet forms. Embedding dimensions may differ, so any architecture pair works
without a projector.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch.nn.functional as F
from pydantic import Field

from distil.losses.features import rkd_angle_loss, rkd_distance_loss
from distil.losses.logits import upcast
from distil.methods.base import LossOutput, Method, MethodConfig, one_teacher, register_method
from distil.outputs import ModelOutputs


class RKDConfig(MethodConfig):
    """Settings of RKD; the weights are the paper's."""

    name: Literal["rkd"] = "rkd"
    student_layer: str = Field(description="student module path of the embedding")
    teacher_layer: str = Field(description="teacher module path of the embedding")
    distance_weight: float = Field(25.0, ge=0.0)
    angle_weight: float = Field(50.0, ge=0.0)


@register_method
class RKD(Method):
    """Cross-entropy plus distance-wise and angle-wise relation losses."""

    name = "rkd"
    Config = RKDConfig

    def feature_layers(self) -> tuple[list[str], list[str]]:
        return [self.config.student_layer], [self.config.teacher_layer]

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        teacher = one_teacher(teachers)
        config = self.config
        ce = F.cross_entropy(upcast(student.logits), batch["labels"])
        s_emb = student.features[config.student_layer].flatten(1)
        t_emb = teacher.features[config.teacher_layer].flatten(1)
        return LossOutput.combine({
            "ce": (1.0, ce),
            "distance": (config.distance_weight, rkd_distance_loss(s_emb, t_emb)),
            "angle": (config.angle_weight, rkd_angle_loss(s_emb, t_emb)),
        })  # fmt: skip
