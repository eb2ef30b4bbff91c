"""FitNets hints (Romero et al., ICLR 2015): the student's intermediate feature, projected to
the teacher's shape by a trainable regressor, is pulled towards the teacher's feature:

    L = CE(y, z_s) + β · MSE(r(F_s), F_t)

The regressor r is sized automatically from the two layers' shapes (linear, 1×1 conv with
resizing, token↔spatial reshaping — see ``models/projectors.py``), so the pair may differ in
architecture. Trained in one stage with the labels (as in mdistiller's FitNet), not the
paper's two-stage schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch.nn.functional as F
from pydantic import Field

from distil.losses.features import hint_loss
from distil.losses.logits import upcast
from distil.methods.base import (
    LossOutput,
    Method,
    MethodConfig,
    SetupContext,
    one_teacher,
    register_method,
)
from distil.models.projectors import build_projector
from distil.outputs import ModelOutputs


class FitNetConfig(MethodConfig):
    """Settings of FitNets."""

    name: Literal["fitnet"] = "fitnet"
    student_layer: str = Field(description="student module path whose output is the guided layer")
    teacher_layer: str = Field(description="teacher module path whose output is the hint")
    student_layout: Literal["auto", "vector", "tokens", "map"] = "auto"
    teacher_layout: Literal["auto", "vector", "tokens", "map"] = "auto"
    projector: Literal["auto", "linear", "mlp", "identity"] = "auto"
    beta: float = Field(
        100.0, ge=0.0, description="weight of the hint loss (mdistiller, RepDistiller: 100)"
    )


@register_method
class FitNet(Method):
    """Cross-entropy plus the MSE between projected student and teacher features."""

    name = "fitnet"
    Config = FitNetConfig

    def feature_layers(self) -> tuple[list[str], list[str]]:
        return [self.config.student_layer], [self.config.teacher_layer]

    def setup(self, context: SetupContext) -> None:
        config = self.config
        self.regressor = build_projector(
            context.student_shapes[config.student_layer], context.teacher_shapes[config.teacher_layer],
            student_layout=config.student_layout, teacher_layout=config.teacher_layout,
            kind=config.projector,
        )  # fmt: skip

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        teacher = one_teacher(teachers)
        ce = F.cross_entropy(upcast(student.logits), batch["labels"])
        projected = self.regressor(student.features[self.config.student_layer])
        hint = hint_loss(projected, teacher.features[self.config.teacher_layer])
        return LossOutput.combine({"ce": (1.0, ce), "hint": (self.config.beta, hint)})
