"""Difference sampling: score text by how much more likely a teacher finds it than a small
reference model does (MiniPLM), and write the refined corpus.

Scores are per-token means over labelled positions, so blocks of different lengths compare
fairly. Both models run in eval mode without gradients, one batch of blocks at a time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.data.datasets import in_order
from distil.data.text import TokenBlocks


@torch.no_grad()
def mean_log_likelihood(model: nn.Module, blocks: TokenBlocks, *, batch_size: int = 16) -> Tensor:
    """Mean log-probability of each block's labels under ``model`` ``(N,)``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    values = []
    for batch in in_order(blocks, batch_size):
        inputs = {k: v.to(device) for k, v in batch["inputs"].items()}
        labels = batch["labels"].to(device)
        logits = model(inputs).float()
        nll = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
        counts = (labels >= 0).sum(-1).clamp_min(1)
        values.append((-nll.sum(-1) / counts).cpu())
    model.train(was_training)
    return torch.cat(values)


def difference_scores(
    teacher: nn.Module, reference: nn.Module, blocks: TokenBlocks, *, batch_size: int = 16
) -> Tensor:
    """log p_teacher − log p_reference per block (per-token means)."""
    return mean_log_likelihood(teacher, blocks, batch_size=batch_size) - mean_log_likelihood(
        reference, blocks, batch_size=batch_size
    )


def write_refined_corpus(path: Path, blocks: TokenBlocks, scores: Tensor, tokenizer) -> None:
    """The kept blocks as JSONL ``{"text", "domain", "score"}``, written atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", encoding="utf-8") as handle:
        for row, score in zip(range(len(blocks)), scores.tolist(), strict=True):
            record = {
                "text": tokenizer.decode(blocks.input_ids[row]),
                "domain": blocks.domain_names[int(blocks.domains[row])],
                "score": score,
            }
            handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
