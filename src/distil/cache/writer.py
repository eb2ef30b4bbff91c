"""Run a teacher once over token blocks and store its top-k per labelled token.

* **Sharded by rank** — under ``accelerate launch`` process r takes the blocks i with
  i mod world = r and writes its own shards; the main process merges one manifest after
  every process is done.
* **Resumable** — a shard is written to a temporary name and renamed when complete, so the
  folder only ever holds whole shards; its sha256 is recorded (``checksums-r<rank>.json``)
  before it takes its name, and a restarted run verifies the shards it keeps against it,
  reads which blocks they hold and continues after them. The settings are recorded when a cache is started and a
  restart with other settings (another teacher, k, codec) is refused.
* **Overlapped** — top-k selection stays with the forward pass; encoding and writing run in
  a background thread, so the teacher is rarely kept waiting (``distil bench llm`` measures
  the throughput against a bare forward pass).
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save_file

from distil.cache.codecs import get_codec
from distil.cache.manifest import (
    STARTED,
    Manifest,
    ShardInfo,
    input_hashes,
    seal_manifest,
    shard_arrays,
    write_json_atomic,
)
from distil.data.datasets import in_order
from distil.data.text import TokenBlocks
from distil.errors import DataError
from distil.teachers.base import Teacher
from distil.train.state_io import read_json, sha256_of

log = logging.getLogger("distil")


@dataclass
class CacheStats:
    """What one call wrote (this process)."""

    tokens: int
    sequences: int
    seconds: float


def cache_teacher(
    teacher: Teacher,
    splits: dict[str, TokenBlocks],
    folder: Path,
    *,
    settings: dict[str, Any],
    k: int,
    codec: str = "compact",
    shard_tokens: int = 1 << 16,
    batch_size: int = 8,
    rank: int = 0,
    world_size: int = 1,
    barrier=None,
) -> CacheStats:
    """Cache ``teacher``'s top-``k`` log-probs (T = 1) over every split into ``folder``.

    ``settings`` (fingerprints of teacher and tokenizer, anything that decides the cache's
    content) go to the manifest with k, the codec and the record size. ``barrier`` is the
    process group's wait-for-everyone (``Accelerator.wait_for_everyone``) when world_size > 1.
    """
    import time

    started = time.perf_counter()
    coder = get_codec(codec)
    vocab_size = int(settings["vocab_size"])
    full_settings = {
        **settings,
        "temperature": 1.0,
        "k": k,
        "codec": {"name": coder.name, "params": coder.params},
        "record_bytes": coder.record_bytes(k, vocab_size),
        "world_size": world_size,
        "split_sizes": {name: len(blocks) for name, blocks in splits.items()},
    }
    folder.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        _record_settings(folder, full_settings)
    if barrier is not None:
        barrier()
    if rank != 0:  # alone (no process group): record them if rank 0 has not yet
        _record_settings(folder, full_settings)
    _check_settings(folder, full_settings)
    ledger = ShardLedger(folder, rank)
    tokens = sequences = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: list[Future] = []
        for split, blocks in splits.items():
            mine = list(range(rank, len(blocks), world_size))
            done, next_index = _finished(folder, split, rank, ledger)
            todo = [i for i in mine if i not in done]
            if done:
                log.info("%s/%s rank %d: %d blocks already cached, %d to go",
                         folder, split, rank, len(mine) - len(todo), len(todo))  # fmt: skip
            shard = _ShardBuffer(folder, split, rank, next_index)
            for batch in in_order(blocks.subset(todo) if todo else blocks.subset([]), batch_size):
                ids_in_split = torch.as_tensor(todo)[batch["index"]]
                labels = batch["labels"]
                logits = teacher.signal(batch).logits
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                if logprobs.shape[-1] != vocab_size:
                    raise DataError(
                        f"teacher gives {logprobs.shape[-1]} logits per token, the tokenizer "
                        f"has {vocab_size} tokens"
                    )
                top_lp, top_ids = logprobs.topk(k, dim=-1)
                mask = (labels >= 0).to(top_lp.device)
                counts = mask.sum(-1).cpu()
                shard.add(
                    top_lp[mask].cpu(), top_ids[mask].cpu(), ids_in_split, counts,
                    input_hashes(batch["inputs"]["input_ids"]),
                )  # fmt: skip
                tokens += int(counts.sum())
                sequences += len(counts)
                if shard.tokens >= shard_tokens:
                    pending.append(pool.submit(shard.flush, coder, k, vocab_size, ledger))
                    shard = _ShardBuffer(folder, split, rank, shard.index + 1)
                    _drain(pending, keep=1)
            if shard.tokens or shard.sequences:
                pending.append(pool.submit(shard.flush, coder, k, vocab_size, ledger))
        _drain(pending, keep=0)
    if barrier is not None:
        barrier()
    if rank == 0:
        merge_manifest(folder, full_settings)
    if barrier is not None:
        barrier()
    return CacheStats(tokens, sequences, time.perf_counter() - started)


def merge_manifest(folder: Path, settings: dict[str, Any]) -> Manifest:
    """List every complete shard with its size and sha256 — each checked against the sha256
    its rank recorded when it wrote it — write ``manifest.json`` and seal it."""
    shards, ledgers = [], {}
    for path in sorted(folder.glob("*-r*-*.safetensors")):
        split, rank_part, _ = path.stem.rsplit("-", 2)
        rank = int(rank_part[1:])
        ledger = ledgers.setdefault(rank, ShardLedger(folder, rank))
        digest = ledger.check(path)
        arrays = shard_arrays(path)
        shards.append(
            ShardInfo(
                file=path.name, split=split, rank=rank,
                sequences=len(arrays["sequence_ids"]), tokens=len(arrays["records"]),
                bytes=path.stat().st_size, sha256=digest,
            )
        )  # fmt: skip
    manifest = Manifest(settings=settings, shards=shards)
    for split, size in settings["split_sizes"].items():
        if manifest.sequences(split) != size:
            raise DataError(
                f"{folder}: {manifest.sequences(split)} of {size} {split} blocks are cached; "
                "a process did not finish — run `distil cache-teacher` again to complete it"
            )
    manifest.write(folder)
    seal_manifest(folder)
    return manifest


class ShardLedger:
    """``checksums-r<rank>.json``: the sha256 of each shard one rank wrote, recorded before
    the shard takes its final name (so every finished shard has its record). Teacher-written
    text (:mod:`distil.lm.generation`) records its parts in the same ledger; ``redo`` says
    how a damaged file is made anew."""

    def __init__(
        self,
        folder: Path,
        rank: int,
        redo: str = "run `distil cache-teacher` again to cache its blocks anew",
    ) -> None:
        self.path = folder / f"checksums-r{rank:03d}.json"
        self.redo = redo
        self.digests: dict[str, str] = {}
        if self.path.is_file():
            recorded = read_json(self.path, DataError)
            if not isinstance(recorded, dict):
                raise DataError(f"{self.path}: not a checksum record (expected a JSON object)")
            self.digests = recorded

    def record(self, name: str, digest: str) -> None:
        self.digests[name] = digest
        write_json_atomic(self.path, self.digests)

    def check(self, path: Path) -> str:
        """The shard's sha256, or a DataError naming it when it is not the one written."""
        if path.name not in self.digests:
            raise DataError(
                f"{path}: no sha256 recorded for it in {self.path.name} (written by an older "
                f"distil, or the record was lost); delete the shard and {self.redo}"
            )
        digest = sha256_of(path)
        if digest != self.digests[path.name]:
            raise DataError(
                f"{path}: damaged (its sha256 differs from the one recorded in "
                f"{self.path.name} when it was written); delete it and {self.redo}"
            )
        return digest


class _ShardBuffer:
    """One shard's worth of selected top-k, encoded and written atomically by ``flush``."""

    def __init__(self, folder: Path, split: str, rank: int, index: int) -> None:
        self.folder, self.split, self.rank, self.index = folder, split, rank, index
        self.logprobs: list[torch.Tensor] = []
        self.ids: list[torch.Tensor] = []
        self.sequence_ids: list[torch.Tensor] = []
        self.counts: list[torch.Tensor] = []
        self.hashes: list[torch.Tensor] = []
        self.tokens = self.sequences = 0

    def add(self, logprobs, ids, sequence_ids, counts, hashes) -> None:
        self.logprobs.append(logprobs)
        self.ids.append(ids)
        self.sequence_ids.append(sequence_ids)
        self.counts.append(counts)
        self.hashes.append(hashes.cpu())
        self.tokens += int(counts.sum())
        self.sequences += len(counts)

    def flush(self, coder, k: int, vocab_size: int, ledger: ShardLedger) -> Path:
        counts = torch.cat(self.counts).long()
        if self.tokens:
            records = coder.encode(torch.cat(self.logprobs), torch.cat(self.ids), vocab_size)
        else:
            records = np.zeros((0, coder.record_bytes(k, vocab_size)), dtype=np.uint8)
        offsets = np.concatenate([[0], np.cumsum(counts.numpy())]).astype(np.int64)
        name = f"{self.split}-r{self.rank:03d}-{self.index:05d}.safetensors"
        tmp = self.folder / f".{name}.tmp"
        save_file(
            {
                "records": np.ascontiguousarray(records),
                "sequence_ids": torch.cat(self.sequence_ids).long().numpy(),
                "offsets": offsets,
                "input_hashes": torch.cat(self.hashes).long().numpy(),
            },
            str(tmp),
        )
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        ledger.record(name, sha256_of(tmp))
        os.replace(tmp, self.folder / name)
        return self.folder / name


def _drain(pending: list[Future], keep: int) -> None:
    """Wait until at most ``keep`` writes are in flight (re-raising their errors)."""
    while len(pending) > keep:
        pending.pop(0).result()


def _finished(folder: Path, split: str, rank: int, ledger: ShardLedger) -> tuple[set[int], int]:
    """Blocks this rank's complete shards of ``split`` hold — each verified against the
    sha256 recorded when it was written — and the next shard number."""
    done: set[int] = set()
    shards = sorted(folder.glob(f"{split}-r{rank:03d}-*.safetensors"))
    for path in shards:
        ledger.check(path)
        done.update(int(i) for i in shard_arrays(path)["sequence_ids"])
    next_index = int(shards[-1].stem.rsplit("-", 1)[1]) + 1 if shards else 0
    return done, next_index


def _record_settings(folder: Path, settings: dict[str, Any]) -> None:
    path = folder / STARTED
    if path.is_file():
        return
    if any(folder.glob("*-r*-*.safetensors")):
        raise DataError(
            f"{path}: missing while {folder} holds shards; what made them is unknown, so they "
            "are not resumed — delete the folder or choose another cache.dir"
        )
    write_json_atomic(path, settings)


def _check_settings(folder: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume a cache started with other settings, showing both values."""
    path = folder / STARTED
    recorded = read_json(path, DataError)
    if not isinstance(recorded, dict):
        raise DataError(f"{path}: not a settings record (expected a JSON object)")
    current = json.loads(json.dumps(settings))  # as JSON would give it back (tuples → lists)
    if recorded != current:
        changed = sorted(k for k in recorded.keys() | current.keys()
                         if recorded.get(k) != current.get(k))  # fmt: skip
        shown = "; ".join(f"{k}: {recorded.get(k)!r} → {current.get(k)!r}" for k in changed)
        raise DataError(
            f"{folder}: this cache was started with other settings ({shown}; recorded in "
            f"{STARTED} → this run's); delete the folder or choose another cache.dir"
        )
