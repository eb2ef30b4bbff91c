"""``mlp``: a multilayer perceptron over the flattened input.

The smallest student in the zoo, and the only model that takes any input shape: digits
``(1, 8, 8)``, MNIST-1D signals ``(1, 40)`` and plain feature vectors ``(F,)`` alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from distil.errors import ConfigError
from distil.models.registry import MODELS, check_dropout

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Flatten → (Linear → activation → Dropout) per hidden layer → Linear to logits."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int],
        dropout: float,
        activation: type[nn.Module],
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for hidden_width in hidden:
            layers += [nn.Linear(width, hidden_width), activation(), nn.Dropout(dropout)]
            width = hidden_width
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(batch, *input_shape)`` → logits ``(batch, num_classes)``."""
        return self.layers(inputs)


@MODELS.register("mlp")
def mlp(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: Sequence[int] = (256, 256),
    dropout: float = 0.0,
    activation: str = "relu",
) -> MLP:
    """An MLP on any input shape with one hidden layer per entry of ``hidden``.

    ``hidden=[]`` gives plain multinomial logistic regression.
    """
    hidden = list(hidden)
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"model 'mlp': unknown activation {activation!r}; "
            f"valid activations: {', '.join(ACTIVATIONS)}"
        )
    if any(width < 1 for width in hidden):
        raise ConfigError(f"model 'mlp': hidden widths must be positive, got {hidden}")
    check_dropout("mlp", dropout)
    return MLP(math.prod(input_shape), num_classes, hidden, dropout, ACTIVATIONS[activation])
