"""``task: classification`` — a classifier distilled from classifier teachers.

Its recipe sections (data, student, teachers, eval, search) are defined here; the student's
outputs are logits ``(batch, classes)``; a micro-batch weighs its samples; validation and
final metrics are accuracy, NLL, ECE and agreement / KL to the first teacher (under several
processes each scores its shard of a split: :mod:`distil.eval.sharding`); its block of
``metrics.json`` holds the reliability diagrams of each student and teacher on the test split.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from accelerate import Accelerator
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from torch import Tensor, nn

from distil.config import RunConfig
from distil.data import DataConfig, DataSplits, load_data
from distil.errors import ConfigError
from distil.eval.evaluate import evaluate_model, predict_logits, teacher_logits
from distil.eval.metrics import classification_metrics, reliability_bins
from distil.methods.base import Method, Need
from distil.outputs import ModelOutputs, call_model
from distil.registry import did_you_mean
from distil.tasks.base import Task, TeacherSet, register_task
from distil.tasks.classifier_models import build_network, build_teacher
from distil.teachers import PrecomputedTeacher


class PretrainConfig(BaseModel):
    """Train the teacher with plain supervision first (cached by content hash).

    The teacher sees the whole training split, not the student's ``data.train_limit``: in
    practice a teacher is trained once on all the labels there are, and a student is often
    distilled with fewer.
    """

    model_config = ConfigDict(extra="forbid")

    train_limit: int | None = Field(
        None, ge=1, description="teacher's training samples (None: the whole split)"
    )
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    seed: int = 0


class StudentConfig(BaseModel):
    """The model being trained."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="registered model name, e.g. mlp, cnn, resnet8x4")
    options: dict[str, Any] = Field(default_factory=dict, description="model constructor options")
    weights: str | None = Field(None, description="start from these safetensors weights")

    @field_validator("model")
    @classmethod
    def _registered_model(cls, name: str, info: ValidationInfo) -> str:
        from distil.models import MODELS

        if (info.context or {}).get("recipe") and name not in MODELS:  # see config.RECIPE
            raise ValueError(f"unknown model {name!r}{did_you_mean(name, MODELS.names())}")
        return name


class TeacherConfig(StudentConfig):
    """A frozen teacher: weights from a file, or pretrained here once and cached."""

    pretrain: PretrainConfig | None = Field(
        None, description="train it first when no weights are given"
    )
    device: str | None = Field(None, description="teacher device (default: the student's)")
    dtype: Literal["float32", "float64", "bfloat16", "float16"] = "float32"
    precompute: bool = Field(
        False,
        description="run the teacher once over the training split before training and look "
        "its outputs up per batch (exact without input augmentation; saves a forward pass per step)",
    )


class EvalConfig(BaseModel):
    """How runs are evaluated."""

    model_config = ConfigDict(extra="forbid")

    ece_bins: int = Field(15, ge=2)
    batch_size: int = Field(512, ge=1)
    select_metric: Literal["accuracy", "nll"] = Field(
        "accuracy", description="validation metric that picks the best checkpoint"
    )


class SearchConfig(BaseModel):
    """Candidate students for ``distil search`` (ranked against the recipe's teacher)."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[StudentConfig] = Field(
        min_length=2, description="student architectures to rank"
    )
    batches: int = Field(1, ge=1, description="batches scored per initialisation")
    batch_size: int = Field(64, ge=2)
    repeats: int = Field(5, ge=1, description="random initialisations averaged")
    seed: int = 0


class ClassificationConfig(RunConfig):
    """A whole classification run."""

    task: Literal["classification"] = "classification"
    data: DataConfig = Field(default_factory=DataConfig)
    teachers: dict[str, TeacherConfig] = Field(
        default_factory=dict, description="named teachers (teacher: is the one-teacher form)"
    )
    student: StudentConfig
    eval: EvalConfig = Field(default_factory=EvalConfig)
    search: SearchConfig | None = None


@register_task
class ClassificationTask(Task):
    """Classifiers: logits out, one label per sample."""

    name = "classification"
    Config = ClassificationConfig
    provides = frozenset({Need.TEACHER, Need.HOLDOUT, Need.SAME_VOCABULARY})
    maximised_metrics: ClassVar[frozenset[str]] = frozenset({"accuracy", "agreement"})

    def __init__(self, config: ClassificationConfig | None = None) -> None:
        super().__init__(config)
        self._references: dict[tuple[str, str], Tensor] = {}
        # the processes evaluation is sharded over: the run's, from build_teachers (None:
        # this process scores whole splits)
        self._accelerator: Accelerator | None = None

    def load_data(self) -> DataSplits:
        return load_data(self.config.data)

    def build_student(self, data: DataSplits) -> nn.Module:
        return build_network(self.config.student, data)

    def num_classes(self, data: DataSplits) -> int:
        return data.num_classes

    def build_teachers(
        self, data: DataSplits, method: type[Method], accelerator: Accelerator
    ) -> TeacherSet:
        self._accelerator = accelerator
        teachers = TeacherSet()
        for name, spec in self.config.teachers.items():
            if spec.precompute and self.config.data.augment is not None:
                raise ConfigError(
                    "teacher.precompute: stored outputs are exact only without augmentation; "
                    "data.augment is set — set teacher.precompute=false"
                )
            live = build_teacher(self, name, spec, data, accelerator)
            teachers.models[name] = live.module
            teachers.training[name], teachers.sources[name] = live, "live"
            if spec.precompute and Need.TEACHER in method.needs:
                teachers.training[name] = PrecomputedTeacher.from_teacher(
                    live, data.train, self.config.eval.batch_size
                )
                teachers.sources[name] = "precomputed"
            for split in ("val", "test"):  # a precomputed teacher knows training samples only
                teachers.references.setdefault(split, {})[name] = live
        return teachers

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> ModelOutputs:
        return ModelOutputs(logits=call_model(model, batch["inputs"]))

    def validator(self, data: DataSplits, teachers: TeacherSet | None, device: Any = None):
        """Scores the val split as the final metrics do, with the same cached teacher logits
        (the teacher runs over the split once per run, not once more for validation)."""
        teachers = teachers or TeacherSet()
        return lambda model, device: self.evaluate(model, data, "val", teachers, device)

    # ------------------------------------------------------------------ results

    def _reference(self, data: DataSplits, split: str, name: str, teacher: Any) -> Tensor:
        """A teacher's logits on a split, computed once (they never change)."""
        key = (split, name)
        if key not in self._references:
            self._references[key] = teacher_logits(
                teacher, getattr(data, split), batch_size=self.config.eval.batch_size,
                accelerator=self._accelerator,
            )  # fmt: skip
        return self._references[key]

    def evaluate(
        self, model: nn.Module, data: DataSplits, split: str, teachers: TeacherSet, device: Any
    ) -> dict[str, float]:
        reference = None
        named = teachers.references.get(split, {})
        if named:
            name, teacher = next(iter(named.items()))
            reference = self._reference(data, split, name, teacher)
        return evaluate_model(
            model, getattr(data, split), reference_logits=reference,
            batch_size=self.config.eval.batch_size, device=device,
            ece_bins=self.config.eval.ece_bins, accelerator=self._accelerator,
        )  # fmt: skip

    def teacher_metrics(
        self, data: DataSplits, teachers: TeacherSet, device: Any
    ) -> dict[str, dict]:
        return {
            name: {
                "test": classification_metrics(
                    self._reference(data, "test", name, teacher),
                    data.test.labels,
                    n_bins=self.config.eval.ece_bins,
                )  # fmt: skip
            }
            for name, teacher in teachers.references.get("test", {}).items()
        }

    def task_metrics(self, data, students, teachers, run_dir, device) -> dict[str, Any]:
        """The reliability diagram of each student and of each teacher on the test split (a
        student's calibration is read against its teacher's: KD passes the teacher's
        over- or under-confidence on)."""
        bins = {}
        for name, model in students.items():
            logits, labels = predict_logits(
                model, data.test, batch_size=self.config.eval.batch_size, device=device,
                accelerator=self._accelerator,
            )  # fmt: skip
            bins[name] = reliability_bins(logits, labels, n_bins=self.config.eval.ece_bins)
        teacher_bins = {
            name: reliability_bins(self._reference(data, "test", name, teacher),
                                   data.test.labels, n_bins=self.config.eval.ece_bins)
            for name, teacher in teachers.references.get("test", {}).items()
        }  # fmt: skip
        return {"reliability": bins, "teacher_reliability": teacher_bins}
