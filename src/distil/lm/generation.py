"""Teacher-written training text: continuations of prompts, written atomically, resumable.

Records go to ``part-NNNNN.jsonl`` files of ``part_size`` prompts each; a part is written to
a temporary name and renamed when complete, so a killed run leaves only whole parts and a
restart continues with the first missing one. Each record is ``{"id", "prompt",
"response"}`` in text, so a student with another tokenizer can learn from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from distil.errors import DataError
from distil.jsonl import read_json_lines
from distil.models.language_model import LanguageModel


def generate_continuations(
    model: LanguageModel,
    tokenizer,
    prompts: list[str],
    out_dir: Path,
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    part_size: int = 64,
) -> list[dict]:
    """The model's continuation of every prompt (greedy by default), in prompt order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    tokenizer.padding_side = "left"  # generation appends on the right of every row
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    for part, start in enumerate(range(0, len(prompts), part_size)):
        path = out_dir / f"part-{part:05d}.jsonl"
        chunk = prompts[start : start + part_size]
        if path.is_file():
            done = read_json_lines(path)
            if [r["prompt"] for r in done] != chunk:
                raise DataError(f"{path}: holds other prompts; delete {out_dir} to regenerate")
            records += done
            continue
        torch.manual_seed(seed + part)
        part_records = []
        for offset in range(0, len(chunk), batch_size):
            texts = chunk[offset : offset + batch_size]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            device = model.head.device
            options = {
                "do_sample": do_sample,
                "max_new_tokens": max_new_tokens,
                "pad_token_id": pad_id,
            }
            if do_sample:
                options |= {"temperature": temperature, "top_k": 0}
            if model.head.shape[0] > model.vocab_size:
                options["suppress_tokens"] = list(range(model.vocab_size, model.head.shape[0]))
            sequences = model.generate(
                encoded["input_ids"].to(device), encoded["attention_mask"].to(device), **options
            )
            new = sequences[:, encoded["input_ids"].shape[1] :]
            for number, (text, ids) in enumerate(zip(texts, new, strict=True)):
                response = tokenizer.decode(ids, skip_special_tokens=True)
                part_records.append(
                    {"id": start + offset + number, "prompt": text, "response": response}
                )
        write_part(path, part_records)
        records += part_records
    return records


def write_part(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
