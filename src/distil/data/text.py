"""Token datasets for language-model distillation: packed pre-training text and chat data.

Every sample is one fixed-length block with its next-token ``labels`` already aligned to the
positions (``labels[t]`` is the token that follows position ``t``; −100 where nothing is
learnt), so the student's, the teacher's and a cache's per-position outputs line up without
any shifting downstream. Samples also carry their ``index`` (a cached teacher looks it up)
and their ``domain`` (Brown's genre; domain-aware methods reweight by it).

* **Packed text** — documents of one domain are concatenated (an end-of-text token between
  them) and cut into windows of ``block_size + 1`` tokens; blocks never mix domains.
* **Chat** — each conversation is rendered with the tokenizer's chat template; the prompt
  (everything before the last assistant turn) is masked out of the labels, so the student
  learns only the answer. Short conversations are padded (attention mask 0, labels −100).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from distil.errors import DataError

IGNORE_INDEX = -100


@dataclass
class TokenBlocks(Dataset):
    """Fixed-length token blocks with aligned next-token labels and a domain per block."""

    input_ids: Tensor  # (N, T) int64
    labels: Tensor  # (N, T) int64, IGNORE_INDEX where nothing is learnt
    attention_mask: Tensor  # (N, T) int64
    domains: Tensor  # (N,) int64, index into domain_names
    domain_names: list[str]

    def __post_init__(self) -> None:
        shape = tuple(self.input_ids.shape)
        for name in ("labels", "attention_mask"):
            if tuple(getattr(self, name).shape) != shape:
                raise DataError(
                    f"token blocks: {name} {tuple(getattr(self, name).shape)} != {shape}"
                )

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, index: int) -> dict:
        return {
            "inputs": {
                "input_ids": self.input_ids[index],
                "attention_mask": self.attention_mask[index],
            },
            "labels": self.labels[index],
            "index": index,
            "domain": self.domains[index],
        }

    @property
    def block_size(self) -> int:
        return self.input_ids.shape[1]

    def num_tokens(self) -> int:
        """Positions that carry a label (what a loss or a cache counts)."""
        return int((self.labels != IGNORE_INDEX).sum())

    def batch(self, rows: Tensor) -> dict:
        """These blocks as one collated batch (what ``default_collate`` of the items gives,
        without building the items one by one)."""
        return {
            "inputs": {
                "input_ids": self.input_ids[rows],
                "attention_mask": self.attention_mask[rows],
            },
            "labels": self.labels[rows],
            "index": rows.clone(),
            "domain": self.domains[rows],
        }

    def subset(self, rows: Tensor | Sequence[int]) -> TokenBlocks:
        """These blocks only (re-indexed from 0)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        return TokenBlocks(
            self.input_ids[rows],
            self.labels[rows],
            self.attention_mask[rows],
            self.domains[rows],
            self.domain_names,
        )


def pack_documents(
    token_lists: Sequence[Sequence[int]],
    domains: Sequence[int],
    domain_names: list[str],
    *,
    block_size: int,
    eos_id: int,
) -> TokenBlocks:
    """Concatenate each domain's documents (eos between them) and cut ``block_size + 1``
    windows overlapping by one token: inputs are the first ``block_size``, labels the last.

    The remainder of each domain shorter than a block is dropped (a few tokens per domain).
    """
    if len(token_lists) != len(domains):
        raise DataError(f"{len(token_lists)} documents but {len(domains)} domain labels")
    blocks, block_domains = [], []
    for domain in sorted(set(domains)):
        stream: list[int] = []
        for tokens, doc_domain in zip(token_lists, domains, strict=True):
            if doc_domain == domain:
                stream.extend(tokens)
                stream.append(eos_id)
        ids = torch.tensor(stream, dtype=torch.long)
        count = (len(ids) - 1) // block_size
        if count == 0:
            continue
        windows = ids[: count * block_size + 1].unfold(0, block_size + 1, block_size)
        blocks.append(windows)
        block_domains.append(torch.full((count,), domain, dtype=torch.long))
    if not blocks:
        raise DataError(f"the documents hold fewer than block_size + 1 = {block_size + 1} tokens")
    windows = torch.cat(blocks)
    return TokenBlocks(
        input_ids=windows[:, :-1].contiguous(),
        labels=windows[:, 1:].contiguous(),
        attention_mask=torch.ones_like(windows[:, :-1]),
        domains=torch.cat(block_domains),
        domain_names=list(domain_names),
    )


def chat_blocks(
    conversations: Sequence[list[dict[str, str]]],
    tokenizer,
    *,
    block_size: int,
    source: str = "chat data",
) -> TokenBlocks:
    """One padded block per conversation; labels only on the final assistant answer.

    ``conversations`` are lists of ``{"role", "content"}`` messages ending with an assistant
    turn. Conversations longer than ``block_size`` are truncated (the answer keeps its start).
    """
    sequences = []
    for number, messages in enumerate(conversations):
        if not messages or messages[-1].get("role") != "assistant":
            raise DataError(
                f"{source}: conversation {number} must end with an assistant message, got "
                f"{[m.get('role') for m in messages]}"
            )
        prompt = _template_ids(tokenizer, messages[:-1], add_generation_prompt=True)
        full = _template_ids(tokenizer, messages, add_generation_prompt=False)
        if full[: len(prompt)] != prompt:
            raise DataError(
                f"{source}: the chat template renders the prompt of conversation {number} "
                "differently inside the full conversation; cannot mask the prompt"
            )
        sequences.append((len(prompt), full))
    if not sequences:
        raise DataError(f"{source}: no conversations")
    return masked_blocks(sequences, tokenizer, block_size=block_size, domain="chat")


def masked_blocks(
    sequences: Sequence[tuple[int, list[int]]], tokenizer, *, block_size: int, domain: str
) -> TokenBlocks:
    """One padded block per ``(prompt_length, token ids)``; labels on the tokens after the
    prompt only (position t predicts t + 1); longer sequences are truncated."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows_ids, rows_labels, rows_mask = [], [], []
    for prompt_length, full in sequences:
        inputs = full[:block_size]
        targets = [
            full[t + 1] if t + 1 < len(full) and t + 1 >= prompt_length else IGNORE_INDEX
            for t in range(len(inputs))
        ]
        pad = block_size - len(inputs)
        rows_ids.append(inputs + [pad_id] * pad)
        rows_labels.append(targets + [IGNORE_INDEX] * pad)
        rows_mask.append([1] * len(inputs) + [0] * pad)
    count = len(rows_ids)
    return TokenBlocks(
        input_ids=torch.tensor(rows_ids, dtype=torch.long),
        labels=torch.tensor(rows_labels, dtype=torch.long),
        attention_mask=torch.tensor(rows_mask, dtype=torch.long),
        domains=torch.zeros(count, dtype=torch.long),
        domain_names=[domain],
    )


def _template_ids(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool) -> list:
    if not messages:
        return []
    rendered = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def prompt_response_blocks(
    pairs: Sequence[tuple[str, str]], tokenizer, *, block_size: int
) -> TokenBlocks:
    """One padded block per (prompt, response) text pair; labels on the response only.

    Used for sequence-level KD: the response is the teacher's text, re-tokenized with the
    student's tokenizer, so the two models need not share a vocabulary.
    """
    if not pairs:
        raise DataError("no (prompt, response) pairs")
    sequences = []
    for prompt, response in pairs:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        sequences.append((len(prompt_ids), prompt_ids + response_ids))
    return masked_blocks(sequences, tokenizer, block_size=block_size, domain="generated")
