"""Prepare a method before training: tap its layers, measure them, let it build its parts."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from distil.data.datasets import in_order
from distil.methods.base import Method, SetupInfo
from distil.models.taps import discover_shapes
from distil.outputs import call_model
from distil.teachers.base import Teacher


def prepare_method(
    method: Method,
    student: nn.Module,
    teacher: Teacher | None,
    train_data: Dataset,
    batch_size: int,
) -> None:
    """Tap the teacher layers the method reads, measure both sides' shapes on two training
    samples, and call ``method.setup`` — before the optimizer exists, so whatever the method
    builds is trained, checkpointed and synchronised with the student."""
    student_layers, teacher_layers = method.feature_layers()
    if teacher_layers:
        teacher.capture(teacher_layers)
    sample = default_collate([train_data[i] for i in range(min(2, len(train_data)))])
    student_shapes = (
        discover_shapes(student, sample["inputs"], student_layers) if student_layers else {}
    )
    was_training = student.training
    with torch.no_grad():
        num_classes = call_model(student.eval(), sample["inputs"]).shape[-1]
    student.train(was_training)
    teacher_shapes = {}
    if teacher_layers:
        features = teacher.signal(sample).features
        teacher_shapes = {name: tuple(value.shape[1:]) for name, value in features.items()}
    num_samples = len(getattr(train_data, "dataset", train_data))  # a Subset indexes the whole

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

    method.setup(SetupInfo(student_shapes, teacher_shapes, num_classes, num_samples,
                           teacher_outputs if teacher is not None else None))  # fmt: skip
