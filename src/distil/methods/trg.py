"""TRG: knowledge distillation via token-level relationship graphs (Zhang et al., 2023).

Beyond single features, the student matches the *graphs of relations* the teacher builds:

* **instance level** — the cosine-similarity graph between the batch's images (pooled
  tokens): MSE between student and teacher graphs;
* **token level** — a graph over tokens sampled from every image of the batch (so edges
  cross images): each token's softmax over its similarities to all others, student matched
  to teacher with KL — what lets rare classes borrow structure from frequent ones;
* **contextual** — inside each image, the tokens' softmax self-similarity (the teacher's
  "context"), matched with MSE;

on top of CE and logit KD. Tokens are ViT tokens ``(N, L, D)`` or CNN positions
``(N, C, H, W) → (N, H·W, C)``; a linear projector maps the student's token width to the
teacher's, and square token grids of different sizes are pooled to the smaller one. The
paper builds k-NN graphs with Gaussian edges and adds a contrastive global term under a
temperature schedule; we use dense softmax graphs (no k) — a simplification, documented.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distil import losses
from distil.errors import ShapeError
from distil.losses.divergences import kl_rows
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

Layout = Literal["map", "tokens"]


class TRGConfig(MethodConfig):
    """Settings of TRG."""

    name: Literal["trg"] = "trg"
    student_layer: str = Field(description="student module path (CNN map or ViT tokens)")
    teacher_layer: str = Field(description="teacher module path (CNN map or ViT tokens)")
    student_layout: Layout = "map"
    teacher_layout: Layout = "map"
    tokens_per_image: int = Field(
        8, ge=1, description="tokens sampled per image for the token graph"
    )
    graph_temperature: float = Field(0.1, gt=0.0, description="softmax temperature of graph edges")
    instance_weight: float = Field(1.0, ge=0.0)
    token_weight: float = Field(1.0, ge=0.0)
    context_weight: float = Field(1.0, ge=0.0)
    kd_weight: float = Field(1.0, ge=0.0)
    temperature: float = Field(4.0, gt=0.0, description="temperature of the logit KD term")


def as_tokens(features: Tensor, layout: str) -> Tensor:
    """``(N, L, D)`` tokens from a CNN map ``(N, C, H, W)`` (one token per position) or tokens."""
    if layout == "tokens":
        return features
    return features.flatten(2).transpose(1, 2)


def pool_tokens(tokens: Tensor, count: int) -> Tensor:
    """Average-pool a square token grid down to ``count`` tokens (a smaller square)."""
    if tokens.shape[1] == count:
        return tokens
    side, target = math.isqrt(tokens.shape[1]), math.isqrt(count)
    if side * side != tokens.shape[1] or target * target != count:
        raise ShapeError(f"token grids of {tokens.shape[1]} and {count} tokens are not both square")
    grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
    return F.adaptive_avg_pool2d(grid, target).flatten(2).transpose(1, 2)


def relation_logits(nodes: Tensor, temperature: float) -> Tensor:
    """Cosine similarities between nodes divided by the temperature, self-edges removed."""
    normalised = F.normalize(nodes, dim=-1)
    similarity = normalised @ normalised.transpose(-1, -2) / temperature
    eye = torch.eye(similarity.shape[-1], dtype=torch.bool, device=similarity.device)
    return similarity.masked_fill(eye, float("-inf"))


@register_method
class TRG(Method):
    """CE + KD + instance-, token- and context-level relation-graph matching."""

    name = "trg"
    Config = TRGConfig

    def feature_layers(self) -> tuple[list[str], list[str]]:
        return [self.config.student_layer], [self.config.teacher_layer]

    def setup(self, context: SetupContext) -> None:
        config = self.config
        student = context.student_shapes[config.student_layer]
        teacher = context.teacher_shapes[config.teacher_layer]
        student_width = student[-1] if config.student_layout == "tokens" else student[0]
        teacher_width = teacher[-1] if config.teacher_layout == "tokens" else teacher[0]
        self.projector = nn.Linear(student_width, teacher_width)

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        teacher = one_teacher(teachers)
        config = self.config
        logits = upcast(student.logits)
        s_tokens = self.projector(
            as_tokens(upcast(student.features[config.student_layer]), config.student_layout)
        )
        t_tokens = as_tokens(
            upcast(teacher.features[config.teacher_layer]), config.teacher_layout
        ).detach()
        count = min(s_tokens.shape[1], t_tokens.shape[1])
        s_tokens, t_tokens = pool_tokens(s_tokens, count), pool_tokens(t_tokens, count)
        tau = config.graph_temperature

        # instance level: relations between the images of the batch
        instance = F.mse_loss(
            F.normalize(s_tokens.mean(1), dim=1) @ F.normalize(s_tokens.mean(1), dim=1).t(),
            F.normalize(t_tokens.mean(1), dim=1) @ F.normalize(t_tokens.mean(1), dim=1).t(),
        )
        # token level: a graph over tokens sampled from every image (edges cross images)
        picks = torch.randint(
            count, (len(s_tokens), min(config.tokens_per_image, count)), device=s_tokens.device
        )
        rows = torch.arange(len(s_tokens), device=s_tokens.device)[:, None]
        s_nodes, t_nodes = s_tokens[rows, picks].flatten(0, 1), t_tokens[rows, picks].flatten(0, 1)
        token = kl_rows(
            F.log_softmax(relation_logits(t_nodes, tau), -1),
            F.log_softmax(relation_logits(s_nodes, tau), -1),
        ).mean()
        # contextual: each image's token self-similarity
        scale = math.sqrt(t_tokens.shape[-1])
        context = F.mse_loss(
            torch.softmax(s_tokens @ s_tokens.transpose(1, 2) / scale, -1),
            torch.softmax(t_tokens @ t_tokens.transpose(1, 2) / scale, -1),
        )
        kd = losses.forward_kl(logits, teacher.logits, temperature=config.temperature)
        return LossOutput.combine({
            "ce": (1.0, F.cross_entropy(logits, batch["labels"])),
            "kd": (config.kd_weight, kd),
            "instance": (config.instance_weight, instance),
            "token": (config.token_weight, token),
            "context": (config.context_weight, context),
        })  # fmt: skip
