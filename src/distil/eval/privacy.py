"""Canary exposure: how much of a secret in the training text a language model gives away.

The measure of Carlini et al. (2019, "The Secret Sharer"): a *canary* — a sentence with a
random secret, e.g. ``"my pin is 4819"`` — is put into the private training text some number
of times. Afterwards every candidate secret of the same format (all ``10^d`` digit strings)
is scored by the model's log-likelihood of the whole sentence, and

    exposure = log2 |candidates| − log2 rank(secret)

where rank 1 is the most likely candidate. A model that never saw the canary ranks it
anywhere (log2 e ≈ 1.4 bits on average for a uniformly random rank); one that memorised it
ranks it first (exposure = log2 of the candidate count, 13.3 bits for four digits). The rank is *counted* — 1 + the number of
candidates strictly more likely than the secret — not found by sorting (no order among
equals to depend on): a tie counts in the secret's favour, so exposure errs high, the
conservative side for a privacy claim.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.errors import DataError

__all__ = ["Canary", "exposure", "make_canaries", "rank_of", "sequence_log_likelihoods"]


@dataclass(frozen=True)
class Canary:
    """A sentence ``prefix + secret`` whose secret is one of ``10^digits`` digit strings."""

    prefix: str
    secret: str

    @property
    def digits(self) -> int:
        return len(self.secret)

    @property
    def text(self) -> str:
        return self.prefix + self.secret

    def candidates(self) -> list[str]:
        """Every sentence of the canary's format, in numeric order of the secret."""
        return [f"{self.prefix}{value:0{self.digits}d}" for value in range(10**self.digits)]

    @property
    def secret_index(self) -> int:
        return int(self.secret)


def make_canaries(prefixes: Sequence[str], *, digits: int, seed: int) -> list[Canary]:
    """One canary per prefix, with distinct random secrets of ``digits`` digits (seeded).

    Prefixes should hold no digits of their own, or a digit-flagging detector (Swing's
    default) would treat the canary's name as part of its secret."""
    if not 1 <= len(prefixes) <= 10**digits:
        raise DataError(
            f"{len(prefixes)} canaries do not fit {10**digits} secrets of {digits} digits"
        )
    rng = random.Random(seed)
    secrets = rng.sample(range(10**digits), len(prefixes))
    return [Canary(prefix, f"{s:0{digits}d}") for prefix, s in zip(prefixes, secrets, strict=True)]


def rank_of(scores: Tensor, index: int) -> int:
    """1 + how many candidates score strictly higher than candidate ``index`` (counted)."""
    if scores.dim() != 1 or not 0 <= index < scores.numel():
        raise DataError(f"rank_of needs 1-D scores and an index in range, got {scores.shape}")
    return 1 + int((scores > scores[index]).sum())


def exposure(scores: Tensor, index: int) -> float:
    """``log2 N − log2 rank`` of candidate ``index`` among ``N`` log-likelihood ``scores``."""
    return math.log2(scores.numel()) - math.log2(rank_of(scores, index))


@torch.no_grad()
def sequence_log_likelihoods(
    model: nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
) -> Tensor:
    """log p(text) − log p(shared prefix) under a causal LM, for each text.

    The candidates of a canary share their first tokens; the probability of those is the
    same for every candidate, so it is left out (ranks do not change) and the LM head runs
    only where the texts differ — most of the cost of scoring ``10^d`` sentences. Texts of
    one format may tokenize to different lengths; padding is masked.
    ``model`` is a :class:`~distil.models.language_model.LanguageModel`.
    """
    model.eval()
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    if any(len(ids) < 2 for ids in encoded):
        raise DataError("every text to score needs at least two tokens")
    shared = _shared_prefix_length(encoded)
    start = max(1, shared)  # the first token scored: the first one that can differ
    head = model.head[: model.vocab_size]
    bias = getattr(model.hf.get_output_embeddings(), "bias", None)
    scores = torch.empty(len(texts), dtype=torch.float64)
    for first in range(0, len(encoded), batch_size):
        chunk = encoded[first : first + batch_size]
        width = max(len(ids) for ids in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for row, tokens in enumerate(chunk):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        ids, mask = ids.to(device), mask.to(device)
        hidden = model.hidden({"input_ids": ids, "attention_mask": mask})[:, start - 1 : -1]
        logits = hidden @ head.to(hidden.dtype).T
        if bias is not None:
            logits = logits + bias[: model.vocab_size]
        logprobs = F.log_softmax(logits.float(), dim=-1)
        picked = logprobs.gather(-1, ids[:, start:, None]).squeeze(-1) * mask[:, start:]
        scores[first : first + len(chunk)] = picked.sum(-1).double().cpu()
    return scores


def _shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every sequence has in common."""
    shortest = min(len(s) for s in sequences)
    for position in range(shortest):
        token = sequences[0][position]
        if any(s[position] != token for s in sequences):
            return position
    return shortest


def canary_exposure(
    model: nn.Module,
    tokenizer: object,
    canary: Canary,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
) -> float:
    """The exposure of ``canary``'s secret in ``model``, every candidate scored."""
    scores = sequence_log_likelihoods(
        model, tokenizer, canary.candidates(), device=device, batch_size=batch_size
    )
    return exposure(scores, canary.secret_index)
