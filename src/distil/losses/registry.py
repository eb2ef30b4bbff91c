"""The loss registry: every distillation loss is a pure function filed under a name.

A registered loss has the signature
``f(student_logits, teacher_logits, *, temperature=1.0, reduction="batchmean", mask=None,
**options) -> Tensor`` so any method can take its divergence by name from a recipe.

Each loss has a kind: a ``divergence`` is ≥ 0 and zero when student and teacher agree (the
property tests hold every divergence to that); an ``objective`` is minimised but need not be
zero at agreement (the Plackett–Luce ranking likelihood, say).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import Tensor

from distil.registry import Registry

LossFunction = Callable[..., Tensor]

LOSSES: Registry[LossFunction] = Registry("loss")


LOSS_KINDS = ("divergence", "objective")


def register_loss(name: str, kind: str = "divergence") -> Callable[[LossFunction], LossFunction]:
    """Decorator filing a loss function under ``name`` in :data:`LOSSES` with its ``kind``."""
    if kind not in LOSS_KINDS:
        raise ValueError(f"loss kind {kind!r} is not one of {LOSS_KINDS}")

    def decorate(function: LossFunction) -> LossFunction:
        function.loss_kind = kind  # type: ignore[attr-defined]
        return LOSSES.register(name)(function)

    return decorate


def kind_of(name: str) -> str:
    """``divergence`` or ``objective``."""
    return LOSSES.get(name).loss_kind  # type: ignore[attr-defined]


def options_of(name: str) -> dict[str, object]:
    """The loss's own keyword options and their defaults (beyond the shared convention)."""
    shared = {"temperature", "reduction", "mask", "tail"}
    signature = inspect.signature(LOSSES.get(name))
    return {
        parameter.name: parameter.default
        for parameter in signature.parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.name not in shared
    }


def accepts(name: str, option: str) -> bool:
    """Whether loss ``name`` takes keyword ``option`` (``tail`` only matters for sparse
    teachers and only distribution losses have it)."""
    return option in inspect.signature(LOSSES.get(name)).parameters


def get(name: str) -> LossFunction:
    """The loss registered as ``name``; unknown names fail with the closest valid ones."""
    return LOSSES.get(name)
