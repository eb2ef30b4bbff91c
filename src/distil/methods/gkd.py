"""GKD: generalized knowledge distillation, on-policy (Agarwal et al., ICLR 2024).

A student trained only on fixed sequences (ground truth, or a teacher's outputs) is never
corrected on the prefixes *it* produces at generation time — the train/inference mismatch
of auto-regressive models. GKD mixes in on-policy data: with probability λ a batch is
replaced by continuations the student samples from the batch's prompts, the teacher scores
every sampled token, and the student minimises the generalised JSD(β) between the teacher's
and its own next-token distributions there (and on the original text otherwise):

    L = JSD_β(p_teacher ‖ q_student) per token, averaged over the generated tokens.

β interpolates between forward KL (β → 0) and reverse KL (β → 1); the paper's best settings
use λ ∈ {0.5, 1} and β ∈ {0.1, 0.5, 0.9}. Which batches are on-policy is decided by
(seed, step) alone, so a resumed run makes the same choices. On-policy batches need a live
teacher (a cache cannot score new sequences).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from distil.data.text import IGNORE_INDEX
from distil.methods.base import LossOutput, Method, MethodConfig, Need, one_teacher, register_method
from distil.methods.terms import label_and_teacher_terms
from distil.outputs import ModelOutputs


class GKDConfig(MethodConfig):
    """Settings of GKD."""

    name: Literal["gkd"] = "gkd"
    on_policy_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="λ: share of batches replaced by student samples"
    )
    beta: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="β of the generalised JSD (0: forward KL, 1: reverse KL, as in TRL)",
    )
    temperature: float = Field(1.0, gt=0.0, description="temperature of the divergence")
    prompt_tokens: int = Field(16, ge=1, description="tokens of each block used as the prompt")
    new_tokens: int = Field(48, ge=1, description="tokens the student samples per prompt")
    sample_temperature: float = Field(1.0, gt=0.0, description="student sampling temperature")
    seed: int = 0


@register_method
class GKD(Method):
    """Generalised JSD to the teacher on a λ-mix of dataset and student-sampled sequences."""

    name = "gkd"
    Config = GKDConfig
    needs: ClassVar[frozenset[Need]] = frozenset(
        {Need.TEACHER, Need.LIVE_TEACHER, Need.SAME_VOCABULARY}
    )

    def is_on_policy(self, step: int) -> bool:
        """Whether step ``step`` trains on student samples (from seed and step alone)."""
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        return bool(torch.rand((), generator=generator) < self.config.on_policy_fraction)

    def prepare_batch(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        if not self.is_on_policy(step):
            return batch
        return self.sample_batch(batch, step)

    @torch.no_grad()
    def sample_batch(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        """Prompts of ``batch`` continued by the student; labels on the sampled tokens only."""
        config, student = self.config, self.context.student
        inputs = batch["inputs"]
        prompt_len = min(config.prompt_tokens, inputs["input_ids"].shape[1] - 1)
        prompts = inputs["input_ids"][:, :prompt_len]
        prompt_mask = inputs["attention_mask"][:, :prompt_len]
        was_training = student.training
        student.eval()
        torch.manual_seed(config.seed * 7_919 + step)  # sampling reproducible per step
        eos = getattr(student.hf.generation_config, "eos_token_id", None)
        sequences = student.generate(
            prompts, prompt_mask, do_sample=True, temperature=config.sample_temperature,
            top_k=0, max_new_tokens=config.new_tokens, min_new_tokens=config.new_tokens,
            pad_token_id=eos if isinstance(eos, int) else 0,
            suppress_tokens=list(range(student.vocab_size, student.head.shape[0])) or None,
        )  # fmt: skip
        student.train(was_training)
        input_ids = sequences[:, :-1]
        labels = sequences[:, 1:].clone()
        labels[:, : prompt_len - 1] = IGNORE_INDEX
        attention = torch.ones_like(input_ids)
        attention[:, :prompt_len] = prompt_mask
        return {
            "inputs": {"input_ids": input_ids, "attention_mask": attention},
            "labels": labels,
            "index": batch["index"],
            "domain": batch["domain"],
            "on_policy": torch.ones(len(labels), dtype=torch.bool, device=labels.device),
        }

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        teacher = one_teacher(teachers)
        terms = label_and_teacher_terms(
            student, teacher.logits, batch["labels"], alpha=1.0, divergence="jsd",
            temperature=self.config.temperature, term="gkd", beta=self.config.beta,
        )  # fmt: skip
        return terms
