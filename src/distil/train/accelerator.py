"""The process's Accelerator: devices, process group and mixed precision for the one loop."""

from __future__ import annotations

import atexit
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
    refuse_fsdp_without_gpu()
    try:
        accelerator = Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    except ValueError as error:
        if "already been initialized" not in str(error):
            raise
        raise ConfigError(
            f"train.mixed_precision={mixed_precision!r}: this Python process already set up "
            "Accelerate with another precision; run this recipe in a new process"
        ) from None
    atexit.unregister(close_process_group)  # once, however many runs this process makes
    atexit.register(close_process_group)
    return accelerator


def close_process_group() -> None:
    """Destroy the process group before the interpreter exits.

    Left to interpreter shutdown, the gloo group's threads are torn down by C++ destructors
    and about one exit in two aborts ("terminate called without an active exception",
    SIGABRT) after all the work is done, so a finished multi-process run exits non-zero.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def refuse_fsdp_without_gpu() -> None:
    """FSDP asked for (``accelerate launch --use_fsdp`` or an FSDP config file) on a machine
    without CUDA: one clear line instead of what Accelerate does there.

    With the versions pinned by ``tests/reliability/test_scale.py`` Accelerate cannot shard
    over CPU processes: FSDP1 stops deep inside it ("no available devices found",
    or from 1.16 "… not supported on cpu")
    and FSDP2 silently runs plain DDP, every process holding the whole model.
    """
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() not in ("true", "1", "yes"):
        return
    xpu = getattr(torch, "xpu", None)  # Accelerate's FSDP also runs on Intel GPUs
    if torch.cuda.is_available() or (xpu is not None and xpu.is_available()):
        return
    raise ConfigError(
        "FSDP needs GPUs: Accelerate cannot shard a model over CPU processes (FSDP1 fails, "
        "FSDP2 silently runs DDP); on CPUs launch with `accelerate launch --multi_gpu "
        "--num_processes N` (DDP) — see docs/scale.md"
    )
