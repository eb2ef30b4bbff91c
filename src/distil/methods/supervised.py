"""The student alone: cross-entropy on the labels. Every result is compared to this."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from distil.methods.base import LossOutput, Method, MethodConfig, register_method
from distil.methods.terms import label_and_teacher_terms
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
        return label_and_teacher_terms(
            student, None, batch["labels"], alpha=0.0,
            label_smoothing=self.config.label_smoothing,
        )  # fmt: skip
