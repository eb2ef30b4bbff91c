"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017): the student matches *where* the
teacher's layers respond, not what they compute:

    Q(F) = normalise(mean_c |F_c|^p),    L = CE + β · Σ_pairs mean((Q(F_s) − Q(F_t))²)

with β = 1000 as in the authors' code (attention-transfer's cifar.py, and mdistiller's and
RepDistiller's AT): the paper's equation writes β/2, the code applies β.

Channel counts may differ (they are averaged away); when the spatial sizes differ the larger
attention map is average-pooled to the smaller. Layers come in student/teacher pairs.
Transformer tokens ``(N, L, D)`` (declare ``tokens``) give a map over their square grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from distil.errors import ShapeError
from distil.losses.features import attention_map, attention_transfer_loss
from distil.losses.logits import upcast
from distil.methods.base import LossOutput, Method, MethodConfig, one_teacher, register_method
from distil.outputs import ModelOutputs

Layout = Literal["map", "tokens"]


class AttentionConfig(MethodConfig):
    """Settings of attention transfer."""

    name: Literal["at"] = "at"
    student_layers: list[str] = Field(
        description="student module paths, paired with teacher_layers"
    )
    teacher_layers: list[str] = Field(description="teacher module paths")
    student_layout: Layout = "map"
    teacher_layout: Layout = "map"
    p: float = Field(2.0, gt=0.0, description="exponent of the activation energy")
    beta: float = Field(
        1000.0, ge=0.0, description="weight of the attention loss (authors' code: 1000, no /2)"
    )

    @model_validator(mode="after")
    def _paired(self) -> AttentionConfig:
        if len(self.student_layers) != len(self.teacher_layers) or not self.student_layers:
            raise ValueError(
                "student_layers and teacher_layers must be non-empty lists of equal length"
            )
        return self


def _grid(features: Tensor, layout: str, p: float) -> Tensor:
    """Attention as a spatial grid ``(N, 1, *spatial)`` for pooling to a common size."""
    attention = attention_map(features, p=p, tokens=layout == "tokens")
    if layout == "tokens":
        side = math.isqrt(features.shape[1])
        if side * side != features.shape[1]:
            raise ShapeError(f"tokens {tuple(features.shape[1:])} do not form a square grid")
        return attention.reshape(len(features), 1, side, side)
    return attention.reshape(len(features), 1, *features.shape[2:])


def _common_size(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    if student.shape[2:] == teacher.shape[2:]:
        return student, teacher
    if student.dim() != teacher.dim():
        raise ShapeError(
            f"attention maps {tuple(student.shape[2:])} and {tuple(teacher.shape[2:])} differ in rank"
        )
    size = tuple(min(a, b) for a, b in zip(student.shape[2:], teacher.shape[2:], strict=True))
    pool = F.adaptive_avg_pool2d if student.dim() == 4 else F.adaptive_avg_pool1d
    return pool(student, size), pool(teacher, size)


@register_method
class AttentionTransfer(Method):
    """Cross-entropy plus the distance between normalised spatial attention maps."""

    name = "at"
    Config = AttentionConfig

    def feature_layers(self) -> tuple[list[str], list[str]]:
        return list(self.config.student_layers), list(self.config.teacher_layers)

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        teacher = one_teacher(teachers)
        config = self.config
        ce = F.cross_entropy(upcast(student.logits), batch["labels"])
        total = 0.0
        for s_name, t_name in zip(config.student_layers, config.teacher_layers, strict=True):
            s_grid = _grid(student.features[s_name], config.student_layout, config.p)
            t_grid = _grid(teacher.features[t_name], config.teacher_layout, config.p)
            s_grid, t_grid = _common_size(s_grid, t_grid)
            s_att = F.normalize(s_grid.flatten(1), dim=1)
            t_att = F.normalize(t_grid.flatten(1), dim=1)
            total = total + attention_transfer_loss(s_att, t_att)
        return LossOutput.combine({"ce": (1.0, ce), "attention": (config.beta, total)})
