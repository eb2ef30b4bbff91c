"""LELP: distilling pseudo-subclasses for few-class tasks (Loo et al., 2024, "Linear
Projections of Teacher Embeddings for Few-Class Distillation").

With two classes a teacher's soft labels carry almost nothing (one number per sample). Its
*embedding* knows much more: how the samples of each class differ among themselves. LELP
turns that into pseudo-subclasses:

1. remove from the teacher's pre-classifier embeddings h what the logits already carry, by
   projecting onto the null space of the classifier W (estimated here by least squares from
   the teacher's own embeddings and logits over the training split, so any teacher works);
2. per class c, keep the top-S principal directions of those projected embeddings, rotated
   by a random orthogonal S×S matrix to spread the variance evenly;
3. a sample's subclass scores are its projections on its class's directions, and the
   target over (class, subclass) pairs is q(c, s | x) = p_T(c | x) · softmax_s(u_{c,s} / β).

The student learns q through an extra head on its embedding (``student_layer``) with S·C
outputs, so the subclass structure shapes the shared representation, while its own
classifier keeps predicting the C classes:

    L = (1 − α) · CE(y, z_s) + α · CE(q, softmax(head(f_s)))

The paper widens the student's classifier to S·C outputs instead; the extra head is our
choice, so any student model works unchanged. All fitting happens once, before training,
from one pass of the teacher over the training split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distil.errors import ShapeError
from distil.losses.logits import upcast
from distil.methods.base import (
    LossOutput,
    Method,
    MethodConfig,
    SetupContext,
    one_teacher,
    register_method,
)
from distil.outputs import ModelOutputs


class LELPConfig(MethodConfig):
    """Settings of LELP."""

    name: Literal["lelp"] = "lelp"
    student_layer: str = Field(description="student module path of the pre-classifier embedding")
    teacher_layer: str = Field(description="teacher module path of the pre-classifier embedding")
    subclasses: int = Field(4, ge=2, description="S pseudo-subclasses per class")
    beta: float = Field(1.0, gt=0.0, description="softmax temperature of the subclass scores")
    temperature: float = Field(
        1.0, gt=0.0, description="temperature of the teacher's class probabilities"
    )
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the subclass loss")
    seed: int = Field(0, description="seed of the random rotations")


def null_space_projection(embeddings: Tensor, logits: Tensor) -> Tensor:
    """P = I − W⁺W for the least-squares linear classifier W with logits ≈ W h + b."""
    with_bias = torch.cat(
        [embeddings, torch.ones(len(embeddings), 1, dtype=embeddings.dtype)], dim=1
    )
    solution = torch.linalg.lstsq(with_bias, logits).solution  # (D + 1, C)
    weight = solution[:-1].t()  # (C, D)
    return (
        torch.eye(embeddings.shape[1], dtype=embeddings.dtype) - torch.linalg.pinv(weight) @ weight
    )


def subclass_directions(
    projected: Tensor, labels: Tensor, num_classes: int, subclasses: int, seed: int
) -> tuple[Tensor, Tensor]:
    """Per-class means ``(C, D)`` and rotated top principal directions ``(C, D, S)``."""
    generator = torch.Generator().manual_seed(seed)
    means, directions = [], []
    for c in range(num_classes):
        members = projected[labels == c]
        if len(members) < 2:
            raise ShapeError(f"lelp: class {c} has {len(members)} training samples; PCA needs ≥ 2")
        mean = members.mean(0)
        _, _, right = torch.linalg.svd(members - mean, full_matrices=False)
        top = right[:subclasses].t()  # (D, S') with S' ≤ S when D or the class is small
        if top.shape[1] < subclasses:
            top = torch.cat(
                [top, torch.zeros(top.shape[0], subclasses - top.shape[1], dtype=top.dtype)], 1
            )
        rotation, _ = torch.linalg.qr(
            torch.randn(subclasses, subclasses, generator=generator, dtype=top.dtype)
        )
        means.append(mean)
        directions.append(top @ rotation)
    return torch.stack(means), torch.stack(directions)


@register_method
class LELP(Method):
    """CE plus an extra student head that learns the teacher's pseudo-subclass distribution."""

    name = "lelp"
    Config = LELPConfig

    def feature_layers(self) -> tuple[list[str], list[str]]:
        return [self.config.student_layer], [self.config.teacher_layer]

    def setup(self, context: SetupContext) -> None:
        config = self.config
        if context.teacher_outputs is None:
            raise ShapeError("lelp needs a teacher to fit its subclasses")
        logits, features, labels = context.teacher_outputs()
        embeddings = features[config.teacher_layer].flatten(1).double()
        projection = null_space_projection(embeddings, logits.double())
        means, directions = subclass_directions(
            embeddings @ projection.t(), labels, context.num_classes, config.subclasses, config.seed
        )
        self.register_buffer("projection", projection.float())
        self.register_buffer("class_means", means.float())
        self.register_buffer("directions", directions.float())
        student_dim = int(torch.tensor(context.student_shapes[config.student_layer]).prod())
        self.head = nn.Linear(student_dim, context.num_classes * config.subclasses)

    def subclass_targets(self, teacher_logits: Tensor, teacher_embeddings: Tensor) -> Tensor:
        """q(c, s | x) = p_T(c | x) · softmax_s(u_{c,s}(x) / β), flattened to ``(N, C·S)``."""
        projected = teacher_embeddings @ self.projection.t()  # (N, D)
        centred = projected[:, None, :] - self.class_means[None]  # (N, C, D)
        scores = torch.einsum("ncd,cds->ncs", centred, self.directions)
        within = torch.softmax(scores / self.config.beta, dim=-1)
        class_probs = torch.softmax(teacher_logits / self.config.temperature, dim=-1)
        return (class_probs[:, :, None] * within).flatten(1)

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        teacher = one_teacher(teachers)
        config = self.config
        ce = F.cross_entropy(upcast(student.logits), batch["labels"])
        with torch.no_grad():
            targets = self.subclass_targets(
                upcast(teacher.logits), upcast(teacher.features[config.teacher_layer]).flatten(1)
            )
        subclass_logits = self.head(upcast(student.features[config.student_layer]).flatten(1))
        subclass = -(targets * F.log_softmax(subclass_logits, dim=-1)).sum(-1).mean()
        return LossOutput.combine(
            {"ce": (1.0 - config.alpha, ce), "subclass": (config.alpha, subclass)}
        )
