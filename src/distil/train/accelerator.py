"""The process's Accelerator: devices, process group and mixed precision for the one loop."""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator

from distil.errors import ConfigError


def make_accelerator(mixed_precision: str = "no") -> Accelerator:
    """An Accelerator for this process; a precision clash gets a clear error.

    Accelerate keeps one process-wide state, so a second run in the same Python process
    cannot switch ``mixed_precision``; say so instead of failing deep inside accelerate.
    Launched as several processes on a machine without CUDA (``accelerate launch
    --num_processes 2`` or ``torchrun`` on CPUs), Accelerate only forms a gloo process group
    when told to use the CPU, so it is told.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = launched and not torch.cuda.is_available()
    try:
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    except ValueError as error:
        if "already been initialized" not in str(error):
            raise
        raise ConfigError(
            f"train.mixed_precision={mixed_precision!r}: this Python process already set up "
            "Accelerate with another precision; run this recipe in a new process"
        ) from None
