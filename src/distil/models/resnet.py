"""CIFAR-style ResNets, the teacher/student family of the KD literature (CRD, mdistiller).

He et al., "Deep Residual Learning for Image Recognition" (2016), section 4.2: a 3×3 stem,
then three stages of ``n`` basic blocks each, with ``depth = 6n + 2``. The plain nets use
stage widths 16/32/64 after a 16-channel stem; the "x4" variants used by CRD (Tian et al.,
2020) use a 32-channel stem and stage widths 64/128/256. The stem keeps full resolution
(no 7×7 conv, no max pool), so the nets suit small images; adaptive average pooling at the
end lets them take any height and width, not only 32×32. Wide ResNets live in ``wrn.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from distil.models.init import init_residual_net
from distil.models.registry import MODELS, require_input_rank

# name → (depth, (stem width, stage 1, stage 2, stage 3 widths)).
RESNET_CONFIGS: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    "resnet8": (8, (16, 16, 32, 64)),
    "resnet14": (14, (16, 16, 32, 64)),
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)),
    "resnet44": (44, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}


class BasicBlock(nn.Module):
    """Two 3×3 conv → BatchNorm layers plus a shortcut, then ReLU (post-activation)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        # Identity when shapes match; otherwise a strided 1×1 projection ("option B" in He et al.).
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(batch, in_channels, H, W)`` → ``(batch, out_channels, H / stride, W / stride)``."""
        residual = self.relu(self.bn1(self.conv1(inputs)))
        residual = self.bn2(self.conv2(residual))
        return self.relu(residual + self.shortcut(inputs))


class CifarResNet(nn.Module):
    """Stem → three stages of ``(depth - 2) / 6`` basic blocks → global average pool → linear."""

    def __init__(
        self,
        depth: int,
        widths: tuple[int, int, int, int],
        in_channels: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        stem_width, *stage_widths = widths
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        stages = []
        width = stem_width
        for stage_index, stage_width in enumerate(stage_widths):
            # The first stage keeps resolution; the next two halve it in their first block.
            stride = 1 if stage_index == 0 else 2
            blocks = []
            for block_index in range(blocks_per_stage):
                blocks.append(BasicBlock(width, stage_width, stride if block_index == 0 else 1))
                width = stage_width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)
        init_residual_net(self)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H, W)`` → logits ``(batch, num_classes)``."""
        features = self.stages(self.stem(inputs))  # (batch, width, H / 4, W / 4)
        return self.classifier(torch.flatten(self.pool(features), 1))


def _resnet_factory(
    name: str, depth: int, widths: tuple[int, int, int, int]
) -> Callable[..., CifarResNet]:
    """A registered factory for one named configuration; it takes no options."""

    def build(*, input_shape: tuple[int, ...], num_classes: int) -> CifarResNet:
        require_input_rank(name, input_shape, {3: "(channels, height, width)"})
        return CifarResNet(depth, widths, in_channels=input_shape[0], num_classes=num_classes)

    build.__name__ = name
    build.__doc__ = f"{name}: CIFAR-style ResNet, depth {depth}, widths {widths}; 2-D inputs only."
    return build


for _name, (_depth, _widths) in RESNET_CONFIGS.items():
    MODELS.register(_name)(_resnet_factory(_name, _depth, _widths))
