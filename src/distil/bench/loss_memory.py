"""Peak memory of one loss's forward + backward on ``(B·T, V)`` logits, in a fresh process.

Run as ``python -m distil.bench.loss_memory LOSS MODE ROWS VOCAB``; prints one JSON object.
The process's current resident set is read just before the loss and its peak resident set
just after, so the difference is the most the loss ever held at once beyond what was live
when it started (inputs, library); it is reported as a multiple of one ``(rows × vocab)``
float32 buffer. (Reading the peak before would hide the loss behind any earlier transient
peak, such as the random-number generation of the inputs.) Linux only. ``MODE`` is ``chunked`` (the library's default) or
``naive`` (chunking disabled), so the two are measured the same way.
"""

from __future__ import annotations

import json
import resource
import sys

import torch

from distil import losses
from distil.losses import chunked


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """The process's resident set size now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def measure(name: str, mode: str, rows: int, vocab: int) -> dict:
    """Peak extra memory of ``name``'s forward and backward, and one buffer's size."""
    torch.set_num_threads(1)
    if mode == "naive":
        chunked.DIRECT_MAX_ELEMENTS = 1 << 62
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(rows, vocab, generator=generator).requires_grad_()
    teacher = torch.randn(rows, vocab, generator=generator)
    labels = torch.randint(0, vocab, (rows,), generator=generator)
    extra = {"labels": labels} if "labels" in losses.options_of(name) else {}
    # warm up the allocator and kernels on a small input so their one-off costs are excluded
    small = student[:2].detach().clone().requires_grad_()
    losses.get(name)(small, teacher[:2], **({"labels": labels[:2]} if extra else {})).backward()
    before = current_rss_bytes()
    losses.get(name)(student, teacher, **extra).backward()
    after = peak_rss_bytes()
    buffer = rows * vocab * 4
    return {"loss": name, "mode": mode, "rows": rows, "vocab": vocab, "buffer_bytes": buffer,
            "peak_extra_bytes": after - before, "peak_buffers": (after - before) / buffer}  # fmt: skip


if __name__ == "__main__":
    loss_name, loss_mode, row_count, vocab_size = sys.argv[1:5]
    print(json.dumps(measure(loss_name, loss_mode, int(row_count), int(vocab_size))))
