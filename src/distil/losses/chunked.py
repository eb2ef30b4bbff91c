"""One chunking wrapper for every row-wise loss, so large vocabularies fit in memory.

A distribution loss over ``(B·T, V)`` logits naively keeps several ``(B·T, V)`` fp32
intermediates alive for backward (softmaxes, logs, products). :func:`rowwise` instead runs
the loss over blocks of rows; for each block it computes the per-row values *and* their
gradient with respect to the inputs right away, keeps only that gradient (one ``(B·T, V)``
buffer in all), and frees the block's intermediates. Backward then scales the stored
gradient by the upstream per-row gradient. Any per-row loss plugs in unchanged.

Small inputs (and inputs that need no gradient) take the plain autograd path, which also
supports double backward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

#: Inputs with at most this many logits take the plain autograd path.
DIRECT_MAX_ELEMENTS = 1 << 22
#: Logits per block on the chunked path (4 MiB of fp32 per block).
CHUNK_ELEMENTS = 1 << 20

RowFunction = Callable[..., Tensor]


def rowwise(row_fn: RowFunction, inputs: Sequence[Tensor]) -> Tensor:
    """Per-row values ``(M,)`` of ``row_fn(*inputs)`` where every input has ``M`` rows.

    ``row_fn`` must treat rows independently (row ``r`` of the output depends only on row
    ``r`` of each input). Floating inputs that require grad receive gradients.
    """
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    rows, width = inputs[0].shape[0], inputs[0].shape[-1]
    if not needs_grad or rows * width <= DIRECT_MAX_ELEMENTS:
        return row_fn(*inputs)
    block = max(1, CHUNK_ELEMENTS // max(1, width))
    return _ChunkedRows.apply(row_fn, block, *inputs)


class _ChunkedRows(torch.autograd.Function):
    """Forward computes values and input gradients block by block; backward rescales them."""

    @staticmethod
    def forward(ctx, row_fn: RowFunction, block: int, *inputs: Tensor) -> Tensor:
        differentiable = [t.requires_grad and t.is_floating_point() for t in inputs]
        grads = [
            torch.zeros(t.shape, dtype=torch.float32, device=t.device) if d else None
            for t, d in zip(inputs, differentiable, strict=True)
        ]
        values = []
        for start in range(0, inputs[0].shape[0], block):
            pieces = [t[start : start + block].detach() for t in inputs]
            for piece, d in zip(pieces, differentiable, strict=True):
                piece.requires_grad_(d)
            with torch.enable_grad():
                per_row = row_fn(*pieces)
                wrt = [p for p, d in zip(pieces, differentiable, strict=True) if d]
                block_grads = torch.autograd.grad(per_row.sum(), wrt, allow_unused=True)
            block_grads = iter(block_grads)
            for grad, d in zip(grads, differentiable, strict=True):
                if d:
                    piece_grad = next(block_grads)
                    if piece_grad is not None:
                        grad[start : start + block] = piece_grad
            values.append(per_row.detach())
        ctx.save_for_backward(*[g for g in grads if g is not None])
        ctx.differentiable = differentiable
        ctx.dtypes = [t.dtype for t in inputs]
        return torch.cat(values)

    @staticmethod
    def backward(ctx, grad_per_row: Tensor):
        saved = iter(ctx.saved_tensors)
        results: list[Tensor | None] = [None, None]  # row_fn, block
        for d, dtype in zip(ctx.differentiable, ctx.dtypes, strict=True):
            if not d:
                results.append(None)
                continue
            grad = next(saved)
            scale = grad_per_row.reshape(-1, *([1] * (grad.dim() - 1)))
            results.append((grad * scale).to(dtype))
        return tuple(results)
