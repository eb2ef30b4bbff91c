"""One language-model run from a recipe: data, vocabulary check, teacher (live or cached),
the one Trainer, final metrics, the teacher-hacking verdict, and the student as an HF folder.

The run folder is laid out like every other run (``config.yaml``, ``metrics.jsonl``,
``metrics.json``, ``checkpoints/``) plus ``student/``, the distilled model saved with its
tokenizer so ``AutoModelForCausalLM.from_pretrained`` loads it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import set_seed

from distil.cache.reader import TeacherCache
from distil.config import LMRunConfig
from distil.errors import ConfigError
from distil.eval.lm import LMValidator, lm_metrics
from distil.eval.monitors import teacher_hacking_verdict
from distil.lm.data import LMSplits, load_lm_data
from distil.lm.resolve import build_lm
from distil.lm.vocab import check_vocabularies, shares_vocabulary, weights_fingerprint
from distil.methods import build_method
from distil.models.language_model import LanguageModel
from distil.pipeline import RunResult, start_run
from distil.teachers import ModuleTeacher
from distil.teachers.base import DTYPES, Teacher
from distil.train import Trainer
from distil.train.accelerator import make_accelerator
from distil.train.checkpoint import has_checkpoint, load_model_state, read_pointer
from distil.train.state_io import write_json

log = logging.getLogger("distil")


def build_live_teacher(
    config: LMRunConfig, data: LMSplits, device: Any, *, required_same_vocab: bool = True
) -> tuple[ModuleTeacher, LanguageModel]:
    """The recipe's teacher loaded and frozen, after the vocabulary check."""
    assert config.teacher is not None
    if required_same_vocab:  # before loading: the check explains what a shape error would not
        check_vocabularies(config.teacher, data, method=config.method.name)
    model = build_lm(
        config.teacher, data.tokenizer, role="teacher", pretrain_data=data.teacher_train
    )
    teacher_device = config.teacher.device or device
    return ModuleTeacher(model, teacher_device, DTYPES[config.teacher.dtype]), model


@dataclass
class LMTeachers:
    """Which teacher serves which purpose in one run (any may be None)."""

    train: Teacher | None  # the training signal: the cache's train split, or the live model
    val: Teacher | None  # validation agreement/KL: live, else the cache's val split
    test: Teacher | None  # final test metrics: live, else the cache's test split if cached
    model: LanguageModel | None  # the live teacher's model, when loaded
    same_vocabulary: bool


def resolve_teachers(
    config: LMRunConfig, data: LMSplits, method: Any, accelerator: Accelerator
) -> LMTeachers:
    """Load the live teacher only where needed (on-policy methods, live training, live
    evaluation) and check a cache against the run's tokenizer and, when loaded, teacher."""
    # Teacher metrics (agreement, KL) need one vocabulary; seq_kd may run without it.
    same_vocab = method.needs_same_vocabulary or (
        config.teacher is not None and shares_vocabulary(config.teacher, data)
    )
    cache = live = model = None
    if config.teacher is not None:
        if config.teacher.cache:
            cache = TeacherCache(config.teacher.cache)
            cache.check_matches(tokenizer_fingerprint=data.fingerprint, teacher_fingerprint=None)
        wants_live = config.teacher.cache is None or config.teacher.live_eval
        if method.needs_live_teacher or (wants_live and same_vocab):
            live, model = build_live_teacher(
                config, data, accelerator.device, required_same_vocab=same_vocab
            )
            if cache is not None:
                cache.check_matches(
                    tokenizer_fingerprint=data.fingerprint,
                    teacher_fingerprint=weights_fingerprint(model),
                )
    if method.needs_live_teacher and live is None:
        raise ConfigError(f"method.name: {config.method.name!r} needs a live teacher")

    def cached(split: str) -> Teacher | None:
        return cache.split(split) if cache is not None and cache.has_split(split) else None

    return LMTeachers(
        train=cached("train") if cache is not None else live,
        val=(live or cached("val")) if same_vocab else None,
        test=(live or cached("test")) if same_vocab else None,
        model=model,
        same_vocabulary=same_vocab,
    )


def run_lm(
    config: LMRunConfig,
    *,
    resume: bool = False,
    data: LMSplits | None = None,
    accelerator: Accelerator | None = None,
) -> RunResult:
    """Train and evaluate an LM recipe; returns its folder and final metrics."""
    accelerator = accelerator or make_accelerator(config.train.mixed_precision)
    run_dir = start_run(config, resume, data)
    data = data or load_lm_data(config.data)
    method = build_method(config.method)
    if method.needs_teacher and config.teacher is None:
        raise ConfigError(f"method.name: {config.method.name!r} needs a teacher section")
    teachers = resolve_teachers(config, data, method, accelerator)
    if hasattr(method, "prepare_lm_data"):  # the method rewrites the training data first
        data = prepare_method_data(config, method, data, run_dir, accelerator, teachers.model)
    if hasattr(method, "attach_teacher") and teachers.train is not None:
        method.attach_teacher(teachers.train, data)
    oracle = None
    if config.eval.oracle is not None:
        oracle_model = build_lm(config.eval.oracle, data.tokenizer, role="eval.oracle")
        oracle = ModuleTeacher(oracle_model, accelerator.device)
    set_seed(config.train.seed)
    student = build_lm(
        config.student, data.tokenizer, role="student", pretrain_data=data.teacher_train
    )
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.to_yaml())
    started = time.perf_counter()
    trainer = Trainer(
        student, method, train_data=data.train, val_data=data.val, config=config.train,
        output_dir=run_dir, teacher=teachers.train if method.needs_teacher else None,
        select_metric=config.eval.select_metric, eval_batch_size=config.eval.batch_size,
        accelerator=accelerator,
        validator=LMValidator(
            data.val, teachers.val,
            batch_size=config.eval.batch_size, oracle=oracle,
            hacking_window=config.eval.hacking_window,
        ),
    )  # fmt: skip
    result = trainer.fit(resume=resume)
    metrics: dict[str, Any] = {}
    if accelerator.is_main_process:
        metrics = final_lm_metrics(config, data, student, teachers.test, run_dir, accelerator)
        metrics["train_seconds"] = time.perf_counter() - started
        metrics["last"].update(step=result.steps)
        metrics["teacher"] = (
            {"test": lm_metrics(teachers.model, data.test, batch_size=config.eval.batch_size,
                                device=accelerator.device)}
            if teachers.model is not None and teachers.same_vocabulary else None
        )  # fmt: skip
        metrics["teacher_hacking"] = teacher_hacking_verdict(
            run_dir / "metrics.jsonl", window=config.eval.hacking_window
        )
        write_json(run_dir / "metrics.json", metrics)
        student.hf.save_pretrained(run_dir / "student")
        data.tokenizer.save_pretrained(run_dir / "student")
        if config.output.report:
            from distil.report import write_report  # matplotlib only when a report is asked for

            write_report([run_dir], run_dir / "report.html", title=config.name)
    accelerator.wait_for_everyone()
    return RunResult(run_dir=run_dir, metrics=metrics)


def prepare_method_data(
    config: LMRunConfig,
    method: Any,
    data: LMSplits,
    run_dir: Path,
    accelerator: Accelerator,
    loaded: LanguageModel | None = None,
) -> LMSplits:
    """Let a data-rewriting method (sequence-level KD, MiniPLM) build its training split with
    the teacher, which needs its own tokenizer for generation (it may differ from the data's).
    ``loaded`` is the live teacher when the run already holds it (it is not loaded twice)."""
    from distil.lm.resolve import model_folder
    from distil.models.causal_lm import load_tokenizer

    if config.teacher is None:
        raise ConfigError(f"method.name: {config.method.name!r} needs a teacher section")
    teacher_tokenizer = (
        load_tokenizer(model_folder(config.teacher.model))
        if config.teacher.model
        else data.tokenizer
    )
    model = loaded
    if model is None:
        model = build_lm(
            config.teacher, teacher_tokenizer, role="teacher", pretrain_data=data.teacher_train
        )
        model.to(config.teacher.device or accelerator.device).eval()
    run_dir.mkdir(parents=True, exist_ok=True)
    return method.prepare_lm_data(data, model, teacher_tokenizer, run_dir)


def final_lm_metrics(
    config: LMRunConfig,
    data: LMSplits,
    student: LanguageModel,
    teacher: Teacher | None,
    run_dir: Path,
    accelerator: Accelerator,
) -> dict[str, Any]:
    """Test metrics at the last step and at the best validation step."""
    options = {"batch_size": config.eval.batch_size, "device": accelerator.device}
    result: dict[str, Any] = {
        "task": "lm",
        "method": config.method.name,
        "teacher_source": _teacher_source(config),
        "last": {"test": lm_metrics(student, data.test, teacher=teacher, **options)},
    }
    checkpoints = run_dir / "checkpoints"
    if has_checkpoint(checkpoints, "best"):
        pointer = read_pointer(checkpoints, "best")
        state = student.state_dict()
        student.load_state_dict(load_model_state(checkpoints, "best"))
        result["best_val"] = {
            "step": pointer["step"],
            "test": lm_metrics(student, data.test, teacher=teacher, **options),
        }
        student.load_state_dict(state)
    return result


def _teacher_source(config: LMRunConfig) -> str | None:
    if config.teacher is None:
        return None
    return "cache" if config.teacher.cache else "live"


def describe(metrics: dict[str, Any]) -> str:
    """A one-line summary of an LM run's test metrics (for the CLI)."""
    test = metrics["last"]["test"]
    return json.dumps({k: round(v, 4) for k, v in test.items() if isinstance(v, float)})
