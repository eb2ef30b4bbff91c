"""What a model or a teacher says about a batch, in one small container.

Students and teachers both produce :class:`ModelOutputs`; methods read from it. Logits are
always present; ``features`` holds named intermediate outputs for feature-based methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class ModelOutputs:
    """Logits ``(batch, classes)`` (or ``(batch, seq, vocab)``) and optional named features."""

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> ModelOutputs:
        """The same outputs moved to ``device``, floating tensors cast to ``dtype``."""
        return ModelOutputs(
            logits=self.logits.to(device=device, dtype=dtype),
            features={k: v.to(device=device, dtype=dtype) for k, v in self.features.items()},
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
