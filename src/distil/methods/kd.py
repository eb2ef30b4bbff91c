"""Knowledge distillation (Hinton, Vinyals & Dean, 2015), with any loss of the catalogue.

The student matches the teacher's softened class distribution as well as the labels:

    L = (1 − α) · CE(y, softmax(z_s)) + α · D_T(z_s, z_t)

with D the T²-scaled forward KL of the paper by default, or any loss registered in
``distil.losses``; the loss's own options are set beside it in the recipe
(``method.divergence=jsd method.beta=0.1``) and checked against its signature. Losses that
need the labels (``dkd``, ``pld``) receive them from the batch.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field, field_validator, model_validator

from distil import losses
from distil.methods.base import LossOutput, Method, MethodConfig, register_method
from distil.methods.terms import label_and_teacher_terms
from distil.outputs import ModelOutputs
from distil.registry import did_you_mean


class KDConfig(MethodConfig):
    """Settings of KD; extra keys are options of the chosen divergence (e.g. ``beta``)."""

    model_config = ConfigDict(extra="allow")

    name: Literal["kd"] = "kd"
    temperature: float = Field(4.0, gt=0.0, description="softening temperature T")
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight α of the distillation term")
    divergence: str = Field("forward_kl", description="registered loss used as D")
    tail: Literal["renormalize", "residual"] = Field(
        "renormalize",
        description="with a cached top-k teacher: renormalise both on the top-k, or keep the "
        "mass outside it as one more bucket (needs temperature 1)",
    )

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

    def __init__(self, config: KDConfig) -> None:
        super().__init__(config)
        self.divergence = losses.get(config.divergence)
        self.options = config.divergence_options()
        if losses.registry.accepts(config.divergence, "tail"):
            self.options["tail"] = config.tail

    def loss(
        self, student: ModelOutputs, teacher: ModelOutputs | None, batch: dict[str, Any]
    ) -> LossOutput:
        assert teacher is not None, "kd needs a teacher"
        return label_and_teacher_terms(
            student, teacher.logits, batch["labels"], alpha=self.config.alpha,
            divergence=self.config.divergence, temperature=self.config.temperature,
            **self.options,
        )  # fmt: skip
