"""DDK: distilling domain knowledge (Liu et al., "DDK: Distilling Domain Knowledge for
Efficient Large Language Models", NeurIPS 2024).

Plain KD samples the training mix as it comes, so a student ends up close to its teacher
on some domains and far on others. DDK keeps measuring the teacher–student gap per domain
and shifts the sampling mix towards the domains where it is largest — smoothly, so the mix
does not oscillate:

    r_d = gap_d / Σ_e gap_e,      w ← (1 − γ) · w + γ · r          (every ``update_every`` steps)

Batches are then drawn domain first (by w), block second (uniformly in the domain). The
gap is the distillation loss per domain, KL(teacher ‖ student), measured on a fixed sample
of training blocks per domain — a teacher cache can provide it; the paper's gap is the
difference of the two models' cross-entropies, which needs the teacher's full distribution.
Weights are buffers: checkpoints keep them and a resumed run continues exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from distil import losses
from distil.methods.base import (
    LossOutput,
    Method,
    MethodConfig,
    SetupContext,
    one_teacher,
    register_method,
)
from distil.methods.terms import label_and_teacher_terms
from distil.outputs import ModelOutputs, move_batch


class DDKConfig(MethodConfig):
    """Settings of DDK."""

    name: Literal["ddk"] = "ddk"
    divergence: str = Field("forward_kl", description="distillation loss (and gap measure)")
    temperature: float = Field(1.0, gt=0.0)
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the distillation term")
    update_every: int = Field(20, ge=1, description="steps between domain-weight updates")
    smoothing: float = Field(0.5, gt=0.0, le=1.0, description="γ: how far one update moves w")
    probe_blocks: int = Field(8, ge=1, description="training blocks per domain probed for the gap")
    min_weight: float = Field(0.01, ge=0.0, lt=1.0, description="floor of any domain's weight")
    seed: int = 0


@register_method
class DDK(Method):
    """KD with the domain mix of batches steered towards the largest teacher–student gaps."""

    name = "ddk"
    Config = DDKConfig

    def setup(self, context: SetupContext) -> None:
        """Uniform domain weights, and the fixed probe blocks of each domain."""
        train = context.train_data
        domains = train.domains
        count = len(train.domain_names)
        self.register_buffer("weights", torch.full((count,), 1.0 / count, dtype=torch.float64))
        self.register_buffer("gaps", torch.zeros(count, dtype=torch.float64))
        generator = torch.Generator().manual_seed(self.config.seed)
        self._members = [(domains == d).nonzero().flatten() for d in range(count)]
        self._probes = [
            m[torch.randperm(len(m), generator=generator)[: self.config.probe_blocks]]
            for m in self._members
        ]

    def prepare_batch(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        """A batch of the same size drawn domain-first by the current weights."""
        size = len(batch["labels"])
        seed = (self.config.seed * 1_000_003 + step) * 1_000_033 + int(batch["index"][0])
        generator = torch.Generator().manual_seed(seed)
        weights = self.weights.float().clone()
        weights[torch.tensor([len(m) == 0 for m in self._members])] = 0.0
        domains = torch.multinomial(weights, size, replacement=True, generator=generator)
        picks = torch.stack([
            self._members[d][torch.randint(len(self._members[d]), (), generator=generator)]
            for d in domains.tolist()
        ])  # fmt: skip
        return move_batch(self.context.train_data.batch(picks), batch["labels"].device)

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        teacher = one_teacher(teachers)
        return label_and_teacher_terms(
            student, teacher.logits, batch["labels"], alpha=self.config.alpha,
            divergence=self.config.divergence, temperature=self.config.temperature,
        )  # fmt: skip

    def on_step_end(self, step: int, total_steps: int, loss: LossOutput) -> None:
        if step % self.config.update_every:
            return
        gaps = self.measure_gaps()
        self.gaps.copy_(gaps)
        share = gaps.clamp_min(0) / gaps.clamp_min(0).sum().clamp_min(1e-12)
        weights = (1 - self.config.smoothing) * self.weights + self.config.smoothing * share
        weights = weights.clamp_min(self.config.min_weight)
        self.weights.copy_(weights / weights.sum())

    @torch.no_grad()
    def measure_gaps(self) -> Tensor:
        """KL(teacher ‖ student) per domain on the fixed probe blocks."""
        student, teacher = self.context.student, self.context.teacher
        was_training = student.training
        student.eval()
        device = student.head.device
        gaps = torch.zeros(len(self._probes), dtype=torch.float64)
        divergence = losses.get(self.config.divergence)
        for domain, probe in enumerate(self._probes):
            if len(probe) == 0:
                continue
            batch = move_batch(self.context.train_data.batch(probe), device)
            reference = teacher.signal(batch).to(device).logits
            logits = student(batch["inputs"]).float()
            mask = batch["labels"] >= 0
            gaps[domain] = float(
                divergence(logits, reference, temperature=self.config.temperature, mask=mask)
            )
        student.train(was_training)
        return gaps
