"""The Teacher protocol: what the teacher says about a batch.

A teacher is anything with a ``device``, a ``dtype`` and ``signal(batch) -> ModelOutputs``.
It is frozen: the trainer never updates it and never tracks gradients through it. It may
live on another device or in another dtype than the student; the trainer moves what it says
to the student's device in float32.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from distil.outputs import ModelOutputs

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@runtime_checkable
class Teacher(Protocol):
    """A frozen source of knowledge about batches."""

    device: torch.device
    dtype: torch.dtype

    def signal(self, batch: dict[str, Any]) -> ModelOutputs:
        """The teacher's outputs on ``batch`` (no gradients), on ``self.device``."""
        ...

    def capture(self, layers: list[str]) -> None:
        """Return these intermediate layers' outputs in ``features`` from now on (or refuse
        with a ``ConfigError`` when the teacher cannot)."""
        ...
