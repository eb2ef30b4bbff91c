"""``distil cache-teacher RECIPE``: the recipe's teacher over its data, into a teacher cache.

The cache is keyed to what decides its content — the teacher's weights, the tokenizer, the
data section (blocks are looked up by index and checked by a hash of their tokens) — and a
run that reads it checks the same fingerprints.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from accelerate import Accelerator

from distil.cache.manifest import Manifest
from distil.cache.writer import CacheStats, cache_teacher
from distil.errors import ConfigError
from distil.lm.data import LMSplits, load_lm_data
from distil.lm.vocab import weights_fingerprint
from distil.tasks.lm import LMRunConfig, build_live_teacher
from distil.train.accelerator import make_accelerator


def cache_recipe_teacher(
    config: LMRunConfig,
    *,
    folder: Path | None = None,
    data: LMSplits | None = None,
    accelerator: Accelerator | None = None,
) -> tuple[Manifest, CacheStats]:
    """Write (or finish) the teacher cache a recipe describes; returns its manifest."""
    if config.teacher is None:
        raise ConfigError("teacher: cache-teacher needs a teacher section")
    accelerator = accelerator or make_accelerator("no")
    data = data or load_lm_data(config.data)
    teacher = build_live_teacher(
        config.teacher, data, accelerator.device, method=config.method.name
    )
    model = teacher.module
    folder = Path(folder) if folder is not None else config.cache_dir()
    settings = {
        "teacher": config.teacher.model or "tiny",
        "teacher_fingerprint": weights_fingerprint(model),
        "tokenizer_fingerprint": data.fingerprint,
        "vocab_size": data.vocab_size,
        "block_size": data.config.block_size,
        "data_digest": hashlib.sha256(
            json.dumps(data.config.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()[:16],
    }
    splits = {name: getattr(data, name) for name in config.cache.splits}
    stats = cache_teacher(
        teacher, splits, folder, settings=settings, k=config.cache.k, codec=config.cache.codec,
        shard_tokens=config.cache.shard_tokens, batch_size=config.cache.batch_size,
        rank=accelerator.process_index, world_size=accelerator.num_processes,
        barrier=accelerator.wait_for_everyone if accelerator.num_processes > 1 else None,
    )  # fmt: skip
    return Manifest.read(folder), stats
