"""Teacher-written training text: continuations of prompts, sharded by rank, resumable,
verified when read.

* **Parts** — records go to ``part-NNNNN.jsonl`` files of ``part_size`` prompts each; each
  record is ``{"id", "prompt", "response"}`` in text, so a student with another tokenizer can
  learn from it. Part p is generated with the seed ``seed + p``, so its text does not depend
  on how many processes wrote the store.
* **Sharded by rank** — under ``accelerate launch`` process r writes the parts p with
  p mod world = r, as the teacher cache shards its blocks (:mod:`distil.cache.writer`).
* **Resumable, atomic** — a part is written to a temporary name, its sha256 recorded in its
  rank's ``checksums-r<rank>.json`` (the teacher cache's :class:`ShardLedger`), then renamed:
  a killed run leaves only whole parts, each with its checksum, and a restart verifies them
  and continues with the missing ones.
* **One verified manifest** — when every part exists the main process checks each against
  the checksum recorded at its write and lists them (records, bytes, sha256) with the
  generation settings in ``manifest.json``, sealed with ``checksums.json`` (as a cache's
  manifest is). Every process then reads the store back through the manifest: a missing,
  truncated or altered part is a ``DataError`` naming it, never text silently regenerated or
  half read.

The parts are merged on a shared filesystem: every process must see ``out_dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from distil.cache.manifest import (
    MANIFEST,
    check_sealed,
    seal_manifest,
    write_json_atomic,
)
from distil.cache.writer import ShardLedger
from distil.errors import DataError
from distil.jsonl import read_json_lines
from distil.models.language_model import LanguageModel
from distil.train.state_io import sha256_of

FORMAT_VERSION = 1
KIND = "teacher-generations"


def generate_continuations(
    model: LanguageModel,
    tokenizer: Any,
    prompts: list[str],
    out_dir: Path,
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    part_size: int = 64,
    processes: PartialState | None = None,
) -> list[dict]:
    """The model's continuation of every prompt (greedy by default), in prompt order.

    Collective under several processes (``processes``: the launch's ``PartialState`` by
    default): every process calls it, writes its parts, and returns the whole store.
    """
    processes = processes or PartialState()
    settings = generation_settings(
        prompts, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
        seed=seed, part_size=part_size,
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / MANIFEST).is_file():  # every process sees the same: it is written below
        chunks = [prompts[start : start + part_size] for start in range(0, len(prompts), part_size)]
        ledgers = Ledgers(out_dir, processes.process_index)
        for part in range(processes.process_index, len(chunks), processes.num_processes):
            path = out_dir / part_name(part)
            if path.is_file():  # written before a kill: whole, and the one recorded?
                ledgers.check(path)
                _check_prompts(path, read_json_lines(path), chunks[part], out_dir)
                continue
            torch.manual_seed(seed + part)
            records = _continue(
                model, tokenizer, chunks[part], first_id=part * part_size,
                max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=do_sample,
                temperature=temperature,
            )  # fmt: skip
            write_part(path, records, ledgers.own)
        processes.wait_for_everyone()
        if processes.is_main_process:
            merge_parts(out_dir, settings, chunks)
        processes.wait_for_everyone()
    return read_generations(out_dir, settings)


def generation_settings(prompts: list[str], **options: Any) -> dict[str, Any]:
    """What decides a store's content: the prompts (their number and sha256) and the
    generation options. A store made with other settings is refused, not reused."""
    digest = hashlib.sha256(json.dumps(prompts).encode("utf-8")).hexdigest()
    return {"prompts": len(prompts), "prompts_sha256": digest, **options}


def part_name(part: int) -> str:
    return f"part-{part:05d}.jsonl"


def _continue(
    model: LanguageModel,
    tokenizer: Any,
    texts: list[str],
    *,
    first_id: int,
    max_new_tokens: int,
    batch_size: int,
    do_sample: bool,
    temperature: float,
) -> list[dict]:
    """One part's records: the model's continuation of each of ``texts``."""
    tokenizer.padding_side = "left"  # generation appends on the right of every row
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    options: dict[str, Any] = {
        "do_sample": do_sample, "max_new_tokens": max_new_tokens, "pad_token_id": pad_id
    }  # fmt: skip
    if do_sample:
        options |= {"temperature": temperature, "top_k": 0}
    if model.head.shape[0] > model.vocab_size:
        options["suppress_tokens"] = list(range(model.vocab_size, model.head.shape[0]))
    records = []
    for offset in range(0, len(texts), batch_size):
        batch = texts[offset : offset + batch_size]
        encoded = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        device = model.head.device
        sequences = model.generate(
            encoded["input_ids"].to(device), encoded["attention_mask"].to(device), **options
        )
        new = sequences[:, encoded["input_ids"].shape[1] :]
        for number, (text, ids) in enumerate(zip(batch, new, strict=True)):
            response = tokenizer.decode(ids, skip_special_tokens=True)
            records.append({"id": first_id + offset + number, "prompt": text, "response": response})
    return records


def write_part(path: Path, records: list[dict], ledger: ShardLedger) -> None:
    """Write a part under a temporary name, record its sha256, then give it its name."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    ledger.record(path.name, sha256_of(tmp))
    os.replace(tmp, path)


class Ledgers:
    """Every rank's checksum record of the store: a part may have been written by another
    rank (a restart with another number of processes), so each is looked up by name."""

    REDO = "run again to generate its prompts anew"

    def __init__(self, folder: Path, rank: int) -> None:
        self.own = ShardLedger(folder, rank, redo=self.REDO)
        self.all = [self.own] + [
            ShardLedger(folder, int(path.stem.rsplit("-r", 1)[1]), redo=self.REDO)
            for path in sorted(folder.glob("checksums-r*.json"))
            if path != self.own.path
        ]

    def check(self, path: Path) -> tuple[int, str]:
        """The writing rank and the part's sha256; a DataError naming the part when it is not
        the file that was written (or no rank recorded it)."""
        for ledger in self.all:
            if path.name in ledger.digests:
                return int(ledger.path.stem.rsplit("-r", 1)[1]), ledger.check(path)
        raise DataError(
            f"{path}: no sha256 recorded for it in any checksums-r*.json (written by an older "
            f"distil, or the record was lost); delete the part and {self.REDO}"
        )


def merge_parts(out_dir: Path, settings: dict[str, Any], chunks: list[list[str]]) -> None:
    """Check every part against the checksum recorded when it was written and its prompts,
    then write the store's ``manifest.json`` and seal it (main process)."""
    ledgers = Ledgers(out_dir, 0)
    parts = []
    for part, chunk in enumerate(chunks):
        path = out_dir / part_name(part)
        if not path.is_file():
            raise DataError(
                f"{path}: missing; a process did not finish its parts — run again to generate them"
            )
        rank, digest = ledgers.check(path)
        _check_prompts(path, read_json_lines(path), chunk, out_dir)
        parts.append({"file": path.name, "rank": rank, "records": len(chunk),
                      "bytes": path.stat().st_size, "sha256": digest})  # fmt: skip
    payload = {"format_version": FORMAT_VERSION, "kind": KIND, "settings": settings,
               "parts": parts}  # fmt: skip
    write_json_atomic(out_dir / MANIFEST, payload)
    seal_manifest(out_dir)


def read_generations(out_dir: Path, settings: dict[str, Any] | None = None) -> list[dict]:
    """Every record of a finished store in prompt order, each part verified against the
    manifest (size and sha256); ``settings`` (when given) must be the ones it was made with."""
    manifest = out_dir / MANIFEST
    if not manifest.is_file():
        raise DataError(f"{manifest}: missing; the generation did not finish (run it again)")
    data = manifest.read_bytes()
    check_sealed(manifest, hashlib.sha256(data).hexdigest())
    try:
        payload = json.loads(data)
        parts = payload["parts"]
        if payload.get("kind") != KIND or payload.get("format_version") != FORMAT_VERSION:
            raise KeyError("kind")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise DataError(f"{manifest}: not a manifest of teacher generations ({error})") from None
    if settings is not None and payload.get("settings") != json.loads(json.dumps(settings)):
        recorded = payload.get("settings") or {}
        changed = sorted(k for k in recorded.keys() | settings.keys()
                         if recorded.get(k) != settings.get(k))  # fmt: skip
        raise DataError(
            f"{out_dir}: holds generations made with other settings ({', '.join(changed)}); "
            "delete the folder to generate them again"
        )
    records: list[dict] = []
    for part in parts:
        path = out_dir / part["file"]
        redo = f"delete it and {manifest.name}, then run again to generate its part anew"
        if not path.is_file():
            raise DataError(f"{path}: missing (listed in {manifest}); {redo}")
        size = path.stat().st_size
        if size != part["bytes"]:
            raise DataError(
                f"{path}: {size} bytes, the manifest says {part['bytes']} (truncated or "
                f"altered); {redo}"
            )
        if sha256_of(path) != part["sha256"]:
            raise DataError(
                f"{path}: sha256 differs from the manifest (altered or corrupt); {redo}"
            )
        part_records = read_json_lines(path)
        if len(part_records) != part["records"]:
            raise DataError(
                f"{path}: {len(part_records)} records, the manifest says {part['records']}"
            )
        records += part_records
    return records


def _check_prompts(path: Path, records: list[dict], prompts: list[str], out_dir: Path) -> None:
    if [record.get("prompt") for record in records] != prompts:
        raise DataError(f"{path}: holds other prompts; delete {out_dir} to regenerate")
