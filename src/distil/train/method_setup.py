"""Prepare a method before training: tap its layers, measure them, hand it its context."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from distil.data.datasets import in_order
from distil.methods.base import Method, SetupContext, one_teacher
from distil.models.taps import discover_shapes
from distil.teachers.base import Teacher


def prepare_method(
    method: Method,
    student: nn.Module,
    teachers: Mapping[str, Teacher],
    train_data: Dataset,
    *,
    task: Any,
    data: Any,
    batch_size: int = 512,
) -> None:
    """Tap the teacher layers the method reads, measure both sides' shapes on two training
    samples, and bind the method to its :class:`SetupContext` — before the optimizer exists,
    so whatever the method builds is trained, checkpointed and synchronised with the student.
    Methods that read teacher layers listen to one teacher (``max_teachers = 1``)."""
    student_layers, teacher_layers = method.feature_layers()
    teacher = one_teacher(teachers) if len(teachers) == 1 else None
    if teacher_layers:
        teacher.capture(teacher_layers)
    sample = default_collate([train_data[i] for i in range(min(2, len(train_data)))])
    student_shapes = (
        discover_shapes(student, sample["inputs"], student_layers) if student_layers else {}
    )
    teacher_shapes = {}
    if teacher_layers:
        features = teacher.signal(sample).features
        teacher_shapes = {name: tuple(value.shape[1:]) for name, value in features.items()}

    @torch.no_grad()
    def teacher_outputs() -> tuple[Tensor, dict[str, Tensor], Tensor]:
        logits, features, labels = [], [], []
        for batch in in_order(train_data, batch_size):
            outputs = teacher.signal(batch)
            logits.append(outputs.logits.float().cpu())
            features.append({k: v.float().cpu() for k, v in outputs.features.items()})
            labels.append(batch["labels"])
        merged = {k: torch.cat([f[k] for f in features]) for k in features[0]}
        return torch.cat(logits), merged, torch.cat(labels)

    method.bind(
        SetupContext(
            student=student,
            teachers=dict(teachers),
            train_data=train_data,
            data=data,
            forward=task.forward,
            student_shapes=student_shapes,
            teacher_shapes=teacher_shapes,
            num_classes=task.num_classes(data),
            build_student=lambda: task.build_student(data),
            teacher_outputs=teacher_outputs if teacher is not None else None,
            target_loss=task.target_loss,
        )
    )
