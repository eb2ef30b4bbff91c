"""The student and the method as one module, the unit the one loop trains and DDP wraps."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from distil.methods.base import LossOutput, Method, apply_protocol
from distil.models.taps import FeatureTaps
from distil.outputs import ModelOutputs


class StudentWithMethod(nn.Module):
    """Student and method in one module, so DDP synchronises the method's own parameters
    (projectors, heads, peer students) together with the student's. ``forward_model`` is the
    task's way of running a model on a batch; the student's tapped features are added."""

    def __init__(
        self,
        student: nn.Module,
        method: Method,
        forward_model: Callable[[nn.Module, dict[str, Any]], ModelOutputs],
    ) -> None:
        super().__init__()
        self.student = student
        self.method = method
        self.__dict__["forward_model"] = forward_model  # a task's function, not a submodule
        student_layers, _ = method.feature_layers()
        self.taps = (
            FeatureTaps(student, student_layers, owner="student") if student_layers else None
        )

    def forward(
        self, batch: dict[str, Any], teachers: Mapping[str, ModelOutputs], progress: float = 1.0
    ) -> tuple[ModelOutputs, LossOutput]:
        """The student's outputs and the method's loss, with the method config's mixing
        protocol and warm-up applied at ``progress`` (the share of training done after this
        step)."""
        student_outputs = self.forward_model(self.student, batch)
        if self.taps is not None:
            student_outputs.features = self.taps.pop()
        loss = self.method.loss(student_outputs, teachers, batch)
        return student_outputs, apply_protocol(loss, self.method.config, progress)
