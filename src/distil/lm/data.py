"""Load an LM recipe's text into train/val/test token blocks.

Documents — not blocks — are split, so no validation text was seen in training; Brown is
split within each genre so every split covers every domain. The tokenizer named by the
recipe tokenizes everything; its fingerprint travels with the splits for the vocabulary and
cache checks.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distil.data.text import TokenBlocks, chat_blocks, pack_documents
from distil.errors import DataError
from distil.jsonl import json_lines
from distil.lm.config import LMDataConfig
from distil.lm.resolve import resolve_tokenizer
from distil.models.tokenizer import vocab_fingerprint

log = logging.getLogger("distil")


@dataclass
class LMSplits:
    """Token blocks per split, the tokenizer that made them, and its fingerprint.

    ``train`` is the student's training split (``data.train_blocks`` of it, when set);
    ``teacher_train`` the whole training split, which a teacher pretrained here learns from —
    a teacher is trained once on all the text there is, a student is often distilled with less.
    """

    train: TokenBlocks
    val: TokenBlocks
    test: TokenBlocks
    tokenizer: Any
    fingerprint: str
    config: LMDataConfig
    teacher_train: TokenBlocks

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def domain_names(self) -> list[str]:
        return self.train.domain_names


def load_lm_data(config: LMDataConfig) -> LMSplits:
    """Tokenize, block and split the recipe's corpus."""
    tokenizer = resolve_tokenizer(config.tokenizer)
    if config.corpus == "brown":
        from distil.data.brown import load_brown

        documents = load_brown(config.genres, config.limit_documents)
        records = [{"text": d.text, "domain": d.genre} for d in documents]
    else:
        records = read_jsonl(Path(config.path or ""))[: config.limit_documents]
    parts = split_records(records, config.val_fraction, config.test_fraction, config.split_seed)
    if any(_is_chat(r) for r in records):
        conversations = {name: [_conversation(r) for r in rows] for name, rows in parts.items()}
        blocks = {
            name: chat_blocks(
                rows, tokenizer, block_size=config.block_size, source=str(config.path)
            )
            for name, rows in conversations.items()
            if rows
        }
    else:
        names = sorted({str(r.get("domain", "text")) for r in records})
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        blocks = {}
        for name, rows in parts.items():
            if not rows:
                continue
            ids = tokenizer([r["text"] for r in rows], add_special_tokens=False)["input_ids"]
            domains = [names.index(str(r.get("domain", "text"))) for r in rows]
            blocks[name] = pack_documents(
                ids, domains, names, block_size=config.block_size, eos_id=eos
            )
    for name in ("train", "val", "test"):
        if name not in blocks:
            raise DataError(
                f"data: the {name} split is empty; use more documents or larger "
                "val_fraction/test_fraction"
            )
    whole_train = blocks["train"]
    generator = torch.Generator().manual_seed(config.split_seed)
    limits = {"train": config.train_blocks, "val": config.eval_blocks, "test": config.eval_blocks}
    for name, limit in limits.items():
        if limit is not None and limit < len(blocks[name]):
            rows = torch.randperm(len(blocks[name]), generator=generator)[:limit].sort().values
            blocks[name] = blocks[name].subset(rows)
    return LMSplits(
        blocks["train"], blocks["val"], blocks["test"], tokenizer,
        vocab_fingerprint(tokenizer), config, whole_train,
    )  # fmt: skip


def split_records(
    records: list[dict], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[dict]]:
    """Documents split per domain (seeded): each split gets its share of every domain."""
    by_domain: dict[str, list[dict]] = {}
    for record in records:
        by_domain.setdefault(str(record.get("domain", "text")), []).append(record)
    parts: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    rng = random.Random(seed)
    for domain in sorted(by_domain):
        rows = list(by_domain[domain])
        rng.shuffle(rows)
        n_val = round(val_fraction * len(rows)) if val_fraction else 0
        n_test = round(test_fraction * len(rows)) if test_fraction else 0
        if len(rows) >= 3:  # every domain in every split when fractions are asked for
            n_val = max(n_val, 1 if val_fraction else 0)
            n_test = max(n_test, 1 if test_fraction else 0)
        parts["val"] += rows[:n_val]
        parts["test"] += rows[n_val : n_val + n_test]
        parts["train"] += rows[n_val + n_test :]
    return parts


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL corpus; a malformed line is an error naming file and line.

    A ``text`` that is empty or only whitespace is skipped (one warning counts them): it
    adds nothing but an end-of-text token, and a corpus exported from a table often has a
    few. A chat record must be well formed (``messages``: a list of ``{role, content}``
    strings; or ``prompt`` and ``response`` strings) — it is refused here, naming the line,
    rather than as a KeyError when the chat template renders it.
    """
    if not path.is_file():
        raise DataError(f"data.path: {path} does not exist")
    records, skipped = [], []
    for number, record in json_lines(path):
        where = f"{path}:{number}"
        if _is_chat(record):
            _check_chat(where, record)
        elif not isinstance(record.get("text"), str):
            raise DataError(
                f"{where}: expected an object with 'text' (a string), 'messages', or "
                "'prompt' and 'response'"
            )
        elif not record["text"].strip():
            skipped.append(where)
            continue
        records.append(record)
    if skipped:
        log.warning(
            "data.path: skipped %d record(s) whose text is empty or whitespace (first: %s)",
            len(skipped), skipped[0],
        )  # fmt: skip
    if not records:
        raise DataError(f"{path}: no records" + (" with text" if skipped else ""))
    return records


def _check_chat(where: str, record: dict) -> None:
    if "messages" not in record:
        for key in ("prompt", "response"):
            if not isinstance(record[key], str):
                raise DataError(
                    f"{where}: {key!r} must be a string, got {type(record[key]).__name__}"
                )
        return
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError(
            f"{where}: 'messages' must be a non-empty list of {{role, content}} objects"
        )
    for position, message in enumerate(messages):
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise DataError(
                f"{where}: messages[{position}] must be an object with string 'role' and "
                f"'content', got {str(message)[:60]}"
            )


def _is_chat(record: dict) -> bool:
    return "messages" in record or ("prompt" in record and "response" in record)


def _conversation(record: dict) -> list[dict[str, str]]:
    if "messages" in record:
        return record["messages"]
    return [
        {"role": "user", "content": record["prompt"]},
        {"role": "assistant", "content": record["response"]},
    ]
