"""A teacher that is a local ``nn.Module``, frozen in eval mode on its own device and dtype."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from distil.models.taps import FeatureTaps
from distil.outputs import ModelOutputs, call_model, move_batch


class ModuleTeacher:
    """Wraps a trained model as a frozen teacher.

    The module is put in eval mode (dropout off, BatchNorm running statistics) and its
    parameters stop requiring gradients, so no optimizer or autograd graph ever touches it.
    """

    def __init__(
        self,
        module: nn.Module,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.module = module.to(device=self.device, dtype=dtype).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.taps: FeatureTaps | None = None

    def capture(self, layers: list[str]) -> None:
        """Also return the outputs of these layers (by module path) in ``features``."""
        if self.taps is not None:
            self.taps.remove()
        self.taps = FeatureTaps(self.module, layers, owner="teacher") if layers else None

    @torch.no_grad()
    def signal(self, batch: dict[str, Any]) -> ModelOutputs:
        """Teacher logits (and captured features) for ``batch``, on its device in its dtype."""
        inputs = move_batch({"inputs": batch["inputs"]}, self.device, self.dtype)["inputs"]
        logits = call_model(self.module, inputs)
        features = self.taps.pop() if self.taps is not None else {}
        return ModelOutputs(logits=logits, features=features)
