"""The logit losses of the classification literature as methods, each at its paper's weighting.

Through ``kd`` (``method.divergence=dkd``) these losses are mixed as (1 − α)·CE + α·D, which is
Hinton's rule, not theirs: DKD, DIST and PLD were defined with the label term at full weight
(or, for PLD, folded into the loss), and logit standardisation re-tuned KD's weights. Here
each is its own method whose defaults follow its paper and the authors' code, with the source
of every default on its docs page (``docs/methods/<name>.md``):

    L = ce_weight · CE(y, z_s) + kd_weight · D(z_s, z_t)

with the teacher term ramped in over the first ``warmup`` share of training where the paper
does so (DKD). The α-mixing protocol stays available for every method as
``method.mixing_alpha`` (the label term × (1 − α), the teacher term × α).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from distil.methods.base import PAPER_WARMUP, MethodConfig, register_method
from distil.methods.kd import KD


class PaperLogitConfig(MethodConfig):
    """What the four methods share: the two weights, the temperature, several teachers."""

    temperature: float = Field(4.0, gt=0.0, description="softening temperature T")
    ce_weight: float = Field(1.0, ge=0.0, description="weight of the cross-entropy on labels")
    kd_weight: float = Field(1.0, ge=0.0, description="weight of the teacher term")
    teacher_weights: dict[str, float] | None = Field(
        None, description="several teachers: weight of each one's term by name (default: equal)"
    )
    #: Fields that are the loss's own options (passed to it by name).
    loss_options: ClassVar[tuple[str, ...]] = ()

    def divergence_options(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.loss_options}


class PaperLogitKD(KD):
    """KD with the paper's two weights instead of α."""

    Config = PaperLogitConfig

    def term_weights(self) -> tuple[float, float]:
        return self.config.ce_weight, self.config.kd_weight


class DKDConfig(PaperLogitConfig):
    """DKD (Zhao et al., CVPR 2022) as in mdistiller's CIFAR-100 recipe."""

    name: Literal["dkd"] = "dkd"
    alpha: float = Field(1.0, ge=0.0, description="weight of the target-class term TCKD")
    beta: float = Field(8.0, ge=0.0, description="weight of the non-target term NCKD")
    warmup: float = Field(
        PAPER_WARMUP, ge=0.0, le=1.0,
        description="share of training over which the DKD term ramps in (20 of 240 epochs)",
    )  # fmt: skip
    loss_options: ClassVar[tuple[str, ...]] = ("alpha", "beta")


@register_method
class DKD(PaperLogitKD):
    """Cross-entropy plus decoupled target / non-target KD, warmed up."""

    name = "dkd"
    Config = DKDConfig
    fixed_divergence = "dkd"


class DISTConfig(PaperLogitConfig):
    """DIST (Huang et al., NeurIPS 2022) at its CIFAR-100 setting."""

    name: Literal["dist"] = "dist"
    kd_weight: float = Field(2.0, ge=0.0, description="weight of the DIST term (authors: 2)")
    beta: float = Field(1.0, ge=0.0, description="weight of the inter-class relation term")
    gamma: float = Field(1.0, ge=0.0, description="weight of the intra-class relation term")
    loss_options: ClassVar[tuple[str, ...]] = ("beta", "gamma")


@register_method
class DIST(PaperLogitKD):
    """Cross-entropy plus inter- and intra-class Pearson relations."""

    name = "dist"
    Config = DISTConfig
    fixed_divergence = "dist"


class LogitStdKDConfig(PaperLogitConfig):
    """KD on z-scored logits (Sun et al., CVPR 2024) with the authors' KD weights."""

    name: Literal["logit_std_kd"] = "logit_std_kd"
    temperature: float = Field(2.0, gt=0.0, description="base temperature")
    ce_weight: float = Field(0.1, ge=0.0, description="weight of the cross-entropy on labels")
    kd_weight: float = Field(9.0, ge=0.0, description="weight of the standardised KD term")


@register_method
class LogitStdKD(PaperLogitKD):
    """Cross-entropy plus KD between standardised logits."""

    name = "logit_std_kd"
    Config = LogitStdKDConfig
    fixed_divergence = "logit_std_kd"


class PLDConfig(PaperLogitConfig):
    """Plackett–Luce distillation: the list-wise objective replaces CE and KD."""

    name: Literal["pld"] = "pld"
    temperature: float = Field(
        4.0,
        gt=0.0,
        description="softens the teacher's weights (paper: 4 on CIFAR-100, 1 on ImageNet)",
    )
    ce_weight: float = Field(0.0, ge=0.0, description="weight of an extra cross-entropy")
    top_k: int | None = Field(None, ge=1, description="keep the first K ranked positions")
    loss_options: ClassVar[tuple[str, ...]] = ("top_k",)


@register_method
class PLD(PaperLogitKD):
    """The Plackett–Luce likelihood of the teacher's ranking, true class first."""

    name = "pld"
    Config = PLDConfig
    fixed_divergence = "pld"
