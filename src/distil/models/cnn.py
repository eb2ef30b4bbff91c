"""``cnn``: a small convolutional net for signals ``(C, L)`` and images ``(C, H, W)``.

One architecture in two dimensionalities: Conv1d layers for MNIST-1D-style signals, Conv2d
layers for digits and MNIST. Deep residual nets live in ``resnet.py`` and ``wrn.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from distil.errors import ConfigError
from distil.models.registry import MODELS, check_dropout, require_input_rank

# Per spatial rank: the convolution, batch norm, max pool and adaptive average pool to use.
_LAYERS_BY_RANK: dict[int, tuple[type[nn.Module], ...]] = {
    1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d),
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d),
}


class ConvNet(nn.Module):
    """(conv → BatchNorm → ReLU → 2× max pool) per entry of ``channels``, then an MLP head."""

    def __init__(
        self,
        in_channels: int,
        spatial_rank: int,
        num_classes: int,
        channels: Sequence[int],
        kernel_size: int,
        hidden: int,
        dropout: float,
        pooled_size: int,
    ) -> None:
        super().__init__()
        conv, batch_norm, max_pool, adaptive_pool = _LAYERS_BY_RANK[spatial_rank]
        blocks: list[nn.Module] = []
        width = in_channels
        for out_width in channels:
            blocks += [
                # No bias: the batch norm right after would cancel it.
                conv(width, out_width, kernel_size, padding="same", bias=False),
                batch_norm(out_width),
                nn.ReLU(inplace=True),
                # ceil_mode keeps a size-1 map at size 1, so small inputs survive many blocks.
                max_pool(2, ceil_mode=True),
            ]
            width = out_width
        self.features = nn.Sequential(*blocks)
        # Any spatial size → a small fixed grid; keeping a little layout (rather than one
        # global average per channel) is worth several points of accuracy on MNIST.
        self.pool = adaptive_pool(pooled_size)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width * pooled_size**spatial_rank, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(batch, C, L)`` or ``(batch, C, H, W)`` → logits ``(batch, num_classes)``."""
        return self.head(self.pool(self.features(inputs)))


@MODELS.register("cnn")
def cnn(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    hidden: int = 128,
    dropout: float = 0.0,
    pooled_size: int = 2,
) -> ConvNet:
    """A small conv net: Conv1d for ``(C, L)`` inputs, Conv2d for ``(C, H, W)`` inputs.

    ``dropout`` applies in the head, before the last linear layer; the feature maps are
    average-pooled to ``pooled_size`` per spatial dimension before the head.
    """
    require_input_rank(
        "cnn", input_shape, {2: "(channels, length)", 3: "(channels, height, width)"}
    )
    channels = list(channels)
    if not channels or any(width < 1 for width in channels):
        raise ConfigError(
            f"model 'cnn': channels must be a non-empty list of positive widths, got {channels}"
        )
    if kernel_size < 1 or hidden < 1 or pooled_size < 1:
        raise ConfigError(
            f"model 'cnn': kernel_size, hidden and pooled_size must be positive, got "
            f"{kernel_size}, {hidden} and {pooled_size}"
        )
    check_dropout("cnn", dropout)
    return ConvNet(
        in_channels=input_shape[0],
        spatial_rank=len(input_shape) - 1,
        num_classes=num_classes,
        channels=channels,
        kernel_size=kernel_size,
        hidden=hidden,
        dropout=dropout,
        pooled_size=pooled_size,
    )
