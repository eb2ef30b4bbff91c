"""Wide ResNets ``wrn_<depth>_<widen>``, the other teacher/student family of the KD literature.

Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016): a 3×3 stem of 16 channels,
then three stages of ``(depth - 4) / 6`` pre-activation blocks with widths 16k, 32k, 64k for
widen factor k, then BatchNorm → ReLU → global average pool → linear. Dropout, when set,
sits between the two convolutions of each block, as in the paper. Adaptive pooling lets the
nets take any height and width. CIFAR-style post-activation ResNets live in ``resnet.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from distil.models.init import init_residual_net
from distil.models.registry import MODELS, check_dropout, require_input_rank

# name → (depth, widen factor).
WRN_CONFIGS: dict[str, tuple[int, int]] = {
    "wrn_16_1": (16, 1),
    "wrn_16_2": (16, 2),
    "wrn_40_1": (40, 1),
    "wrn_40_2": (40, 2),
}


class PreActBlock(nn.Module):
    """BN → ReLU → 3×3 conv → BN → ReLU → dropout → 3×3 conv, plus a shortcut.

    When the block changes width or resolution, the 1×1 projection shortcut reads the
    pre-activated input, so BatchNorm and ReLU are applied once for both paths.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.projection: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(batch, in_channels, H, W)`` → ``(batch, out_channels, H / stride, W / stride)``."""
        activated = self.relu(self.bn1(inputs))
        residual = self.conv1(activated)
        residual = self.conv2(self.dropout(self.relu(self.bn2(residual))))
        shortcut = inputs if self.projection is None else self.projection(activated)
        return residual + shortcut


class WideResNet(nn.Module):
    """Stem → three stages of pre-activation blocks → BN → ReLU → global pool → linear."""

    def __init__(
        self, depth: int, widen: int, in_channels: int, num_classes: int, dropout: float
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"Wide ResNet depth must be 6n + 4, got {depth}")
        blocks_per_stage = (depth - 4) // 6
        stem_width = 16
        self.stem = nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False)
        stages = []
        width = stem_width
        for stage_index, stage_width in enumerate((16 * widen, 32 * widen, 64 * widen)):
            stride = 1 if stage_index == 0 else 2
            blocks = []
            for block_index in range(blocks_per_stage):
                block_stride = stride if block_index == 0 else 1
                blocks.append(PreActBlock(width, stage_width, block_stride, dropout))
                width = stage_width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        # Pre-activation blocks end on a conv, so the last BN → ReLU comes after the stages.
        self.final_activation = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)
        init_residual_net(self, zero_linear_bias=True)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H, W)`` → logits ``(batch, num_classes)``."""
        features = self.final_activation(self.stages(self.stem(inputs)))  # (batch, 64k, H/4, W/4)
        return self.classifier(torch.flatten(self.pool(features), 1))


def _wrn_factory(name: str, depth: int, widen: int) -> Callable[..., WideResNet]:
    """A registered factory for one named configuration; its one option is ``dropout``."""

    def build(
        *, input_shape: tuple[int, ...], num_classes: int, dropout: float = 0.0
    ) -> WideResNet:
        require_input_rank(name, input_shape, {3: "(channels, height, width)"})
        check_dropout(name, dropout)
        return WideResNet(depth, widen, input_shape[0], num_classes, dropout)

    build.__name__ = name
    build.__doc__ = f"{name}: Wide ResNet, depth {depth}, widen factor {widen}; 2-D inputs only."
    return build


for _name, (_depth, _widen) in WRN_CONFIGS.items():
    MODELS.register(_name)(_wrn_factory(_name, _depth, _widen))
