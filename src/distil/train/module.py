"""The student and the method as one module, the unit the one loop trains and DDP wraps."""

from __future__ import annotations

from typing import Any

from torch import nn

from distil.methods.base import LossOutput, Method
from distil.models.language_model import LanguageModel
from distil.models.taps import FeatureTaps
from distil.outputs import ModelOutputs, call_model


class StudentWithMethod(nn.Module):
    """Student and method in one module, so DDP synchronises the method's own parameters
    (projectors, heads) together with the student's."""

    def __init__(self, student: nn.Module, method: Method) -> None:
        super().__init__()
        self.student = student
        self.method = method
        method.attach_student(student)
        student_layers, _ = method.feature_layers()
        self.taps = (
            FeatureTaps(student, student_layers, owner="student") if student_layers else None
        )

    def forward(
        self, batch: dict[str, Any], teacher: ModelOutputs | None
    ) -> tuple[ModelOutputs, LossOutput]:
        if isinstance(self.student, LanguageModel):
            # Logits stay unmaterialised: the method's fused loss computes them chunk by chunk.
            student_outputs = ModelOutputs(
                logits=None,
                hidden=self.student.hidden(batch["inputs"]),
                head=self.student.head,
                vocab_size=self.student.vocab_size,
            )
        else:
            logits = call_model(self.student, batch["inputs"])
            features = self.taps.pop() if self.taps is not None else {}
            student_outputs = ModelOutputs(logits=logits, features=features)
        return student_outputs, self.method.loss(student_outputs, teacher, batch)
