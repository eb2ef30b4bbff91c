"""Feature taps: capture the outputs of named submodules of any ``nn.Module``.

A tap is a forward hook on a submodule found by its path in ``model.named_modules()``
(``layer2.1``, ``blocks.3``, ``features.4``). Feature-based methods name the layers they
need in their config; the trainer taps student and teacher with them. Taps are removable
and hold only the latest output of each layer, so evaluation passes leave nothing behind.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from distil.errors import ConfigError
from distil.registry import closest


def module_names(model: nn.Module) -> list[str]:
    """Paths of every submodule (the names a tap accepts), in definition order."""
    return [name for name, _ in model.named_modules() if name]


def check_layer_names(model: nn.Module, names: Sequence[str], owner: str) -> None:
    """Raise ``ConfigError`` for unknown names, suggesting close ones and listing the valid."""
    available = module_names(model)
    for name in names:
        if name not in available:
            hints = closest(name, available)
            hint = f"did you mean {' or '.join(map(repr, hints))}? " if hints else ""
            shown = ", ".join(available[:40]) + (" …" if len(available) > 40 else "")
            raise ConfigError(
                f"{owner}: no layer {name!r} in the model; {hint}valid layers: {shown}"
            )


class FeatureTaps:
    """Forward hooks that keep the latest output of each named submodule."""

    def __init__(self, model: nn.Module, names: Sequence[str], owner: str = "layer") -> None:
        check_layer_names(model, names, owner)
        modules = dict(model.named_modules())
        self.names = list(names)
        self.latest: dict[str, Tensor] = {}
        self._handles = [
            modules[name].register_forward_hook(self._keeper(name)) for name in self.names
        ]

    def _keeper(self, name: str):
        def keep(_module: nn.Module, _inputs: object, output: object) -> None:
            # Some modules return tuples (attention: output, weights); the first is the feature.
            feature = output[0] if isinstance(output, tuple) else output
            # A copy: an in-place op after the layer (ReLU(inplace=True)) would otherwise
            # change the captured value and break its gradient.
            self.latest[name] = feature.clone()

        return keep

    def pop(self) -> dict[str, Tensor]:
        """The captured outputs of the last forward pass, and forget them."""
        captured, self.latest = self.latest, {}
        missing = [name for name in self.names if name not in captured]
        if missing:
            raise ConfigError(f"layers {missing} did not run in the forward pass; are they used?")
        return captured

    def remove(self) -> None:
        """Detach every hook (the model is as it was before)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.latest = {}

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


@torch.no_grad()
def discover_shapes(
    model: nn.Module, inputs: Tensor | dict, names: Sequence[str]
) -> dict[str, tuple[int, ...]]:
    """Per-sample output shapes of the named layers on a sample batch (batch dim dropped)."""
    was_training = model.training
    model.eval()
    try:
        with FeatureTaps(model, names) as taps:
            model(inputs)
            return {name: tuple(value.shape[1:]) for name, value in taps.pop().items()}
    finally:
        model.train(was_training)
