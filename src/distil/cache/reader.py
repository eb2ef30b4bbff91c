"""Read a teacher cache: verify it, memory-map its shards, and serve top-k per batch.

Opening a cache checks the manifest (format version; the teacher's and tokenizer's
fingerprints against the run's) and every shard (size and sha256 against the manifest), so a
truncated or altered file, or a cache made by another teacher or tokenizer, fails before
training with an error that names the file. Batches are then served by looking the blocks'
``index`` up: only the records of those blocks are decoded, straight from the mapped file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from distil.cache.codecs import get_codec
from distil.cache.manifest import Manifest, input_hashes, shard_arrays
from distil.errors import ConfigError, DataError
from distil.losses.sparse import TopK
from distil.outputs import ModelOutputs
from distil.train.state_io import sha256_of


class TeacherCache:
    """A verified cache folder; ``split(name)`` gives a teacher over that split's blocks."""

    def __init__(self, folder: Path | str, *, verify: bool = True) -> None:
        self.folder = Path(folder)
        self.manifest = Manifest.read(self.folder)
        settings = self.manifest.settings
        self.k = int(settings["k"])
        self.vocab_size = int(settings["vocab_size"])
        self.codec = get_codec(settings["codec"]["name"], **settings["codec"]["params"])
        self.record_bytes = int(settings["record_bytes"])
        for shard in self.manifest.shards:
            path = self.folder / shard.file
            if not path.is_file():
                raise DataError(f"{path}: shard listed in the manifest is missing")
            if path.stat().st_size != shard.bytes:
                raise DataError(
                    f"{path}: {path.stat().st_size} bytes, the manifest says {shard.bytes} "
                    "(truncated or altered)"
                )
            if verify and sha256_of(path) != shard.sha256:
                raise DataError(f"{path}: sha256 differs from the manifest (altered or corrupt)")

    def check_matches(self, *, tokenizer_fingerprint: str, teacher_fingerprint: str | None) -> None:
        """Refuse a cache made with another tokenizer (or, when known, another teacher)."""
        settings = self.manifest.settings
        if settings.get("tokenizer_fingerprint") != tokenizer_fingerprint:
            raise ConfigError(
                f"teacher.cache: {self.folder} was made with another tokenizer (fingerprint "
                f"{str(settings.get('tokenizer_fingerprint'))[:12]}…, the run's is "
                f"{tokenizer_fingerprint[:12]}…); rebuild it with `distil cache-teacher`"
            )
        if (
            teacher_fingerprint is not None
            and settings.get("teacher_fingerprint") != teacher_fingerprint
        ):
            raise ConfigError(
                f"teacher.cache: {self.folder} was made by another teacher (fingerprint "
                f"{str(settings.get('teacher_fingerprint'))[:12]}…, the recipe's teacher is "
                f"{teacher_fingerprint[:12]}…); rebuild it with `distil cache-teacher`"
            )

    def has_split(self, name: str) -> bool:
        return any(s.split == name for s in self.manifest.shards)

    def split(self, name: str) -> CachedTeacher:
        shards = [s for s in self.manifest.shards if s.split == name]
        if not shards:
            cached = sorted({s.split for s in self.manifest.shards})
            raise ConfigError(
                f"teacher.cache: {self.folder} holds no {name!r} split (has {cached})"
            )
        return CachedTeacher(self, [self.folder / s.file for s in shards], name)


class CachedTeacher:
    """A :class:`~distil.teachers.base.Teacher` that looks batches up in one cached split."""

    def __init__(self, cache: TeacherCache, shard_paths: list[Path], split: str) -> None:
        self.cache, self.split_name = cache, split
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.records: list[np.ndarray] = []
        where: dict[int, tuple[int, int, int, int]] = {}
        for number, path in enumerate(shard_paths):
            arrays = shard_arrays(path)
            if arrays["records"].shape[1:] != (cache.record_bytes,):
                raise DataError(
                    f"{path}: records of {arrays['records'].shape[1:]} bytes, the manifest's "
                    f"codec writes {cache.record_bytes}"
                )
            self.records.append(arrays["records"])
            offsets = np.asarray(arrays["offsets"])
            for row, (sequence, hashed) in enumerate(
                zip(
                    np.asarray(arrays["sequence_ids"]),
                    np.asarray(arrays["input_hashes"]),
                    strict=True,
                )
            ):
                where[int(sequence)] = (
                    number,
                    int(offsets[row]),
                    int(offsets[row + 1]),
                    int(hashed),
                )
        self.where = where

    def __len__(self) -> int:
        return len(self.where)

    def capture(self, layers: list[str]) -> None:
        raise ConfigError("teacher.cache: a cached teacher stores top-k log-probs, not features")

    def signal(self, batch: dict[str, Any]) -> ModelOutputs:
        """The cached top-k of every labelled position of ``batch`` as a :class:`TopK`
        ``(B, T, k)``; unlabelled positions hold a uniform placeholder that losses mask."""
        labels = batch["labels"].cpu()
        hashes = input_hashes(batch["inputs"]["input_ids"].cpu())
        mask = labels >= 0
        pieces, k = [], self.cache.k
        for row, index in enumerate(batch["index"].tolist()):
            if index not in self.where:
                raise DataError(
                    f"teacher.cache: block {index} of the {self.split_name} split is not in "
                    f"{self.cache.folder} ({len(self)} blocks cached); was it made from other data?"
                )
            shard, start, end, hashed = self.where[index]
            if hashed != int(hashes[row]) or end - start != int(mask[row].sum()):
                raise DataError(
                    f"teacher.cache: block {index} of the {self.split_name} split differs from "
                    f"the block cached in {self.cache.folder}: it was made from other data or "
                    "another data section (tokenizer, block_size, split)"
                )
            pieces.append(self.records[shard][start:end])
        records = (
            np.concatenate(pieces) if pieces else np.zeros((0, self.cache.record_bytes), np.uint8)
        )
        logprobs, ids = self.cache.codec.decode(records, k, self.cache.vocab_size)
        shape = (*labels.shape, k)
        full_ids = torch.arange(k).expand(shape).clone()
        full_lp = torch.full(shape, -float(np.log(k)))
        full_ids[mask] = ids
        full_lp[mask] = logprobs
        return ModelOutputs(logits=TopK(indices=full_ids, logprobs=full_lp))
