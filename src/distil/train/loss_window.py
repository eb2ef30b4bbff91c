"""Running means of the loss parts between two rows of ``metrics.jsonl``."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator

from distil.methods.base import LossOutput


class LossWindow:
    """Running means of the loss parts since the last logged step."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0.0
        self.last = float("nan")

    def add(self, loss: LossOutput, group_size: int) -> None:
        weight = 1.0 / group_size
        values = {"loss": float(loss.total.detach())}
        for name, value in loss.parts.items():
            part = float(value.detach())
            values[f"loss/{name}"] = part
            values[f"loss/{name}@weighted"] = loss.weights[name] * part
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + weight * value
        self.count += weight
        self.last = values["loss"]

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps, so a resumed run logs the same window means."""
        return {"sums": dict(self.sums), "count": self.count, "last": self.last}

    def load_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state`."""
        self.sums, self.count, self.last = dict(state["sums"]), state["count"], state["last"]

    def reduce(self, accelerator: Accelerator) -> dict[str, float]:
        """Means over the window, averaged over processes; then start a new window."""
        keys = sorted(self.sums)
        means = torch.tensor([self.sums[k] / self.count for k in keys], device=accelerator.device)
        if accelerator.num_processes > 1:
            means = accelerator.reduce(means, reduction="mean")
        self.sums, self.count = {}, 0.0
        return dict(zip(keys, means.tolist(), strict=True))
