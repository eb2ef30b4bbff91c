"""The Method contract: how a student listens to its teachers.

A method is an ``nn.Module`` (so it can own trainable parts: projectors, heads, peer
students) that turns the student's and the teachers' outputs on a batch into a
:class:`LossOutput`: the total loss and every named, unweighted part with its weight, so the
trainer logs each term and can measure each term's share of the gradient. Methods never run
a loop of their own; the hooks they may implement are declared here, with their types, and
what they need from a run (a teacher, a live teacher, one vocabulary, a held-out share) is
one declared set, :attr:`Method.needs`, that the run checks before anything is built.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn
from torch.utils.data import Dataset

from distil.outputs import ModelOutputs
from distil.registry import Registry


@dataclass
class LossOutput:
    """The total loss and its parts: ``total = Σ weights[k] · parts[k]``."""

    total: Tensor
    parts: dict[str, Tensor]
    weights: dict[str, float]

    @classmethod
    def combine(cls, terms: dict[str, tuple[float, Tensor]]) -> LossOutput:
        """Build from ``{name: (weight, unweighted_value)}``; zero-weight terms stay logged."""
        if not terms:
            raise ValueError("a LossOutput needs at least one term")
        total = sum(weight * value for weight, value in terms.values())
        return cls(
            total=total,
            parts={name: value for name, (_, value) in terms.items()},
            weights={name: float(weight) for name, (weight, _) in terms.items()},
        )


class Need(enum.Enum):
    """What a method may need from a run; a task says which it can provide."""

    TEACHER = "a teacher"
    LIVE_TEACHER = "a live teacher (one that answers for sequences no cache holds)"
    SAME_VOCABULARY = "teacher and student sharing one vocabulary"
    HOLDOUT = "a held-out share of the training split"
    UNLABELLED = "unlabelled training samples"
    TEACHER_WRITES_DATA = "the teacher's model, to rewrite the training data before training"


#: Name of the student a run is about; peers a method owns have their own names.
MAIN_STUDENT = "student"


@dataclass(frozen=True)
class SetupContext:
    """Everything a method may size itself from before training, in one place.

    Feature shapes are per sample (no batch dimension). ``num_samples`` bounds the ``index``
    of training batches (memory banks are indexed by it). ``forward`` runs any model of the
    task's kind on a batch (peers use it); ``build_student`` makes a fresh, untrained model
    from the recipe's student section (a peer of the student).
    """

    student: nn.Module
    teachers: Mapping[str, Any]  # name -> Teacher, as the loop will query them
    train_data: Dataset  # what the student trains on (any held-out share removed)
    data: Any  # the task's splits
    forward: Callable[[nn.Module, dict[str, Any]], ModelOutputs]
    student_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    teacher_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    num_classes: int | None = None
    build_student: Callable[[], nn.Module] | None = None
    #: The task's loss of a student's outputs against the batch's own targets, as a
    #: one-part LossOutput (cross-entropy ``ce`` for classifiers and LMs; a regression task
    #: may use squared error). ``Method.target_loss`` falls back to cross-entropy.
    target_loss: Callable[..., LossOutput] | None = None
    #: Runs the (only) teacher over the whole training split in index order on demand and
    #: returns (logits, {layer: features}, labels) — for methods that fit something to the
    #: teacher before training (LELP's subclass directions).
    teacher_outputs: Callable[[], tuple[Tensor, dict[str, Tensor], Tensor]] | None = None

    @property
    def num_samples(self) -> int:
        return len(getattr(self.train_data, "dataset", self.train_data))  # a Subset: the whole

    @property
    def teacher(self) -> Any:
        """The one teacher (methods with ``max_teachers = 1``)."""
        return one_teacher(self.teachers)


@dataclass(frozen=True)
class DataContext:
    """What a data-rewriting method (``Need.TEACHER_WRITES_DATA``) gets before training: the
    teacher's model, the tokenizer it reads and writes (it may differ from the data's), and
    the run folder for what it produces."""

    teacher_model: nn.Module
    teacher_tokenizer: Any
    run_dir: Path


def one_teacher(teachers: Mapping[str, Any]) -> Any:
    """The single entry of a teacher mapping (the run has checked there is exactly one)."""
    if len(teachers) != 1:
        raise ValueError(f"expected one teacher, got {sorted(teachers)}")
    return next(iter(teachers.values()))


class MethodConfig(BaseModel):
    """Base of every method's typed settings; ``name`` picks the method from the registry."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="registered method name")
    mixing_alpha: float | None = Field(
        None, ge=0.0, le=1.0,
        description="the α-mixing protocol instead of the paper's weighting: the label term "
        "(ce) × (1 − α), every other term × α (its own weight kept); None: the paper's weights",
    )  # fmt: skip
    warmup: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of training over which every term but the label term ramps "
        "linearly from 0 to its weight (DKD's paper: 20 of 240 epochs)",
    )

    @model_validator(mode="after")
    def _temperatures_in_range(self) -> MethodConfig:
        """Every ``*temperature`` of every method lies in :data:`TEMPERATURE_RANGE`: near 0
        the logits divided by T overflow float32 (a NaN loss at step 1), near infinity the
        T² factor does, and nothing in between that range is a setting anyone trains with."""
        low, high = TEMPERATURE_RANGE
        for key in type(self).model_fields:
            value = getattr(self, key)
            in_range = not isinstance(value, float) or low <= value <= high
            if key.endswith("temperature") and not in_range:
                raise ValueError(f"{key} must lie in [{low}, {high}], got {value}")
        return self


#: Softening temperatures a method accepts (papers use 0.05–20).
TEMPERATURE_RANGE = (0.01, 100.0)

#: The KD literature's CIFAR-100 warm-up of the teacher term (DKD, ND): 20 of 240 epochs.
PAPER_WARMUP = 20 / 240

#: The part every method names its loss against the labels; the mixing protocol and the
#: warm-up leave it alone and scale the others.
LABEL_TERM = "ce"


def protocol_weights(config: MethodConfig, progress: float) -> tuple[float, float]:
    """(factor on the label term, factor on every other term) that ``mixing_alpha`` and
    ``warmup`` put on a method's own weighting, ``progress`` (0–1] into training."""
    label, others = 1.0, 1.0
    if config.mixing_alpha is not None:
        label, others = 1.0 - config.mixing_alpha, config.mixing_alpha
    if config.warmup > 0:
        others *= min(progress / config.warmup, 1.0)
    return label, others


def apply_protocol(loss: LossOutput, config: MethodConfig, progress: float) -> LossOutput:
    """The method's loss with :func:`protocol_weights` applied: one rule for every method, so
    a benchmark can run each at its paper's weighting or all under one α. A loss whose parts
    were computed fused (an LM head's chunked CE + KD: the parts carry no gradient) cannot be
    re-weighted here and is refused."""
    label, others = protocol_weights(config, progress)
    if (label, others) == (1.0, 1.0) or set(loss.parts) <= {LABEL_TERM}:
        return loss
    if loss.total.requires_grad and not all(p.requires_grad for p in loss.parts.values()):
        from distil.errors import ConfigError

        raise ConfigError(
            f"method.mixing_alpha / method.warmup: {config.name!r} computes its terms fused, so "
            "they cannot be re-weighted; set the method's own weights instead"
        )
    weights = {
        name: weight * (label if name == LABEL_TERM else others)
        for name, weight in loss.weights.items()
    }
    total = sum(weights[name] * value for name, value in loss.parts.items())
    return LossOutput(total=total, parts=loss.parts, weights=weights)


class Method(nn.Module):
    """Base class of distillation methods.

    Subclasses set ``name``, ``Config`` (their own :class:`MethodConfig` subclass),
    ``needs`` and, if they can listen to several teachers, ``max_teachers``; they implement
    :meth:`loss` and any of the hooks below.
    """

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    #: What the method needs from the run; checked by the task before anything is built.
    needs: ClassVar[frozenset[Need]] = frozenset({Need.TEACHER, Need.SAME_VOCABULARY})
    #: How many teachers the method can listen to (None: any number).
    max_teachers: ClassVar[int | None] = 1

    def __init__(self, config: MethodConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def needs_teacher(self) -> bool:
        return Need.TEACHER in self.needs

    @property
    def holdout_fraction(self) -> float:
        """Share of the training split kept aside for the method's own outer objective
        (``Need.HOLDOUT``: bilevel methods such as TGeo-KD). The student never trains on it;
        the trainer puts one batch of it in ``batch["holdout"]`` at every step."""
        return float(getattr(self.config, "holdout_fraction", 0.0))

    @property
    def context(self) -> SetupContext:
        """The run's setup context (after :meth:`bind`)."""
        context = self.__dict__.get("_context")
        if context is None:
            raise RuntimeError(f"method {self.name!r} was not set up by a run")
        return context

    def bind(self, context: SetupContext) -> None:
        """Keep the context (outside the module tree, so the student is never a submodule
        of the method and its weights are not duplicated in the method's state), then
        :meth:`setup`. Called once by the trainer."""
        self.__dict__["_context"] = context
        self.setup(context)

    def target_loss(
        self, student: ModelOutputs, batch: dict[str, Any], **options: Any
    ) -> LossOutput:
        """The loss against the batch's own targets, as the run's task defines it (outside
        a run: cross-entropy on ``batch["labels"]``, ignoring −100)."""
        context = self.__dict__.get("_context")
        if context is not None and context.target_loss is not None:
            return context.target_loss(student, batch, **options)
        from distil.methods.terms import label_and_teacher_terms

        return label_and_teacher_terms(student, None, batch["labels"], alpha=0.0, **options)

    # ------------------------------------------------------------------ hooks

    def loss(
        self,
        student: ModelOutputs,
        teachers: Mapping[str, ModelOutputs],
        batch: dict[str, Any],
    ) -> LossOutput:
        """The loss on one batch. ``teachers`` maps each teacher's name to its outputs on
        the batch (empty when the method needs no teacher)."""
        raise NotImplementedError

    def feature_layers(self) -> tuple[list[str], list[str]]:
        """(student layers, teacher layers) whose outputs the method reads, by module path.

        The trainer taps them (``ModelOutputs.features``) and sets up the method with their
        shapes before training. Default: none (the method reads logits only).
        """
        return [], []

    def setup(self, context: SetupContext) -> None:
        """Build what depends on the data, the teachers or the tapped layers (projectors,
        heads, memory banks, peers), once, before the optimizer exists. Default: nothing."""

    def prepare_data(self, data: Any, context: DataContext) -> Any:
        """``Need.TEACHER_WRITES_DATA``: the task's splits with the training split rewritten
        by the teacher (sequence-level KD, MiniPLM). Default: the data unchanged."""
        return data

    def prepare_batch(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        """The batch the step trains on, given the sampled one (already on the device) and
        the 0-based step; called before the teachers see it. On-policy methods (GKD) swap in
        sequences the student generates here. Default: the batch unchanged."""
        return batch

    def on_step_end(self, step: int, total_steps: int, loss: LossOutput) -> None:
        """Called after optimizer step ``step`` (1-based) with that step's loss, identical on
        every process; methods with a schedule (TAID) move it here. Default: nothing."""

    def peers(self) -> dict[str, nn.Module]:
        """Students the method trains beside the main one (online distillation). They are
        submodules of the method, so they are optimised, synchronised and checkpointed with
        it; the run also validates, keeps the best and reports each as a student of its own
        under its name. Default: none."""
        return {}


METHODS: Registry[type[Method]] = Registry("method")


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator filing a method under its ``name``."""
    return METHODS.register(cls.name)(cls)


def build_method(config: MethodConfig | dict[str, Any]) -> Method:
    """Instantiate the method a config names (a dict is validated by the method's Config)."""
    if isinstance(config, dict):
        method_cls = METHODS.get(config.get("name", ""))
        config = method_cls.Config.model_validate(config)
    return METHODS.get(config.name)(config)
