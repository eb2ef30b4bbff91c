"""Weight initialisation shared by the residual families (ResNet, WRN)."""

from __future__ import annotations

from torch import nn


def init_residual_net(model: nn.Module, *, zero_linear_bias: bool = False) -> None:
    """He (fan-out) init for convs and unit/zero BatchNorm, as the KD reference code does,
    so that our baselines match the ones papers report; optionally zero linear biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif zero_linear_bias and isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
