"""``mobilenet_tiny``: a small MobileNetV2 for 28×28 / 32×32 images, a depthwise-conv student.

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (CVPR 2018),
shrunk: a 3×3 stem that keeps full resolution (small images cannot afford the ImageNet
stride-2 stem), four stages of inverted residual blocks (1×1 expansion → 3×3 depthwise →
linear 1×1 projection, with a shortcut when the shape is kept), a 1×1 conv to a final width,
global average pooling and a linear head. ``width_mult`` scales every width as in the paper.
Plain residual nets live in ``resnet.py`` and ``wrn.py``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from distil.errors import ConfigError
from distil.models.init import init_residual_net
from distil.models.registry import MODELS, check_dropout, require_input_rank

STEM_WIDTH = 16
# One row per stage: (expansion, output channels, blocks, stride of the first block).
# Three stride-2 stages take 32×32 down to 4×4 (and 28×28 to 4×4), enough for small images.
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 2, 2),
    (6, 64, 2, 2),
)
FINAL_WIDTH = 256


def scaled_width(channels: int, width_mult: float, divisor: int = 8) -> int:
    """``channels * width_mult`` rounded to a multiple of ``divisor`` (at least ``divisor``).

    Multiples of 8 keep the convolutions efficient on real hardware, as in the paper; the
    rounding never drops below 90% of the requested width, so small multipliers still shrink
    the net smoothly instead of collapsing whole stages.
    """
    target = channels * width_mult
    rounded = max(divisor, int(target + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * target:
        rounded += divisor
    return rounded


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    activate: bool = True,
) -> nn.Sequential:
    """Conv (no bias: the BatchNorm cancels it) → BatchNorm → ReLU6 unless ``activate`` is off."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
    ]
    if activate:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """``expand`` (1×1) → ``depthwise`` (3×3, per channel) → ``project`` (1×1, linear).

    The projection has no activation: the paper shows a ReLU on the narrow bottleneck
    destroys information. The shortcut is added only when the block keeps resolution and
    width; with expansion 1 there is nothing to expand and ``expand`` is the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand: nn.Module = (
            conv_bn(in_channels, hidden, 1) if expansion != 1 else nn.Identity()
        )
        self.depthwise = conv_bn(hidden, hidden, 3, stride=stride, groups=hidden)
        self.project = conv_bn(hidden, out_channels, 1, activate=False)
        self.use_shortcut = stride == 1 and in_channels == out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(batch, in_channels, H, W)`` → ``(batch, out_channels, ⌈H/stride⌉, ⌈W/stride⌉)``."""
        outputs = self.project(self.depthwise(self.expand(inputs)))
        return inputs + outputs if self.use_shortcut else outputs


class MobileNetV2(nn.Module):
    """Stem → ``stages`` of inverted residual blocks → 1×1 conv → global pool → linear head.

    Natural feature taps, by module path, with widths at ``width_mult = 1``:

    * ``stem`` → ``(batch, 16, H, W)``;
    * ``stages.0`` → ``(batch, 16, H, W)``;
    * ``stages.1`` → ``(batch, 24, ⌈H / 2⌉, ⌈W / 2⌉)``;
    * ``stages.2`` → ``(batch, 32, ⌈H / 4⌉, ⌈W / 4⌉)``;
    * ``stages.3`` → ``(batch, 64, ⌈H / 8⌉, ⌈W / 8⌉)``;
    * ``final_conv`` → ``(batch, 256, ⌈H / 8⌉, ⌈W / 8⌉)``, the last feature map before pooling;
    * ``head`` → ``(batch, num_classes)``, the logits.

    On ``(1, 28, 28)``: 28×28, 28×28, 14×14, 7×7, 4×4 and 4×4 maps respectively.
    """

    def __init__(
        self, in_channels: int, num_classes: int, width_mult: float, dropout: float
    ) -> None:
        super().__init__()
        width = scaled_width(STEM_WIDTH, width_mult)
        self.stem = conv_bn(in_channels, width, 3)
        stages = []
        for expansion, channels, num_blocks, stride in STAGES:
            out_width = scaled_width(channels, width_mult)
            blocks = []
            for block_index in range(num_blocks):
                block_stride = stride if block_index == 0 else 1
                blocks.append(InvertedResidual(width, out_width, block_stride, expansion))
                width = out_width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        # As in the paper, a multiplier below 1 leaves the final width alone: shrinking it
        # too would starve the classifier.
        final_width = scaled_width(FINAL_WIDTH, max(1.0, width_mult))
        self.final_conv = conv_bn(width, final_width, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(final_width, num_classes)
        init_residual_net(self, zero_linear_bias=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H, W)`` → logits ``(batch, num_classes)``."""
        features = self.final_conv(self.stages(self.stem(images)))  # (batch, 256, H/8, W/8)
        return self.head(self.dropout(torch.flatten(self.pool(features), 1)))


@MODELS.register("mobilenet_tiny")
def mobilenet_tiny(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    width_mult: float = 1.0,
    dropout: float = 0.0,
) -> MobileNetV2:
    """A small MobileNetV2 for ``(C, H, W)`` images of any size (best at 28×28 to 32×32).

    ``width_mult`` scales every width (rounded to multiples of 8); ``dropout`` applies to the
    pooled features, before the head.
    """
    require_input_rank("mobilenet_tiny", input_shape, {3: "(channels, height, width)"})
    if isinstance(width_mult, bool) or not (
        isinstance(width_mult, int | float) and math.isfinite(width_mult) and width_mult > 0
    ):
        raise ConfigError(
            f"model 'mobilenet_tiny': width_mult must be a positive number, got {width_mult!r}"
        )
    check_dropout("mobilenet_tiny", dropout)
    return MobileNetV2(input_shape[0], num_classes, float(width_mult), dropout)
