"""What a model or a teacher says about a batch, in one small container.

Students and teachers both produce :class:`ModelOutputs`; methods read from it.
``features`` holds named intermediate outputs for feature-based methods.

A language-model student leaves its logits unmaterialised: it gives its final hidden states
and its LM head instead (``hidden``, ``head``), so a fused loss can compute the logits chunk by
chunk and never hold the whole ``(tokens, vocab)`` matrix. A cached LM teacher's logits are a
sparse :class:`~distil.losses.sparse.TopK`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from distil.losses.sparse import TopK


@dataclass
class ModelOutputs:
    """Logits ``(batch, classes)`` or ``(batch, seq, vocab)`` (dense, or a sparse top-k from a
    cache), or — for an LM student — final ``hidden`` states ``(batch, seq, H)`` with the
    ``head`` that maps them to the first ``vocab_size`` logits; optional named features."""

    logits: Tensor | TopK | None
    features: dict[str, Tensor] = field(default_factory=dict)
    hidden: Tensor | None = None
    head: Tensor | None = None
    vocab_size: int | None = None

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> ModelOutputs:
        """The same outputs moved to ``device``, floating tensors cast to ``dtype``."""
        logits: Any = self.logits
        if isinstance(logits, Tensor):
            logits = logits.to(device=device, dtype=dtype)
        elif logits is not None:
            logits = logits.to(device)
        return ModelOutputs(
            logits=logits,
            features={k: v.to(device=device, dtype=dtype) for k, v in self.features.items()},
            hidden=self.hidden,
            head=self.head,
            vocab_size=self.vocab_size,
        )


def call_model(model: nn.Module, inputs: Tensor | dict[str, Tensor]) -> Tensor:
    """Run a model on a batch's ``inputs`` (a tensor, or a dict for tokenized text)."""
    return model(inputs)


def move_batch(batch: dict, device: torch.device, float_dtype: torch.dtype | None = None) -> dict:
    """Move every tensor of a (possibly nested) batch dict to ``device``.

    Floating tensors are cast to ``float_dtype`` when given (a teacher in bf16, say); integer
    tensors (labels, token ids, indices) keep their dtype.
    """

    def move(value):
        if isinstance(value, Tensor):
            if float_dtype is not None and value.is_floating_point():
                return value.to(device=device, dtype=float_dtype)
            return value.to(device)
        if isinstance(value, dict):
            return {key: move(item) for key, item in value.items()}
        return value

    return move(batch)
