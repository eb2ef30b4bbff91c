"""Swing distillation (Li et al., 2022): KD that keeps a teacher's private text to itself.

A teacher trained on private text can recite it, and plain KD copies what it recites into
the student. Swing changes the teacher's soft targets where the text is sensitive:

* **a swung temperature** — a target token the privacy detector flags is distilled at the
  high ``sensitive_temperature`` τ_s instead of ``temperature`` τ, so the teacher's
  distribution there is nearly flat;
* **noise on the soft targets** — Gaussian noise of standard deviation ``noise_std`` (σ) is
  added to the teacher's *tempered* logits z_t/τ_s at those positions. The signal left in a
  tempered logit gap is Δz/τ_s, so the same σ hides more the higher τ_s (the noise is
  calibrated to the temperature). The noise of a token is drawn once, from (``seed``, the
  sample's ``index``, the position): the student sees the same perturbed target every epoch,
  so repetition cannot average it away — only the canary's own repetitions in the data do;
* **no hard label on sensitive tokens** — the cross-entropy term runs over the other tokens
  only, or the student would read the secret from the data directly.

Per labelled token the loss is therefore

    non-sensitive:  (1 − α) · CE + α · τ² · KL(p_t^τ ‖ p_s^τ)
    sensitive:      α · τ_s² · KL(p̃_t^τs ‖ p_s^τs),   p̃_t^τs = softmax(z_t/τ_s + σ·ε)

averaged over all labelled tokens. The parts are logged as means over their own tokens
(``ce``, ``kd`` over the non-sensitive ones, ``kd_sensitive`` over the sensitive ones) with
weights that carry each group's share of the micro-batch's tokens, so the weighted sum is
the total.

**The detector.** The paper scores the likelihood that a position holds private
information with a privacy classifier; here a position is sensitive when its target token's
text matches ``sensitive_pattern`` (a regular expression; default: any digit — PINs, phone
and account numbers, the canaries of the privacy benchmark). A token's sensitivity is looked
up in a table built once over the vocabulary, so the detector costs nothing per step. Our
reading of the paper's two ideas (its code is not public): the temperature swings between
two levels (τ, τ_s) rather than following a graded score, and the noise is Gaussian on the
tempered logits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from distil.errors import ConfigError
from distil.losses import TopK
from distil.methods.base import (
    LossOutput,
    Method,
    MethodConfig,
    Need,
    SetupContext,
    one_teacher,
    register_method,
)
from distil.methods.terms import label_and_teacher_terms
from distil.outputs import ModelOutputs


class SwingConfig(MethodConfig):
    """Settings of Swing distillation."""

    name: Literal["swing"] = "swing"
    temperature: float = Field(1.0, gt=0.0, description="τ on non-sensitive tokens")
    sensitive_temperature: float = Field(
        20.0, gt=0.0, description="τ_s on tokens the detector flags (high: a flat target)"
    )
    noise_std: float = Field(
        1.0, ge=0.0, description="σ of the Gaussian noise on the tempered teacher logits z/τ_s"
    )
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight α of the distillation terms")
    sensitive_pattern: str = Field(
        r"\d", description="regular expression: a target token whose text matches is sensitive"
    )
    seed: int = Field(0, description="seeds the noise (drawn per sample index and position)")

    @field_validator("sensitive_pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"not a regular expression ({error})") from None
        return pattern


def sensitive_vocabulary(tokenizer: Any, pattern: str) -> Tensor:
    """``(V,)`` bool: which token ids decode to text matching ``pattern``."""
    compiled = re.compile(pattern)
    return torch.tensor(
        [bool(compiled.search(tokenizer.decode([i]))) for i in range(len(tokenizer))]
    )


def token_noise(indices: Tensor, length: int, width: int, seed: int) -> Tensor:
    """Standard normal noise ``(B, length, width)``, a fixed function of (seed, sample index):
    the same sample gets the same noise in every epoch, on every process."""
    rows = []
    for index in indices.tolist():
        generator = torch.Generator().manual_seed(seed * 1_000_003 + int(index))
        rows.append(torch.randn(length, width, generator=generator))
    return torch.stack(rows)


def noisy_targets(
    teacher: Tensor | TopK, sensitive: Tensor, noise: Tensor, scale: float
) -> Tensor | TopK:
    """The teacher's outputs with ``scale · noise`` added at the ``sensitive`` positions.

    Dense logits get noise on every class; a top-k teacher on its k log-probs (the loss
    renormalises them at the temperature). ``scale`` is τ_s·σ, so that after division by
    τ_s the tempered logits carry noise of standard deviation σ.
    """
    values = teacher.logprobs if isinstance(teacher, TopK) else teacher
    noise = noise[..., : values.shape[-1]].to(device=values.device, dtype=torch.float32)
    noisy = values.float() + scale * noise * sensitive[..., None].to(values.device)
    return TopK(teacher.indices, noisy) if isinstance(teacher, TopK) else noisy


@register_method
class Swing(Method):
    """KD with a high temperature, noise and no hard label where the target is sensitive."""

    name = "swing"
    Config = SwingConfig
    needs = frozenset({Need.TEACHER, Need.SAME_VOCABULARY})

    def __init__(self, config: SwingConfig) -> None:
        super().__init__(config)
        self.register_buffer("sensitive", torch.zeros(0, dtype=torch.bool), persistent=False)

    def setup(self, context: SetupContext) -> None:
        tokenizer = getattr(context.data, "tokenizer", None)
        if tokenizer is None:
            raise ConfigError(
                "method swing: its detector reads the target tokens' text, so it needs a "
                "tokenized task (task: lm)"
            )
        table = sensitive_vocabulary(tokenizer, self.config.sensitive_pattern)
        if not bool(table.any()):
            raise ConfigError(
                f"method.sensitive_pattern: {self.config.sensitive_pattern!r} matches no "
                "token of the vocabulary; swing would be plain KD"
            )
        self.sensitive = table.to(self.sensitive.device)

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        config = self.config
        labels: Tensor = batch["labels"]
        teacher = one_teacher(teachers).logits
        labelled = labels >= 0
        sensitive = labelled & self.sensitive.to(labels.device)[labels.clamp_min(0)]
        plain = labelled & ~sensitive
        n_plain, n_sensitive = int(plain.sum()), int(sensitive.sum())
        if not n_plain + n_sensitive:  # nothing labelled: whatever KD does there (zero)
            return label_and_teacher_terms(
                student, teacher, labels, alpha=config.alpha, temperature=config.temperature
            )
        total_tokens = n_plain + n_sensitive
        zero = labels.new_zeros((), dtype=torch.float32)
        parts = {"ce": zero, "kd": zero, "kd_sensitive": zero}
        weights = {"ce": 0.0, "kd": 0.0, "kd_sensitive": 0.0}
        total = zero
        if n_plain:
            share = n_plain / total_tokens
            terms = label_and_teacher_terms(
                student, teacher, labels.masked_fill(~plain, -100), alpha=config.alpha,
                temperature=config.temperature,
            )  # fmt: skip
            total = total + share * terms.total
            for name, value in terms.parts.items():
                parts[name], weights[name] = value, share * terms.weights[name]
        if n_sensitive:
            share = n_sensitive / total_tokens
            width = teacher.logprobs.shape[-1] if isinstance(teacher, TopK) else teacher.shape[-1]
            noise = token_noise(batch["index"], labels.shape[-1], width, config.seed)
            targets = noisy_targets(
                teacher, sensitive, noise, config.sensitive_temperature * config.noise_std
            )
            terms = label_and_teacher_terms(
                student, targets, labels.masked_fill(~sensitive, -100), alpha=1.0,
                temperature=config.sensitive_temperature, term="kd_sensitive",
            )  # fmt: skip
            # α = 1 above: the total is the divergence alone (the parts are for logging and
            # carry no gradient in the fused path)
            total = total + share * config.alpha * terms.total
            parts["kd_sensitive"] = terms.parts["kd_sensitive"]
            weights["kd_sensitive"] = share * config.alpha
        return LossOutput(total=total, parts=parts, weights=weights)
