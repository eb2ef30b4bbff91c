"""TAID: temporally adaptive interpolated distillation (Shing et al., ICLR 2025).

Instead of the teacher's distribution, the student chases an intermediate target that starts
near itself and moves towards the teacher as training goes on:

    p_t = softmax((1 − t) · stopgrad(z_s) + t · z_t),    L = T² · KL(p_t ‖ softmax(z_s))

so a small student is never asked to jump the whole capacity gap at once. The interpolation
parameter t rises linearly from ``t_start`` to ``t_end`` at least, and faster while the loss
is still falling quickly (the adaptive update, run after every optimizer step):

    δ = (J_prev − J) / J_prev,  m ← β·m + (1 − β)·δ,  t ← min(t_end, max(t_lin, t + η·σ(m)·(1 − t)))

t, m and J_prev are buffers, so checkpoints keep them and a resumed run continues exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from distil.methods.base import LossOutput, Method, MethodConfig, one_teacher, register_method
from distil.methods.terms import label_and_teacher_terms
from distil.outputs import ModelOutputs


class TAIDConfig(MethodConfig):
    """Settings of TAID; the defaults are the paper's."""

    name: Literal["taid"] = "taid"
    t_start: float = Field(0.4, ge=0.0, le=1.0, description="interpolation at step 0")
    t_end: float = Field(1.0, ge=0.0, le=1.0, description="interpolation at the last step")
    adaptive_rate: float = Field(5e-4, ge=0.0, description="η: size of the adaptive step")
    momentum: float = Field(0.99, ge=0.0, lt=1.0, description="β: momentum of the loss change")
    adaptive: bool = Field(True, description="False: t follows the linear schedule only")
    temperature: float = Field(1.0, gt=0.0)
    alpha: float = Field(1.0, ge=0.0, le=1.0, description="weight of the TAID term (1 − α on CE)")

    @model_validator(mode="after")
    def _ordered(self) -> TAIDConfig:
        if self.t_start > self.t_end:
            raise ValueError(f"t_start={self.t_start} must not exceed t_end={self.t_end}")
        return self


class TAIDSchedule(nn.Module):
    """The interpolation parameter t and its adaptive update (state in buffers)."""

    def __init__(self, config: TAIDConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("t", torch.tensor(config.t_start, dtype=torch.float64))
        self.register_buffer("momentum", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("previous_loss", torch.tensor(math.inf, dtype=torch.float64))

    def linear(self, step: int, total_steps: int) -> float:
        """t_start + (t_end − t_start) · step / total_steps."""
        config = self.config
        return config.t_start + (config.t_end - config.t_start) * min(
            1.0, step / max(1, total_steps)
        )

    def update(self, step: int, total_steps: int, loss: float) -> None:
        """Advance t after optimizer step ``step`` (1-based) whose loss was ``loss``."""
        config = self.config
        floor = self.linear(step, total_steps)
        if not config.adaptive:
            self.t.fill_(floor)
            return
        t = float(self.t)
        if math.isfinite(float(self.previous_loss)):
            previous = float(self.previous_loss)
            change = (previous - loss) / (previous + 1e-15)
            momentum = config.momentum * float(self.momentum) + (1 - config.momentum) * change
            self.momentum.fill_(momentum)
            t = t + config.adaptive_rate * (1.0 / (1.0 + math.exp(-momentum))) * (1.0 - t)
        self.t.fill_(min(config.t_end, max(floor, t)))
        self.previous_loss.fill_(loss)


@register_method
class TAID(Method):
    """Distil towards a target interpolated from the (detached) student to the teacher."""

    name = "taid"
    Config = TAIDConfig

    def __init__(self, config: TAIDConfig) -> None:
        super().__init__(config)
        self.schedule = TAIDSchedule(config)

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        teacher = one_teacher(teachers)
        return label_and_teacher_terms(
            student, teacher.logits, batch["labels"], alpha=self.config.alpha,
            divergence="taid_kl", temperature=self.config.temperature, term="taid",
            t=float(self.schedule.t),
        )  # fmt: skip

    def on_step_end(self, step: int, total_steps: int, loss: LossOutput) -> None:
        self.schedule.update(step, total_steps, float(loss.parts["taid"]))
