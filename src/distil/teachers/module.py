"""A teacher that is a local ``nn.Module``, frozen in eval mode on its own device and dtype."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

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

    @torch.no_grad()
    def signal(self, batch: dict[str, Any]) -> ModelOutputs:
        """Teacher logits for ``batch``, computed on the teacher's device in its dtype."""
        inputs = move_batch({"inputs": batch["inputs"]}, self.device, self.dtype)["inputs"]
        return ModelOutputs(logits=call_model(self.module, inputs))
