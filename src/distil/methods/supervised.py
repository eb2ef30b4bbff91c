"""The student alone: cross-entropy on the labels. Every result is compared to this."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from distil.methods.base import LossOutput, Method, MethodConfig, Need, register_method
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
    needs: ClassVar[frozenset[Need]] = frozenset()

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        options = (
            {"label_smoothing": self.config.label_smoothing} if self.config.label_smoothing else {}
        )
        return self.target_loss(student, batch, **options)
