"""CRD: contrastive representation distillation (Tian et al., ICLR 2020).

Student and teacher embeddings are mapped by small heads (linear → L2 norm, 128-d) into a
shared space where each sample's student embedding must pick out *its own* teacher
embedding among K others (and vice versa) — a contrastive objective that transfers the
teacher's representation structure, not just its outputs. Negatives come from two memory
banks (one per side) holding every training sample's latest embedding, updated with
momentum m:

    P(i | v) = exp(⟨m_i, v⟩/τ) / Z,   ℓ = −log[P_0/(P_0 + K/N)] − Σ_{j≥1} log[(K/N)/(P_j + K/N)]
    L = CE + β · (ℓ_student_anchor + ℓ_teacher_anchor)

(the NCE form of the official code, with Z fixed from the first batch). Negatives are drawn
uniformly among the samples of the other classes, as the official code does
(``negatives_from: all`` draws over the whole training split); the banks are buffers, so
checkpoints carry them and a resumed run continues exactly. Defaults are the paper's
(K = 16384, τ = 0.07, m = 0.5, 128-d, β = 0.8), K capped by the data.
"""

from __future__ import annotations

import math
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


class CRDConfig(MethodConfig):
    """Settings of CRD; defaults are the paper's except K, capped by the data size."""

    name: Literal["crd"] = "crd"
    student_layer: str = Field(description="student module path of the pre-classifier embedding")
    teacher_layer: str = Field(description="teacher module path of the pre-classifier embedding")
    feature_dim: int = Field(128, ge=2, description="dimension of the contrastive space")
    negatives: int = Field(
        16384, ge=1, description="K negatives per anchor (capped by the other classes' samples)"
    )
    negatives_from: Literal["other_classes", "all"] = Field(
        "other_classes",
        description="draw negatives among the other classes' samples (the authors' code) or "
        "among all training samples",
    )
    temperature: float = Field(0.07, gt=0.0, description="τ")
    momentum: float = Field(0.5, ge=0.0, lt=1.0, description="memory-bank momentum m")
    beta: float = Field(0.8, ge=0.0, description="weight of the contrastive loss")


def nce_loss(scores: Tensor, noise: float) -> Tensor:
    """−log[P_0/(P_0 + noise)] − Σ_{j≥1} log[noise/(P_j + noise)], mean over anchors.

    ``scores`` ``(B, K + 1)`` are normalised probabilities P, column 0 the positive.
    """
    positive = torch.log(scores[:, 0] / (scores[:, 0] + noise + 1e-7))
    negatives = torch.log(noise / (scores[:, 1:] + noise + 1e-7)).sum(1)
    return -(positive + negatives).mean()


class Embed(nn.Module):
    """Linear map to the contrastive space, then L2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, features: Tensor) -> Tensor:
        return F.normalize(self.linear(features.flatten(1)), dim=1)


@register_method
class CRD(Method):
    """Cross-entropy plus a two-way contrastive loss against memory banks of embeddings."""

    name = "crd"
    Config = CRDConfig

    def feature_layers(self) -> tuple[list[str], list[str]]:
        return [self.config.student_layer], [self.config.teacher_layer]

    def setup(self, context: SetupContext) -> None:
        config = self.config
        flat = {side: math.prod(shape[name]) for side, shape, name in (
            ("student", context.student_shapes, config.student_layer),
            ("teacher", context.teacher_shapes, config.teacher_layer))}  # fmt: skip
        self.embed_student = Embed(flat["student"], config.feature_dim)
        self.embed_teacher = Embed(flat["teacher"], config.feature_dim)
        if context.num_samples < 2:
            raise ShapeError("crd needs at least two training samples for negatives")
        self.num_samples = context.num_samples
        labels = _labels_by_index(context.train_data)
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels)
        # samples sorted by class: class c occupies [start[c], start[c] + counts[c])
        self.register_buffer("by_class", order, persistent=False)
        self.register_buffer("class_start", torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("class_count", counts, persistent=False)
        self.register_buffer("labels_by_index", labels, persistent=False)
        pool = context.num_samples - int(counts.max())
        if config.negatives_from == "all":
            pool = context.num_samples - 1
        if pool < 1:
            raise ShapeError("crd needs samples of at least two classes for negatives")
        self.k = min(config.negatives, pool)
        bound = 1.0 / math.sqrt(config.feature_dim / 3)
        for bank in ("student_bank", "teacher_bank"):
            self.register_buffer(
                bank, (torch.rand(context.num_samples, config.feature_dim) * 2 - 1) * bound
            )
        self.register_buffer("normalisers", torch.full((2,), -1.0))  # Z for each side, set once

    def _scores(self, bank: Tensor, anchors: Tensor, indices: Tensor, side: int) -> Tensor:
        """P = exp(⟨bank[idx], anchor⟩/τ)/Z for the positive and K negatives: ``(B, K+1)``."""
        rows = bank[indices].detach()  # (B, K+1, D)
        logits = torch.einsum("bkd,bd->bk", rows, anchors) / self.config.temperature
        scores = torch.exp(logits)
        if self.normalisers[side] < 0:
            self.normalisers[side] = (scores.mean() * self.num_samples).detach()
        return scores / float(self.normalisers[side])  # a constant, not part of the graph

    def _negatives(self, index: Tensor) -> Tensor:
        """K negative indices per anchor: uniform over the other classes' samples (a draw u
        over the N − n_y samples outside class y, mapped around class y's block in the
        class-sorted order), or over all samples."""
        shape, device = (len(index), self.k), index.device
        if self.config.negatives_from == "all":
            return torch.randint(self.num_samples, shape, device=device)
        label = self.labels_by_index[index]
        start, count = self.class_start[label][:, None], self.class_count[label][:, None]
        draws = (torch.rand(shape, device=device) * (self.num_samples - count)).long()
        draws = torch.minimum(draws, self.num_samples - count - 1)  # rand() < 1, but float rounding
        return self.by_class[draws + count * (draws >= start)]

    @torch.no_grad()
    def _update(self, bank: Tensor, index: Tensor, embeddings: Tensor) -> None:
        momentum = self.config.momentum
        bank[index] = F.normalize(
            momentum * bank[index] + (1 - momentum) * embeddings.detach(), dim=1
        )

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        teacher = one_teacher(teachers)
        config, index = self.config, batch["index"]
        ce = F.cross_entropy(upcast(student.logits), batch["labels"])
        student_embedding = self.embed_student(upcast(student.features[config.student_layer]))
        teacher_embedding = self.embed_teacher(
            upcast(teacher.features[config.teacher_layer]).detach()
        )
        indices = torch.cat([index[:, None], self._negatives(index)], dim=1)  # positive first
        noise = self.k / self.num_samples
        contrast = nce_loss(
            self._scores(self.teacher_bank, student_embedding, indices, 0), noise
        ) + nce_loss(self._scores(self.student_bank, teacher_embedding, indices, 1), noise)
        if self.training:
            self._update(self.student_bank, index, student_embedding)
            self._update(self.teacher_bank, index, teacher_embedding)
        return LossOutput.combine({"ce": (1.0, ce), "contrast": (config.beta, contrast)})


def _labels_by_index(train_data: Any) -> Tensor:
    """Every training sample's label by its ``index`` (the whole dataset under a Subset)."""
    dataset = getattr(train_data, "dataset", train_data)
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = torch.tensor([int(dataset[i]["labels"]) for i in range(len(dataset))])
    return torch.as_tensor(labels).long()
