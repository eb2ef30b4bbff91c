"""The fused LM head + loss against the naive path: peak memory and time of forward + backward.

The loss is what LM distillation from a top-k cache trains on: cross-entropy on the labels
plus forward KL to a sparse :class:`~distil.losses.sparse.TopK` teacher, from final hidden
states ``(tokens, hidden)`` and an LM head ``(vocab, hidden)``.

* ``naive`` is written the way other toolkits write it: the full ``(tokens, vocab)`` logits,
  ``F.cross_entropy`` on them, a log-softmax at the temperature, a gather of the teacher's
  top-k and autograd through all of it (no chunking anywhere).
* ``fused`` is :func:`~distil.losses.fused_lm.fused_lm_loss` with its default chunk size.

Each path runs in its own fresh process (``python -m distil.bench.fused_loss MODE VOCAB HIDDEN
TOKENS K SEED REPEATS`` prints one JSON object), so one path's freed memory or allocator state never
shows in the other's peak. Memory is measured as in :mod:`distil.bench.loss_memory`: the
resident set just before the loss, the peak resident set just after, with glibc's mmap
threshold fixed so freed blocks really leave the process. Inputs are built without any
``(tokens × vocab)`` transient, which would otherwise set the peak. Linux only.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.bench.loss_memory import current_rss_bytes, peak_rss_bytes
from distil.bench.losses import EXACT_RSS
from distil.losses.fused_lm import fused_lm_loss
from distil.losses.sparse import TopK

MODES = ("naive", "fused")
#: Every tenth token is unlabelled (-100), as padding and prompts are in real batches.
IGNORE_EVERY = 10


def naive_loss(hidden: Tensor, weight: Tensor, labels: Tensor, teacher: TopK) -> Tensor:
    """CE + forward KL to the top-k (renormalised on its support) from the full logits."""
    logits = hidden @ weight.T  # (tokens, vocab)
    ce = F.cross_entropy(logits, labels, ignore_index=-100)
    student_logprobs = F.log_softmax(logits, dim=-1)  # (tokens, vocab)
    student_topk = student_logprobs.gather(-1, teacher.indices)
    student_topk = student_topk - student_topk.logsumexp(-1, keepdim=True)
    teacher_logprobs = F.log_softmax(teacher.logprobs, dim=-1)
    per_token = (teacher_logprobs.exp() * (teacher_logprobs - student_topk)).sum(-1)
    valid = labels >= 0
    return ce + (per_token * valid).sum() / valid.sum()


def fused_loss(hidden: Tensor, weight: Tensor, labels: Tensor, teacher: TopK) -> Tensor:
    """The same loss through :func:`fused_lm_loss`."""
    return fused_lm_loss(
        hidden, weight, labels=labels, teacher=teacher, ce_weight=1.0, kd_weight=1.0
    ).total


def make_inputs(
    vocab_size: int, hidden_size: int, tokens: int, k: int, seed: int
) -> tuple[Tensor, Tensor, Tensor, TopK]:
    """Hidden states and head (requiring grad), labels and a top-k teacher, at float32.

    Top-k ids are distinct per token (an offset plus a stride), drawn without a
    ``(tokens × vocab)`` intermediate; the teacher leaves ~20 % of its mass to the tail.
    """
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(tokens, hidden_size, generator=generator).requires_grad_()
    weight = (torch.randn(vocab_size, hidden_size, generator=generator) / math.sqrt(hidden_size)).requires_grad_()  # fmt: skip
    labels = torch.randint(0, vocab_size, (tokens,), generator=generator)
    labels[::IGNORE_EVERY] = -100
    stride = max(1, vocab_size // k)
    offsets = torch.randint(0, vocab_size, (tokens, 1), generator=generator)
    indices = (offsets + torch.arange(k) * stride) % vocab_size
    scores = torch.randn(tokens, k, generator=generator) * 2.0
    logprobs = torch.log_softmax(scores, dim=-1).sort(dim=-1, descending=True).values
    return hidden, weight, labels, TopK(indices=indices, logprobs=logprobs + math.log(0.8))


def measure(
    mode: str, vocab_size: int, hidden_size: int, tokens: int, k: int, seed: int, repeats: int = 1
) -> dict:
    """One path's forward + backward: peak extra memory (bytes) and the fastest of
    ``repeats`` runs in wall-clock and CPU seconds (CPU time suffers less from other
    processes sharing the cores)."""
    loss_of = {"naive": naive_loss, "fused": fused_loss}[mode]
    # warm up kernels and allocator on a small head so their one-off costs are excluded
    small = make_inputs(64, hidden_size, 16, min(k, 8), seed + 1)
    loss_of(*small).backward()
    hidden, weight, labels, teacher = make_inputs(vocab_size, hidden_size, tokens, k, seed)
    before = current_rss_bytes()
    wall, cpu = [], []
    for _ in range(repeats):
        hidden.grad = weight.grad = None
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        loss = loss_of(hidden, weight, labels, teacher)
        loss.backward()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    peak = peak_rss_bytes()
    return {"mode": mode, "vocab_size": vocab_size, "hidden": hidden_size, "tokens": tokens,
            "k": k, "loss": float(loss.detach()), "peak_extra_bytes": peak - before,
            "seconds": min(wall), "cpu_seconds": min(cpu), "threads": torch.get_num_threads(),
            "logits_bytes": tokens * vocab_size * 4}  # fmt: skip


def measure_fused_vs_naive(
    vocab_size: int,
    hidden: int = 2048,
    tokens: int = 8192,
    k: int = 64,
    seed: int = 0,
    repeats: int = 1,
) -> dict:
    """Both paths, each in a fresh process; ``peak_memory_ratio``, ``time_ratio`` (wall
    clock) and ``cpu_time_ratio`` are fused / naive (below 1 is better); ``loss_abs_diff``
    checks that both computed the same loss.
    """
    results = {}
    for mode in MODES:
        probe = subprocess.run(
            [sys.executable, "-m", "distil.bench.fused_loss", mode, str(vocab_size), str(hidden),
             str(tokens), str(k), str(seed), str(repeats)],
            capture_output=True, text=True, check=True, env={**os.environ, **EXACT_RSS},
        )  # fmt: skip
        results[mode] = json.loads(probe.stdout.strip().splitlines()[-1])
    naive, fused = results["naive"], results["fused"]
    return {
        "vocab_size": vocab_size, "hidden": hidden, "tokens": tokens, "k": k, "seed": seed,
        "naive": naive, "fused": fused,
        "peak_memory_ratio": fused["peak_extra_bytes"] / naive["peak_extra_bytes"],
        "time_ratio": fused["seconds"] / naive["seconds"],
        "cpu_time_ratio": fused["cpu_seconds"] / naive["cpu_seconds"],
        "loss_abs_diff": abs(fused["loss"] - naive["loss"]),
    }  # fmt: skip


if __name__ == "__main__":
    run_mode, *sizes = sys.argv[1:8]
    print(json.dumps(measure(run_mode, *(int(size) for size in sizes))))
