"""TGeo-KD: a learned, per-sample balance between the teacher and the labels
(Hu et al., "Less or More From Teacher: Exploiting Trilateral Geometry for Knowledge
Distillation", ICLR 2024).

Each sample's loss is ``α_i · KD_i + (1 − α_i) · CE_i``, and α_i comes from a small network
that looks at the sample's *geometry*: the triangle formed by the student's prediction s,
the teacher's t and the one-hot label g (intra-sample relations), and their distances to
t̄_y, the mean teacher prediction of the sample's class in the batch (inter-sample
relations). We feed the network the lengths of those edges, ‖s−t‖₁, ‖t−g‖₁, ‖g−s‖₁,
‖t̄_y−s‖₁, ‖t̄_y−t‖₁, which keeps it independent of the number of classes.

The network is trained bilevel, as in the paper: α should make the student's *next* step
lower its loss on held-out data. We use the first-order form of that objective: a step
along −∇_θ Σ_i [α_i KD_i + (1 − α_i) CE_i] changes the held-out loss L_h by about
−η Σ_i α_i c_i + const, with c_i = ⟨∇_θ L_h, ∇_θ (KD_i − CE_i)⟩; so the network minimises
−Σ_i α_i ĉ_i (ĉ = c scaled by its mean magnitude). All c_i come from one double-backward
pass. The held-out batch is ``holdout_fraction`` of the training split, which the student
never trains on. The student's update uses α detached.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distil import losses
from distil.losses.logits import upcast
from distil.methods.base import (
    LossOutput,
    Method,
    MethodConfig,
    Need,
    one_teacher,
    register_method,
)
from distil.outputs import ModelOutputs, call_model

GEOMETRY_FEATURES = 5


class TGeoConfig(MethodConfig):
    """Settings of TGeo-KD."""

    name: Literal["tgeo"] = "tgeo"
    temperature: float = Field(4.0, gt=0.0, description="softening temperature of the KD term")
    hidden: int = Field(32, ge=1, description="width of the fusion network")
    holdout_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="training share held out for the outer objective")  # fmt: skip
    seed: int = Field(0, description="seed of the fusion network's initial weights")


def geometry(student_probs: Tensor, teacher_probs: Tensor, labels: Tensor) -> Tensor:
    """The five edge lengths per sample ``(N, 5)``: s–t, t–g, g–s, t̄_y–s, t̄_y–t (L1)."""
    one_hot = F.one_hot(labels, student_probs.shape[-1]).to(student_probs.dtype)
    # t̄_y: mean teacher prediction over the batch's samples of the same class
    same_class = (labels[:, None] == labels[None, :]).to(teacher_probs.dtype)
    class_mean = same_class @ teacher_probs / same_class.sum(-1, keepdim=True)

    def distance(a: Tensor, b: Tensor) -> Tensor:
        return (a - b).abs().sum(-1)

    return torch.stack(
        [
            distance(student_probs, teacher_probs),
            distance(teacher_probs, one_hot),
            distance(one_hot, student_probs),
            distance(class_mean, student_probs),
            distance(class_mean, teacher_probs),
        ],
        dim=-1,
    )


def alignment(
    per_sample_gap: Tensor, holdout_loss: Tensor, parameters: list[nn.Parameter]
) -> Tensor:
    """c_i = ⟨∇_θ holdout_loss, ∇_θ gap_i⟩ for every sample i, by one double backward.

    With Σ_i w_i·gap_i at w = 1, ∂/∂w_i ⟨g_h, ∇_θ Σ_j w_j gap_j⟩ = ⟨g_h, ∇_θ gap_i⟩.
    """
    holdout_grads = torch.autograd.grad(holdout_loss, parameters, allow_unused=True)
    weights = torch.ones_like(per_sample_gap, requires_grad=True)
    grads = torch.autograd.grad(
        (weights * per_sample_gap).sum(), parameters, create_graph=True, allow_unused=True
    )
    dot = sum(
        (h.detach() * g).sum()
        for h, g in zip(holdout_grads, grads, strict=True)
        if h is not None and g is not None
    )
    if not isinstance(dot, Tensor) or not dot.requires_grad:
        return torch.zeros_like(per_sample_gap)
    return torch.autograd.grad(dot, weights)[0].detach()


@register_method
class TGeoKD(Method):
    """Per-sample KD/CE fusion ratio from the student–teacher–label geometry, learned bilevel."""

    name = "tgeo"
    Config = TGeoConfig
    needs: ClassVar[frozenset[Need]] = frozenset({Need.TEACHER, Need.SAME_VOCABULARY, Need.HOLDOUT})

    def __init__(self, config: TGeoConfig) -> None:
        super().__init__(config)
        # Seeded on its own: a run builds its method before it seeds the student, so the
        # global stream here depends on what ran before (a cached teacher or a fresh one).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.fusion = nn.Sequential(
                nn.Linear(GEOMETRY_FEATURES, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 1)
            )

    def fusion_ratio(
        self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor
    ) -> Tensor:
        """α_i ∈ (0, 1) per sample, from the detached geometry."""
        features = geometry(
            torch.softmax(student_logits.detach(), -1),
            torch.softmax(teacher_logits.detach(), -1),
            labels,
        )
        return torch.sigmoid(self.fusion(features.to(self.fusion[0].weight.dtype))).squeeze(-1)

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        teacher = one_teacher(teachers)
        logits, labels = upcast(student.logits), batch["labels"]
        kd = losses.forward_kl(
            logits, teacher.logits, temperature=self.config.temperature, reduction="none"
        )
        ce = F.cross_entropy(logits, labels, reduction="none")
        alpha = self.fusion_ratio(logits, upcast(teacher.logits), labels)
        fused = (alpha.detach() * kd + (1.0 - alpha.detach()) * ce).mean()
        terms = {
            "fused": (1.0, fused),
            "kd": (0.0, kd.mean()),
            "ce": (0.0, ce.mean()),
            "alpha": (0.0, alpha.detach().mean()),
        }
        if "holdout" in batch and torch.is_grad_enabled():
            terms["fusion"] = (1.0, self._fusion_objective(alpha, kd - ce, batch["holdout"]))
        return LossOutput.combine(terms)

    def _fusion_objective(self, alpha: Tensor, gap: Tensor, holdout: dict[str, Any]) -> Tensor:
        """−Σ_i α_i ĉ_i / N: lower when α favours the term that also lowers the held-out loss."""
        student = self.context.student
        parameters = [p for p in student.parameters() if p.requires_grad]
        holdout_logits = upcast(call_model(student, holdout["inputs"]))
        holdout_loss = F.cross_entropy(holdout_logits, holdout["labels"])
        c = alignment(gap, holdout_loss, parameters)
        scaled = c / c.abs().mean().clamp_min(1e-12)
        return -(alpha * scaled).mean()
