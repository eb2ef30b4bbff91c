"""The Task contract: what one kind of problem (classification, language modelling, …) adds
to the one run.

A task owns its typed recipe sections (data, student, teachers, eval), loads its splits,
builds students and teachers, runs a model on a batch into ``ModelOutputs``, says how many
targets a batch carries (the weight of a micro-batch in accumulation and across processes),
and supplies its validator and its final metrics. Everything else — the method, the loop,
checkpoints, the run folder, ``metrics.json``, reports — is shared by every task
(:mod:`distil.pipeline`). Adding a task is one module registered here, plus recipes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from accelerate import Accelerator
from torch import nn

from distil.errors import ConfigError
from distil.methods.base import LossOutput, Method, Need
from distil.methods.terms import label_and_teacher_terms
from distil.outputs import ModelOutputs
from distil.registry import Registry
from distil.train.trainer import Validator

if TYPE_CHECKING:
    from distil.config import RunConfig


@dataclass
class TeacherSet:
    """Which teacher serves which purpose in one run, each by its recipe name.

    ``training`` is what the loop queries every step (a live module, precomputed outputs or
    an offline cache); ``references[split]`` what scores the students on that split
    (agreement, KL — live where possible, since a precomputed teacher only knows the
    training samples); ``models`` the live models that were loaded; ``sources`` says for each
    teacher where its training signal comes from (``live``, ``precomputed``, ``cache``).
    """

    training: dict[str, Any] = field(default_factory=dict)
    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, nn.Module] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def reference(self, split: str) -> Any | None:
        """The first teacher that can score ``split`` (agreement and KL are against it)."""
        return next(iter(self.references.get(split, {}).values()), None)


class Task:
    """Base of the task plug-ins; one instance serves one recipe.

    Subclasses set ``name``, ``Config`` (their recipe model, a
    :class:`~distil.config.RunConfig` whose ``eval.select_metric`` picks best checkpoints),
    ``provides`` (the method needs they can satisfy) and ``maximised_metrics``, and implement
    the methods below.
    """

    name: ClassVar[str]
    Config: ClassVar[type[RunConfig]]
    #: What this task can give a method (checked against ``Method.needs``).
    provides: ClassVar[frozenset[Need]] = frozenset({Need.TEACHER, Need.HOLDOUT})
    #: Splits every student is scored on at the end (``last`` and ``best_val``).
    final_splits: ClassVar[tuple[str, ...]] = ("val", "test")
    #: Validation metrics where larger is better; every other metric is minimised.
    maximised_metrics: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: RunConfig | None = None) -> None:
        # Without a recipe a task still serves the loop (forward, count_targets): pretraining
        # and benchmarks train models of the task outside a run.
        self.config = config

    # ------------------------------------------------------------------ data and models

    def load_data(self) -> Any:
        """The recipe's splits: an object with ``train``, ``val`` and ``test`` datasets."""
        raise NotImplementedError

    def build_student(self, data: Any) -> nn.Module:
        """A student from the recipe's student section, sized to the data."""
        raise NotImplementedError

    def build_teachers(
        self, data: Any, method: type[Method], accelerator: Accelerator
    ) -> TeacherSet:
        """The recipe's teachers, loaded where the method and the evaluation need them."""
        raise NotImplementedError

    def prepare_data(
        self,
        method: Method,
        data: Any,
        teachers: TeacherSet,
        run_dir: Any,
        accelerator: Accelerator,
    ) -> Any:
        """The splits a ``Need.TEACHER_WRITES_DATA`` method rewrote with the teacher."""
        raise ConfigError(
            f"method.name: {method.name!r} rewrites data, which task {self.name!r} cannot"
        )

    def num_classes(self, data: Any) -> int | None:
        """Classes of the model's output (a vocabulary for an LM; None for regression)."""
        return None

    # ------------------------------------------------------------------ the loop

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> ModelOutputs:
        """Run a student of this task on a batch (features are tapped by the loop)."""
        raise NotImplementedError

    def count_targets(self, batch: dict[str, Any]) -> int:
        """The targets a batch carries: its micro-batch's weight in a step's mean loss.

        Default: the samples, labelled or not (a teacher's term may use unlabelled ones)."""
        return len(batch["index"])

    def target_loss(
        self, student: ModelOutputs, batch: dict[str, Any], **options: Any
    ) -> LossOutput:
        """The loss of a student's outputs against the batch's own targets (what
        ``supervised`` trains on): cross-entropy on ``labels`` by default, for logits and for
        an LM's hidden states alike; a regression task returns squared error."""
        return label_and_teacher_terms(student, None, batch["labels"], alpha=0.0, **options)

    def validator(self, data: Any, teachers: TeacherSet | None, device: Any = None) -> Validator:
        """A fresh validator (one per student: it may keep a history)."""
        raise NotImplementedError

    @property
    def select_metric(self) -> str:
        """Validation metric that picks each student's best checkpoint."""
        return self.config.eval.select_metric

    # ------------------------------------------------------------------ results

    def evaluate(
        self, model: nn.Module, data: Any, split: str, teachers: TeacherSet, device: Any
    ) -> dict[str, float]:
        """One model's metrics on one split (with agreement to the split's reference)."""
        raise NotImplementedError

    def teacher_metrics(self, data: Any, teachers: TeacherSet, device: Any) -> dict[str, dict]:
        """Each teacher's own test metrics, by name, where they can be measured."""
        return {}

    def task_metrics(
        self, data: Any, students: dict[str, nn.Module], teachers: TeacherSet, run_dir: Any,
        device: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """The task's own block of ``metrics.json`` (reliability bins, hacking verdict)."""
        return {}

    def describe_model(self, spec: Any) -> str | None:
        """A short name of a student or teacher section, for ``metrics.json`` and reports."""
        return getattr(spec, "model", None)

    def save_students(self, students: dict[str, nn.Module], data: Any, run_dir: Any) -> None:
        """Anything a task writes beside the checkpoints (an LM's Hugging Face folder)."""


TASKS: Registry[type[Task]] = Registry("task")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator filing a task under its ``name``."""
    return TASKS.register(cls.name)(cls)


def task_for(config: RunConfig) -> Task:
    """The task instance that serves a parsed recipe."""
    return TASKS.get(config.task)(config)


def check_method_fits(task: Task, method: type[Method], teacher_names: list[str]) -> None:
    """Refuse, in one line, a method whose needs the task or the recipe cannot meet."""
    missing = [need.value for need in method.needs - task.provides]
    if missing:
        raise ConfigError(
            f"method.name: {method.name!r} needs {' and '.join(missing)}, which task "
            f"{task.name!r} does not provide"
        )
    wants_teacher = Need.TEACHER in method.needs or Need.TEACHER_WRITES_DATA in method.needs
    if wants_teacher and not teacher_names:
        raise ConfigError(
            f"method.name: {method.name!r} needs a teacher; the recipe has no teacher section"
        )
    if method.max_teachers is not None and len(teacher_names) > method.max_teachers:
        raise ConfigError(
            f"teachers: method {method.name!r} listens to {method.max_teachers} teacher(s); "
            f"the recipe has {len(teacher_names)} ({', '.join(teacher_names)}). Use a method "
            "that combines several (kd) or keep one"
        )
