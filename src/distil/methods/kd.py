"""Knowledge distillation (Hinton, Vinyals & Dean, 2015).

The student matches the teacher's softened class distribution as well as the labels:

    L = (1 − α) · CE(y, softmax(z_s)) + α · T² · D(softmax(z_t / T) ‖ softmax(z_s / T))

with D the forward KL of the paper by default, or any divergence registered in
``distil.losses`` (``method.divergence=reverse_kl``). The T² factor lives in the divergence.
"""

from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from pydantic import Field, field_validator

from distil import losses
from distil.losses.logits import upcast
from distil.methods.base import LossOutput, Method, MethodConfig, register_method
from distil.outputs import ModelOutputs


class KDConfig(MethodConfig):
    """Settings of Hinton-style KD."""

    name: Literal["kd"] = "kd"
    temperature: float = Field(4.0, gt=0.0, description="softening temperature T")
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight α of the distillation term")
    divergence: str = Field("forward_kl", description="registered loss used as D")

    @field_validator("divergence")
    @classmethod
    def _known_divergence(cls, name: str) -> str:
        losses.get(name)  # raises with the closest valid names
        return name


@register_method
class KD(Method):
    """Cross-entropy on labels plus a T²-scaled divergence to the teacher's soft targets."""

    name = "kd"
    Config = KDConfig

    def __init__(self, config: KDConfig) -> None:
        super().__init__(config)
        self.divergence = losses.get(config.divergence)

    def loss(
        self, student: ModelOutputs, teacher: ModelOutputs | None, batch: dict[str, Any]
    ) -> LossOutput:
        assert teacher is not None, "kd needs a teacher"
        ce = F.cross_entropy(upcast(student.logits), batch["labels"])
        kd = self.divergence(student.logits, teacher.logits, temperature=self.config.temperature)
        alpha = self.config.alpha
        return LossOutput.combine({"ce": (1.0 - alpha, ce), "kd": (alpha, kd)})
