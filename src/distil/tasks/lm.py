"""``task: lm`` — a causal language model distilled token by token (or from generated text).

Its recipe sections (data, student, teachers, eval, cache) are in :mod:`distil.lm.config`;
the student gives hidden states and its head instead of logits (the fused loss never holds
``(tokens, vocab)`` logits); a micro-batch weighs its labelled tokens; validation and final
metrics are perplexity and, with a teacher of the same vocabulary, top-1 agreement and KL
(under several processes each scores its shard of a split: :mod:`distil.eval.sharding`);
its block of ``metrics.json`` holds the teacher-hacking verdict. A teacher may be live or an
offline cache (``distil cache-teacher``); the vocabulary check runs before any is loaded.
Each student is also saved as a Hugging Face folder beside the checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from accelerate import Accelerator
from pydantic import Field
from torch import nn

from distil.config import RunConfig
from distil.data.text import IGNORE_INDEX
from distil.errors import ConfigError
from distil.eval.lm import LMValidator, lm_metrics
from distil.eval.monitors import teacher_hacking_verdict
from distil.lm.config import CacheConfig, LMDataConfig, LMEvalConfig, LMModelConfig, TeacherLMConfig
from distil.lm.data import LMSplits, load_lm_data
from distil.lm.resolve import build_lm, model_folder
from distil.lm.vocab import check_vocabularies, shares_vocabulary, weights_fingerprint
from distil.methods.base import DataContext, Method, Need
from distil.models.language_model import LanguageModel
from distil.outputs import ModelOutputs
from distil.tasks.base import Task, TeacherSet, register_task
from distil.teachers import ModuleTeacher
from distil.teachers.base import DTYPES


class LMRunConfig(RunConfig):
    """A whole language-model run (``task: lm``)."""

    task: Literal["lm"] = "lm"
    name: str = "lm-run"
    data: LMDataConfig = Field(default_factory=LMDataConfig)
    teachers: dict[str, TeacherLMConfig] = Field(
        default_factory=dict, description="named teachers (teacher: is the one-teacher form)"
    )
    student: LMModelConfig
    eval: LMEvalConfig = Field(default_factory=LMEvalConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)

    def cache_dir(self) -> Path:
        """The teacher cache folder ``cache.dir`` with ``{name}`` filled in."""
        return Path(self.cache.dir.format(name=self.name, seed=self.train.seed))


def build_live_teacher(
    spec: TeacherLMConfig,
    data: LMSplits,
    device: Any,
    *,
    method: str,
    check_vocabulary: bool = True,
) -> ModuleTeacher:
    """A teacher section's model loaded and frozen, after the vocabulary check."""
    if check_vocabulary:  # before loading: the check explains what a shape error would not
        check_vocabularies(spec, data, method=method)
    model = build_lm(spec, data.tokenizer, role="teacher", pretrain_data=data.teacher_train)
    return ModuleTeacher(model, spec.device or device, DTYPES[spec.dtype])


@register_task
class LMTask(Task):
    """Causal language models: next-token prediction over token blocks."""

    name = "lm"
    Config = LMRunConfig
    provides = frozenset(
        {Need.TEACHER, Need.LIVE_TEACHER, Need.SAME_VOCABULARY, Need.TEACHER_WRITES_DATA}
    )
    final_splits = ("test",)
    maximised_metrics: ClassVar[frozenset[str]] = frozenset({"top1_agreement"})

    def __init__(self, config: LMRunConfig | None = None) -> None:
        super().__init__(config)
        self._oracle: ModuleTeacher | None = None
        # the processes evaluation is sharded over: the run's, from build_teachers (None:
        # this process scores whole splits)
        self._accelerator: Accelerator | None = None

    def load_data(self) -> LMSplits:
        return load_lm_data(self.config.data)

    def build_student(self, data: LMSplits) -> nn.Module:
        return build_lm(
            self.config.student, data.tokenizer, role="student", pretrain_data=data.teacher_train
        )

    def num_classes(self, data: Any) -> int | None:
        """The vocabulary (None for bare token blocks, as in pretraining)."""
        return getattr(data, "vocab_size", None)

    def build_teachers(
        self, data: LMSplits, method: type[Method], accelerator: Accelerator
    ) -> TeacherSet:
        """Load a live teacher only where needed (on-policy methods, live training, live
        evaluation) and check each cache against the run's tokenizer and, when loaded, the
        teacher's weights. Teacher metrics (agreement, KL) need one vocabulary; seq_kd may
        run without it."""
        from distil.cache.reader import TeacherCache

        self._accelerator = accelerator
        teachers = TeacherSet()
        for name, spec in self.config.teachers.items():
            same_vocab = Need.SAME_VOCABULARY in method.needs or shares_vocabulary(spec, data)
            cache = live = None
            if spec.cache:
                cache = TeacherCache(spec.cache)
                cache.check_matches(
                    tokenizer_fingerprint=data.fingerprint, teacher_fingerprint=None
                )
            wants_live = spec.cache is None or spec.live_eval
            if Need.LIVE_TEACHER in method.needs or (wants_live and same_vocab):
                live = build_live_teacher(
                    spec, data, accelerator.device, method=method.name,
                    check_vocabulary=same_vocab,
                )  # fmt: skip
                teachers.models[name] = live.module
                if cache is not None:
                    cache.check_matches(
                        tokenizer_fingerprint=data.fingerprint,
                        teacher_fingerprint=weights_fingerprint(live.module),
                    )
            if Need.LIVE_TEACHER in method.needs and live is None:
                raise ConfigError(f"method.name: {method.name!r} needs a live teacher")
            training = live
            if cache is not None:
                training = cache.split("train") if cache.has_split("train") else None
            if training is not None:
                teachers.training[name] = training
            elif Need.TEACHER in method.needs:
                raise ConfigError(
                    f"teachers.{name}: the cache {spec.cache} holds no train split and no live "
                    f"teacher is loaded, so {method.name!r} would train without this teacher; "
                    "cache the train split (cache.splits) or set cache=null"
                )
            teachers.sources[name] = "cache" if cache is not None else "live"
            if not same_vocab:
                continue
            for split in ("val", "test"):
                cached = (
                    cache.split(split) if cache is not None and cache.has_split(split) else None
                )
                reference = live or cached
                if reference is not None:
                    teachers.references.setdefault(split, {})[name] = reference
        return teachers

    def prepare_data(
        self, method: Method, data: LMSplits, teachers: TeacherSet, run_dir: Path,
        accelerator: Accelerator,
    ) -> LMSplits:  # fmt: skip
        """Let a data-rewriting method (sequence-level KD, MiniPLM) build its training split
        with the teacher, which reads and writes with its own tokenizer (it may differ from
        the data's). A teacher the run already holds is not loaded twice."""
        from distil.models.causal_lm import load_tokenizer

        name, spec = next(iter(self.config.teachers.items()))
        tokenizer = load_tokenizer(model_folder(spec.model)) if spec.model else data.tokenizer
        model = teachers.models.get(name)
        if model is None:
            model = build_lm(spec, tokenizer, role="teacher", pretrain_data=data.teacher_train)
            model.to(spec.device or accelerator.device).eval()
        run_dir.mkdir(parents=True, exist_ok=True)
        return method.prepare_data(data, DataContext(model, tokenizer, run_dir))

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> ModelOutputs:
        """Hidden states and the head; the method's fused loss makes the logits chunk-wise."""
        assert isinstance(model, LanguageModel), "an LM task trains LanguageModel students"
        return ModelOutputs(
            logits=None, hidden=model.hidden(batch["inputs"]), head=model.head,
            vocab_size=model.vocab_size,
        )  # fmt: skip

    def count_targets(self, batch: dict[str, Any]) -> int:
        return int((batch["labels"] != IGNORE_INDEX).sum())

    def validator(self, data: LMSplits, teachers: TeacherSet | None, device: Any = "cpu"):
        evaluation = self.config.eval
        if evaluation.oracle is not None and self._oracle is None:
            model = build_lm(evaluation.oracle, data.tokenizer, role="eval.oracle")
            self._oracle = ModuleTeacher(model, device)
        return LMValidator(
            data.val, teachers.reference("val") if teachers else None,
            batch_size=evaluation.batch_size, oracle=self._oracle,
            hacking_window=evaluation.hacking_window, accelerator=self._accelerator,
        )  # fmt: skip

    # ------------------------------------------------------------------ results

    def evaluate(self, model, data: LMSplits, split: str, teachers: TeacherSet, device):
        return lm_metrics(
            model, getattr(data, split), teacher=teachers.reference(split),
            batch_size=self.config.eval.batch_size, device=device, accelerator=self._accelerator,
        )  # fmt: skip

    def teacher_metrics(self, data: LMSplits, teachers: TeacherSet, device) -> dict[str, dict]:
        """Each loaded teacher's own perplexity on the test split (same vocabulary only)."""
        scored = [name for name in teachers.models if name in teachers.references.get("test", {})]
        return {
            name: {
                "test": lm_metrics(
                    teachers.models[name],
                    data.test,
                    batch_size=self.config.eval.batch_size,
                    device=device,
                    accelerator=self._accelerator,
                )
            }
            for name in scored
        }

    def task_metrics(self, data, students, teachers, run_dir, device) -> dict[str, Any]:
        """The teacher-hacking verdict of the main student, from its validation history."""
        window = self.config.eval.hacking_window
        return {
            "teacher_hacking": teacher_hacking_verdict(run_dir / "metrics.jsonl", window=window)
        }

    def describe_model(self, spec: Any) -> str | None:
        return spec.model or "tiny"

    def save_students(self, students: dict[str, nn.Module], data: LMSplits, run_dir: Path) -> None:
        """Each student as a Hugging Face folder (``student/``, or the peer's name)."""
        for name, model in students.items():
            model.hf.save_pretrained(run_dir / name)
            data.tokenizer.save_pretrained(run_dir / name)
