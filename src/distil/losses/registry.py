"""The loss registry: every distillation loss is a pure function filed under a name.

A registered loss has the signature
``f(student_logits, teacher_logits, *, temperature=1.0, reduction="batchmean", mask=None,
**options) -> Tensor`` so any method can take its divergence by name from a recipe.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from distil.registry import Registry

LossFunction = Callable[..., Tensor]

LOSSES: Registry[LossFunction] = Registry("loss")


def register_loss(name: str) -> Callable[[LossFunction], LossFunction]:
    """Decorator filing a loss function under ``name`` in :data:`LOSSES`."""
    return LOSSES.register(name)


def get(name: str) -> LossFunction:
    """The loss registered as ``name``; unknown names fail with the closest valid ones."""
    return LOSSES.get(name)
