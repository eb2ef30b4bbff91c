"""Knowledge distillation (Hinton, Vinyals & Dean, 2015), with any loss of the catalogue.

The student matches the teacher's softened class distribution as well as the labels:

    L = (1 − α) · CE(y, softmax(z_s)) + α · D_T(z_s, z_t)

with D the T²-scaled forward KL of the paper by default, or any loss registered in
``distil.losses``; the loss's own options are set beside it in the recipe
(``method.divergence=jsd method.beta=0.1``) and checked against its signature. Losses that
need the labels (``dkd``, ``pld``) receive them from the batch.

With several teachers the distillation term is the weighted mean of the per-teacher terms,
D = Σ_t w_t · D_T(z_s, z_t) (Σ w_t = 1, equal by default) — the averaged-loss form of
multi-teacher KD (Fukuda et al., Interspeech 2017; You et al., KDD 2017), which works for any
divergence and for sparse top-k teachers alike; N identical teachers equal one teacher.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from pydantic import ConfigDict, Field, field_validator, model_validator

from distil import losses
from distil.errors import ConfigError
from distil.methods.base import LossOutput, Method, MethodConfig, SetupContext, register_method
from distil.methods.terms import mean_over_teachers, weighted_label_and_teacher_terms
from distil.outputs import ModelOutputs
from distil.registry import did_you_mean


class KDConfig(MethodConfig):
    """Settings of KD; extra keys are options of the chosen divergence (e.g. ``beta``)."""

    model_config = ConfigDict(extra="allow")

    name: Literal["kd"] = "kd"
    temperature: float = Field(4.0, gt=0.0, description="softening temperature T")
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight α of the distillation term")
    divergence: str = Field("forward_kl", description="registered loss used as D")
    teacher_weights: dict[str, float] | None = Field(
        None,
        description="several teachers: weight of each one's term by name (default: equal); "
        "the distillation term is the weighted mean of the per-teacher divergences",
    )
    tail: Literal["renormalize", "residual"] = Field(
        "renormalize",
        description="with a cached top-k teacher: renormalise both on the top-k, or keep the "
        "mass outside it as one more bucket (needs temperature 1)",
    )

    @field_validator("teacher_weights")
    @classmethod
    def _positive_weights(cls, weights: dict[str, float] | None) -> dict[str, float] | None:
        if weights is not None and (not weights or min(weights.values()) <= 0):
            raise ValueError("teacher weights must be positive numbers, one per teacher")
        return weights

    @field_validator("divergence")
    @classmethod
    def _known_divergence(cls, name: str) -> str:
        if name not in losses.LOSSES:
            raise ValueError(f"unknown loss {name!r}{did_you_mean(name, losses.LOSSES.names())}")
        return name

    @model_validator(mode="after")
    def _options_fit_the_divergence(self) -> KDConfig:
        accepted = [k for k in losses.options_of(self.divergence) if k != "labels"]
        for key in self.model_extra or {}:
            if key not in accepted:
                valid = list(type(self).model_fields) + accepted
                raise ValueError(
                    f"unknown key {key!r} for kd with divergence {self.divergence!r}"
                    f"{did_you_mean(key, valid)}"
                )
        _try_divergence(self.divergence, self.temperature, self.divergence_options())
        if self.mixing_alpha is not None:
            raise ValueError(
                "kd's alpha already is the α-mixing weight: set alpha, not mixing_alpha"
            )
        return self

    def divergence_options(self) -> dict[str, Any]:
        """The extra keys: options passed to the divergence."""
        return dict(self.model_extra or {})


def _try_divergence(name: str, temperature: float, options: dict[str, Any]) -> None:
    """Call the divergence once on a tiny input, so bad option values fail at config time."""
    logits = torch.linspace(-1.0, 1.0, 12).reshape(3, 4)
    labels = {"labels": torch.tensor([0, 1, 2])} if "labels" in losses.options_of(name) else {}
    try:
        losses.get(name)(logits, logits.flip(-1), temperature=temperature, **options, **labels)
    except (TypeError, ValueError) as error:
        raise ValueError(f"divergence {name!r} rejects its options {options}: {error}") from None


@register_method
class KD(Method):
    """Cross-entropy on labels plus a T²-scaled divergence to the teacher's soft targets."""

    name = "kd"
    Config = KDConfig
    max_teachers = None  # several teachers: the weighted mean of their terms
    #: The loss a subclass is defined by (DKD, DIST, …); None: the config's ``divergence``.
    fixed_divergence: ClassVar[str | None] = None

    def __init__(self, config: KDConfig) -> None:
        super().__init__(config)
        self.divergence_name = self.fixed_divergence or config.divergence
        self.options = config.divergence_options()
        if losses.registry.accepts(self.divergence_name, "tail"):
            self.options["tail"] = getattr(config, "tail", "renormalize")

    def term_weights(self) -> tuple[float, float]:
        """(weight of the label term, weight of the teacher term): KD's α-mixing."""
        return 1.0 - self.config.alpha, self.config.alpha

    def setup(self, context: SetupContext) -> None:
        weights = self.config.teacher_weights
        if weights is not None and set(weights) != set(context.teachers):
            raise ConfigError(
                f"method.teacher_weights: names {sorted(weights)} must be the recipe's "
                f"teachers {sorted(context.teachers)}"
            )

    def loss(
        self, student: ModelOutputs, teachers: Mapping[str, ModelOutputs], batch: dict[str, Any]
    ) -> LossOutput:
        given = self.config.teacher_weights or dict.fromkeys(teachers, 1.0)
        total = sum(given[name] for name in teachers)
        ce_weight, kd_weight = self.term_weights()
        return mean_over_teachers(
            [
                (
                    given[name] / total,
                    weighted_label_and_teacher_terms(
                        student, teacher.logits, batch["labels"], ce_weight=ce_weight,
                        kd_weight=kd_weight, divergence=self.divergence_name,
                        temperature=self.config.temperature, **self.options,
                    ),
                )
                for name, teacher in teachers.items()
            ]
        )  # fmt: skip
