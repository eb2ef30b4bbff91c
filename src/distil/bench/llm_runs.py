"""The pieces the ``llm`` suite is built from: a teacher's full log-probs held in memory,
teacher caches written from them, and tiny students trained and scored the same way.

Running a real teacher at every training step is far too slow on a CPU, and the size–quality
curve needs it many times over (every codec and k, and the full-logits reference). So the
teacher runs once over the training blocks; :class:`DenseTeacher` keeps what it said and
serves it by block index, both to the "full logits" student and to the cache writer, which
then selects each cache's top-k from the very same numbers.

What this module does not hold: which sizes, which variants and which rows — that is
:mod:`distil.bench.llm`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import Tensor

from distil.cache.manifest import Manifest
from distil.cache.writer import cache_teacher
from distil.data.datasets import in_order
from distil.data.text import TokenBlocks
from distil.errors import ConfigError
from distil.eval.lm import LMValidator, lm_metrics
from distil.lm.config import LMModelConfig
from distil.lm.data import LMSplits
from distil.lm.resolve import build_lm
from distil.methods import build_method
from distil.outputs import ModelOutputs
from distil.tasks.lm import LMTask
from distil.teachers.base import Teacher
from distil.train import Trainer
from distil.train.config import TrainConfig
from distil.train.trainer import TrainResult


class DenseTeacher:
    """A teacher's full log-probs over one split of blocks, in memory, looked up by index.

    A :class:`~distil.teachers.base.Teacher`: ``signal(batch)`` returns the log-probs
    ``(B, T, V)`` of the batch's blocks (``batch["index"]`` into the split it was made from)
    as its logits — log-probs are logits whose log-softmax is themselves, so a loss or the
    cache writer sees the teacher's distribution exactly (up to fp16 rounding). Only the
    training split is held; validation needs no teacher here.
    """

    def __init__(self, logprobs: Tensor) -> None:
        self.logprobs = logprobs  # (blocks, seq, vocab) float16
        self.device = torch.device("cpu")
        self.dtype = logprobs.dtype

    @classmethod
    @torch.no_grad()
    def from_teacher(cls, teacher: Teacher, blocks: TokenBlocks, batch_size: int) -> DenseTeacher:
        """Run ``teacher`` once over ``blocks`` and keep its log-probs at fp16."""
        logprobs: Tensor | None = None
        for batch in in_order(blocks, batch_size):
            logits = teacher.signal(batch).logits  # (B, T, V)
            if logprobs is None:  # one allocation: no list of batches, no concatenated copy
                logprobs = torch.empty((len(blocks), *logits.shape[1:]), dtype=torch.float16)
            logprobs[batch["index"]] = torch.log_softmax(logits.float(), dim=-1).half()
        assert logprobs is not None, "no blocks"
        return cls(logprobs)

    def signal(self, batch: dict[str, Any]) -> ModelOutputs:
        return ModelOutputs(logits=self.logprobs[batch["index"].cpu()])

    def capture(self, layers: list[str]) -> None:
        raise ConfigError("a dense in-memory teacher holds log-probs, not features")


@dataclass(frozen=True)
class CacheSize:
    """What one cache folder holds, measured on disk."""

    folder: Path
    tokens: int  # cached (labelled) tokens
    shard_bytes: int  # every shard file, headers and block tables included
    record_bytes: int  # the codec's fixed record per token

    @property
    def bytes_per_token(self) -> float:
        return self.shard_bytes / self.tokens


def write_cache(
    teacher: Teacher,
    data: LMSplits,
    folder: Path,
    *,
    k: int,
    codec: str,
    teacher_name: str,
    batch_size: int,
) -> CacheSize:
    """Cache ``teacher``'s top-``k`` over the training split with ``codec``; measure the folder."""
    settings = {
        "teacher": teacher_name,
        "tokenizer_fingerprint": data.fingerprint,
        "vocab_size": data.vocab_size,
        "block_size": data.train.block_size,
    }
    cache_teacher(
        teacher, {"train": data.train}, folder, settings=settings, k=k, codec=codec,
        batch_size=batch_size,
    )  # fmt: skip
    manifest = Manifest.read(folder)
    shard_bytes = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    return CacheSize(folder, manifest.tokens("train"), shard_bytes, manifest.record_bytes)


@dataclass(frozen=True)
class StudentSetup:
    """How every student of the suite is built and trained (same seed, same batches)."""

    student: LMModelConfig
    train: TrainConfig
    eval_batch_size: int


def train_student(
    setup: StudentSetup,
    data: LMSplits,
    method: dict[str, Any],
    teacher: Teacher | None,
    output_dir: Path,
    accelerator: Accelerator,
    *,
    max_steps: int | None = None,
) -> tuple[torch.nn.Module, TrainResult]:
    """Train a fresh student with ``method`` on the training split; validation only checks
    that it runs (two blocks) — the suite scores the test split itself."""
    config = setup.train if max_steps is None else setup.train.model_copy(update={"max_steps": max_steps})  # fmt: skip
    set_seed(config.seed)
    student = build_lm(setup.student, data.tokenizer, role="student")
    built = build_method(method)
    val = data.val.subset(range(min(2, len(data.val))))
    trainer = Trainer(
        student, built, task=LMTask(), train_data=data.train, config=config,
        output_dir=output_dir, teachers={"teacher": teacher} if built.needs_teacher else {},
        select_metric="perplexity", accelerator=accelerator, data=data,
        validator=LMValidator(val, None, batch_size=setup.eval_batch_size),
    )  # fmt: skip
    return student, trainer.fit()


def held_out_perplexity(model: torch.nn.Module, data: LMSplits, batch_size: int) -> float:
    """Perplexity on the held-out test split."""
    return lm_metrics(model, data.test, batch_size=batch_size)["perplexity"]
