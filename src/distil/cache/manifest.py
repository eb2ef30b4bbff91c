"""The cache's ``manifest.json`` and the shard files' layout, and their integrity checks.

A cache folder holds shard files ``{split}-r{rank:03d}-{n:05d}.safetensors`` and one
``manifest.json`` written when every shard is complete. Each shard holds:

* ``records`` uint8 ``(tokens, record_bytes)`` — the codec's records of every labelled token
  of its sequences, sequence after sequence;
* ``sequence_ids`` int64 ``(S,)`` — the dataset indices of its sequences;
* ``offsets`` int64 ``(S + 1,)`` — where each sequence's tokens start in ``records``;
* ``input_hashes`` int64 ``(S,)`` — a hash of each sequence's input ids, so a cache read
  against other data is caught instead of silently teaching the wrong tokens.

The manifest records what made the cache (teacher and tokenizer fingerprints, temperature,
k, codec with its parameters) and, per shard, its size and sha256; the manifest's own sha256
is sealed in ``checksums.json`` (the record checkpoints and run folders use too), so an
edited setting is caught as surely as a damaged shard. While a cache is being written, each
rank records every shard's sha256 as it finishes it in ``checksums-r<rank>.json``: a
resumed run verifies the shards it keeps, and the merge lists only shards that still match. Shards are read by
memory-mapping the ``records`` tensor straight out of the safetensors file: a safetensors
file is an 8-byte header length, a JSON header with each tensor's dtype, shape and byte
range, then the raw bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distil.errors import DataError
from distil.train.state_io import read_json, write_text_atomic

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STARTED = "cache-settings.json"

log = logging.getLogger("distil")

_HASH_WEIGHTS: dict[int, Tensor] = {}


@dataclass
class ShardInfo:
    """One shard file as the manifest lists it."""

    file: str
    split: str
    rank: int
    sequences: int
    tokens: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    """What a complete cache holds and what made it."""

    settings: dict[str, Any]  # teacher/tokenizer fingerprints, k, codec, temperature, …
    shards: list[ShardInfo] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    def tokens(self, split: str) -> int:
        return sum(s.tokens for s in self.shards if s.split == split)

    def sequences(self, split: str) -> int:
        return sum(s.sequences for s in self.shards if s.split == split)

    @property
    def record_bytes(self) -> int:
        """Bytes per cached token in the records (the codec's record size; shard headers and
        block tables aside)."""
        return int(self.settings["record_bytes"])

    def write(self, folder: Path) -> None:
        payload = {
            "format_version": self.format_version,
            **self.settings,
            "splits": {
                split: {"sequences": self.sequences(split), "tokens": self.tokens(split)}
                for split in sorted({s.split for s in self.shards})
            },
            "shards": [asdict(s) for s in self.shards],
        }
        write_json_atomic(folder / MANIFEST, payload)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """The manifest of ``folder``, verified against the ``checksums.json`` sealed with it
        (a cache written before the seal existed is read with a warning)."""
        path = folder / MANIFEST
        if not path.is_file():
            raise DataError(
                f"{folder}: no {MANIFEST}; not a teacher cache, or `distil cache-teacher` did "
                "not finish (run it again: it resumes)"
            )
        data = path.read_bytes()
        check_sealed(path, hashlib.sha256(data).hexdigest())
        try:
            payload = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"{path}: corrupt manifest ({error})") from None
        if not isinstance(payload, dict):
            raise DataError(f"{path}: corrupt manifest (not a JSON object)")
        version = payload.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise DataError(
                f"{path}: cache format version {version}, this distil reads {FORMAT_VERSION}; "
                "rebuild the cache with `distil cache-teacher`"
            )
        payload.pop("splits", None)
        try:
            shards = [ShardInfo(**s) for s in payload.pop("shards", [])]
        except TypeError as error:
            raise DataError(f"{path}: corrupt manifest (a shard entry: {error})") from None
        return cls(settings=payload, shards=shards)


def seal_manifest(folder: Path) -> None:
    """Record the manifest's sha256 in ``checksums.json``, the seal every distil folder uses
    (:func:`distil.train.checkpoint.seal`); the manifest records the shards' own."""
    from distil.train.checkpoint import seal

    seal(folder, [MANIFEST])


def check_sealed(path: Path, digest: str) -> None:
    """DataError unless ``digest`` is the sha256 the folder's ``checksums.json`` records for
    ``path``; a folder without that record is accepted with a warning (an older distil)."""
    from distil.train.checkpoint import CHECKSUMS_FILE

    seal_path = path.parent / CHECKSUMS_FILE
    if not seal_path.is_file():
        log.warning("%s has no %s (written by an older distil): %s not verified",
                    path.parent, CHECKSUMS_FILE, path.name)  # fmt: skip
        return
    recorded = read_json(seal_path, DataError)
    if not isinstance(recorded, dict) or path.name not in recorded:
        raise DataError(f"{seal_path}: does not record {path.name} (damaged or edited)")
    if recorded[path.name] != digest:
        raise DataError(
            f"{path}: damaged (its sha256 differs from the one recorded in {CHECKSUMS_FILE} "
            "when it was written)"
        )


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temporary file and rename it over ``path`` (never half-written)."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False))


def input_hashes(input_ids: Tensor) -> Tensor:
    """An int64 hash per row of ``input_ids`` (B, T): Σ (id + 1) · w_t with fixed random
    weights (int64 arithmetic wraps, identically everywhere)."""
    length = input_ids.shape[-1]
    if length not in _HASH_WEIGHTS:
        generator = torch.Generator().manual_seed(20261126 + length)
        _HASH_WEIGHTS[length] = torch.randint(1, 2**62, (length,), generator=generator)
    weights = _HASH_WEIGHTS[length].to(input_ids.device)
    return ((input_ids.long() + 1) * weights).sum(-1)


_DTYPES = {"U8": np.uint8, "I64": np.int64, "I32": np.int32, "F16": np.float16, "F32": np.float32}


def shard_arrays(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a shard, each a read-only ``np.memmap`` into the file (no copy).

    A truncated file or a header that does not describe the file is a ``DataError`` that
    names the file.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise DataError(f"{path}: truncated shard (no header)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            raise DataError(f"{path}: truncated shard (header runs past the end of the file)")
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"{path}: corrupt shard header") from None
    base = 8 + header_len
    arrays = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None or base + end > size:
            raise DataError(
                f"{path}: tensor {name!r} is truncated or of an unknown dtype "
                f"({info['dtype']}, bytes {start}–{end} of {size - base})"
            )
        shape = tuple(info["shape"])
        if end == start:
            arrays[name] = np.zeros(shape, dtype=dtype)
            continue
        arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=base + start, shape=shape)
    return arrays
