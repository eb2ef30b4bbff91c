"""OFA-KD (Hao et al., NeurIPS 2023): distil in the logit space, where every architecture
agrees on what a representation means.

Branch heads map the student's intermediate stages to class logits; each branch, and the
student's own logits, learn from the teacher's final logits with the OFA loss (a KD
cross-entropy whose target class is modulated by an exponent ε):

    L = w_ce · CE(y, z_s) + w_kd · OFA(z_s, z_t) + w_ofa · Σ_stages OFA(head_k(F_k), z_t)

Because only the teacher's logits are used, the teacher and student can be any pair (CNN →
ViT, ViT → CNN, CNN → MLP). Our heads are the auto-sized projectors to a class vector
(pool → MLP for maps and tokens); the paper's heads first downsample with separable
convolutions (CNNs) or patch merging and transformer blocks (ViTs) — a heavier head that we
leave for later. The heads exist only for training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distil import losses
from distil.losses.logits import upcast
from distil.methods.base import (
    LossOutput,
    Method,
    MethodConfig,
    SetupContext,
    one_teacher,
    register_method,
)
from distil.models.projectors import build_projector
from distil.outputs import ModelOutputs

Layout = Literal["auto", "vector", "tokens", "map"]


class OFAConfig(MethodConfig):
    """Settings of OFA-KD; defaults are the authors' (ε = 1, all weights 1, T = 1, label
    smoothing 0.1 on the CE: Hao840/OFAKD train.py)."""

    name: Literal["ofa"] = "ofa"
    branch_layers: list[str] = Field(
        description="student stages that get a branch head (module paths)"
    )
    layout: Layout = Field("auto", description="layout of the branch features")
    eps: float = Field(1.0, gt=0.0, description="modulating exponent ε on the target class")
    temperature: float = Field(1.0, gt=0.0)
    ce_weight: float = Field(1.0, ge=0.0)
    kd_weight: float = Field(1.0, ge=0.0, description="OFA loss on the student's own logits")
    branch_weight: float = Field(1.0, ge=0.0, description="OFA loss summed over the branches")
    head_hidden: int | None = Field(None, ge=1, description="hidden width of the branch MLPs")
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0, description="on the CE (authors: 0.1)")


@register_method
class OFA(Method):
    """Branch heads on the student's stages, all distilled from the teacher's logits."""

    name = "ofa"
    Config = OFAConfig

    def feature_layers(self) -> tuple[list[str], list[str]]:
        return list(self.config.branch_layers), []

    def setup(self, context: SetupContext) -> None:
        config = self.config
        self.heads = nn.ModuleDict({
            _key(layer): build_projector(
                context.student_shapes[layer], (context.num_classes,), student_layout=config.layout,
                kind="mlp", hidden=config.head_hidden,
            )
            for layer in config.branch_layers
        })  # fmt: skip

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        teacher = one_teacher(teachers)
        config, labels = self.config, batch["labels"]
        logits, teacher_logits = upcast(student.logits), upcast(teacher.logits)
        options = {"labels": labels, "eps": config.eps, "temperature": config.temperature}
        final = losses.get("ofa")(logits, teacher_logits, **options)
        branches = sum(
            losses.get("ofa")(upcast(self.heads[_key(layer)](student.features[layer])), teacher_logits, **options)
            for layer in config.branch_layers
        )  # fmt: skip
        return LossOutput.combine({
            "ce": (
                config.ce_weight,
                F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing),
            ),
            "ofa": (config.kd_weight, final),
            "branches": (config.branch_weight, branches),
        })  # fmt: skip


def _key(layer: str) -> str:
    """Module paths contain dots, which ModuleDict keys may not."""
    return layer.replace(".", "__")
