"""The student alone: cross-entropy on the labels. Every result is compared to this."""

from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from pydantic import Field

from distil.losses.logits import upcast
from distil.methods.base import LossOutput, Method, MethodConfig, register_method
from distil.outputs import ModelOutputs


class SupervisedConfig(MethodConfig):
    """Settings of plain supervised training."""

    name: Literal["supervised"] = "supervised"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="label smoothing ε")


@register_method
class Supervised(Method):
    """Cross-entropy on ground-truth labels; needs no teacher."""

    name = "supervised"
    Config = SupervisedConfig
    needs_teacher = False

    def loss(
        self, student: ModelOutputs, teacher: ModelOutputs | None, batch: dict[str, Any]
    ) -> LossOutput:
        ce = F.cross_entropy(
            upcast(student.logits), batch["labels"], label_smoothing=self.config.label_smoothing
        )
        return LossOutput.combine({"ce": (1.0, ce)})
