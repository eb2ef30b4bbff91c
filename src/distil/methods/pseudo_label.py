"""Hard distillation: cross-entropy on the teacher's predicted classes (pseudo-labels).

    L = α · CE(argmax z_t, z_s) + (1 − α) · CE(y, z_s)

The simplest use of a teacher — what self-training and "hard" DeiT-style distillation do —
and the baseline that tells whether a method gains from the teacher's *soft* outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch.nn.functional as F
from pydantic import Field

from distil.losses.logits import upcast
from distil.methods.base import LossOutput, Method, MethodConfig, one_teacher, register_method
from distil.outputs import ModelOutputs


class PseudoLabelConfig(MethodConfig):
    """Settings of hard distillation."""

    name: Literal["pseudo_label"] = "pseudo_label"
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the teacher's labels")


@register_method
class PseudoLabel(Method):
    """Cross-entropy on the teacher's argmax classes, mixed with the true labels."""

    name = "pseudo_label"
    Config = PseudoLabelConfig

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        teacher = one_teacher(teachers)
        logits = upcast(student.logits)
        pseudo = F.cross_entropy(logits, teacher.logits.argmax(-1))
        ce = F.cross_entropy(logits, batch["labels"])
        alpha = self.config.alpha
        return LossOutput.combine({"pseudo": (alpha, pseudo), "ce": (1.0 - alpha, ce)})
