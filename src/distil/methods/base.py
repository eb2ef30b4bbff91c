"""The Method contract: how a student listens to its teacher.

A method is an ``nn.Module`` (so it can own trainable parts such as projectors) that turns
the student's and the teacher's outputs on a batch into a :class:`LossOutput`: the total
loss and every named, unweighted part with its weight, so the trainer logs each term and can
measure each term's share of the gradient. Methods never run a loop of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

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


@dataclass(frozen=True)
class SetupInfo:
    """What a method may size itself from before training.

    Feature shapes are per sample (no batch dimension). ``num_samples`` bounds the ``index``
    of training batches (memory banks are indexed by it).
    """

    student_shapes: dict[str, tuple[int, ...]]
    teacher_shapes: dict[str, tuple[int, ...]]
    num_classes: int
    num_samples: int
    #: Runs the teacher over the whole training split (in index order) on demand and returns
    #: (logits, {layer: features}, labels) — for methods that fit something to the teacher
    #: before training (LELP's subclass directions).
    teacher_outputs: Callable[[], tuple[Tensor, dict[str, Tensor], Tensor]] | None = None


class MethodConfig(BaseModel):
    """Base of every method's typed settings; ``name`` picks the method from the registry."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="registered method name")


class Method(nn.Module):
    """Base class of distillation methods.

    Subclasses set ``name``, ``Config`` (their own :class:`MethodConfig` subclass) and
    ``needs_teacher``, and implement :meth:`loss`.
    """

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    needs_teacher: ClassVar[bool] = True
    #: Share of the training split kept aside for the method's own outer objective (bilevel
    #: methods such as TGeo-KD). The student never trains on it; the trainer puts one batch
    #: of it in ``batch["holdout"]`` at every step.
    holdout_fraction: float = 0.0
    #: Language models: the method queries the teacher on sequences no cache holds
    #: (on-policy samples), so the teacher must be loaded even when a cache exists.
    needs_live_teacher: ClassVar[bool] = False
    #: Language models: the method compares token distributions, so teacher and student
    #: must share one vocabulary (sequence-level KD does not).
    needs_same_vocabulary: ClassVar[bool] = True

    def __init__(self, config: MethodConfig) -> None:
        super().__init__()
        self.config = config

    def loss(
        self, student: ModelOutputs, teacher: ModelOutputs | None, batch: dict[str, Any]
    ) -> LossOutput:
        """The loss on one batch. ``teacher`` is None only when ``needs_teacher`` is False."""
        raise NotImplementedError

    def feature_layers(self) -> tuple[list[str], list[str]]:
        """(student layers, teacher layers) whose outputs the method reads, by module path.

        The trainer taps them (``ModelOutputs.features``) and calls :meth:`setup` with their
        shapes before training. Default: none (the method reads logits only).
        """
        return [], []

    def setup(self, info: SetupInfo) -> None:
        """Build what depends on the data or the tapped layers (projectors, heads, memory
        banks, class-centre buffers), once, before the optimizer exists. Default: nothing."""

    def attach_student(self, student: nn.Module) -> None:
        """Called once by the trainer. Methods that must run the student themselves (on a
        held-out batch, for a meta-gradient) keep a reference; it is not a submodule, so the
        student's weights are not duplicated in the method's state. Default: nothing."""

    def prepare_batch(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        """The batch the step trains on, given the sampled one (already on the device) and
        the 0-based step; called before the teacher sees it. On-policy methods (GKD) swap in
        sequences the student generates here. Default: the batch unchanged."""
        return batch

    def on_step_end(self, step: int, total_steps: int, loss: LossOutput) -> None:
        """Called after optimizer step ``step`` (1-based) with that step's loss, identical on
        every process; methods with a schedule (TAID) move it here. Default: nothing."""


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
