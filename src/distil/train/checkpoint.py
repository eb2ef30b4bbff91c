"""Checkpoints that survive a kill at any moment.

Layout of ``<run>/checkpoints``::

    step-000120/   model.safetensors (student), method.safetensors (the method's own
                   parameters), optimizer.{json,safetensors}, trainer.json, rank<r>.{json,safetensors}…
    best-000100/   model.safetensors (weights only: all that "best" is used for)
    best-peer-000090/  a peer student's best weights (methods that train a cohort)
    last.json      {"dir": "step-000120", "step": 120}
    best.json      {"dir": "best-000100", "step": 100, "metric": 0.93}
    best-peer.json {"dir": "best-peer-000090", "step": 90, "metric": 0.91}

A folder is written under a temporary name and renamed when complete; the pointer files are
replaced atomically after that. A kill therefore leaves either the previous checkpoint or the
new one, never half of one. Folders no pointer refers to are deleted.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor, nn

from distil.errors import CheckpointError
from distil.train.state_io import read_json, read_state, read_tensors, write_json, write_state

MODEL_FILE = "model.safetensors"
METHOD_FILE = "method.safetensors"


def begin(root: Path, name: str) -> Path:
    """Create an empty temporary folder for checkpoint ``name`` (main process only)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def write_model(folder: Path, model_state: dict[str, Tensor], filename: str = MODEL_FILE) -> None:
    """Store weights as safetensors (independent CPU copies, so tied weights save too)."""
    save_file(
        {k: v.detach().cpu().contiguous().clone() for k, v in model_state.items()},
        str(folder / filename),
    )


def write_training_state(folder: Path, optimizer_state: dict, trainer_state: dict) -> None:
    """Store optimizer and trainer counters (scheduler, step, epoch, data position, best)."""
    write_state(optimizer_state, folder, "optimizer")
    write_json(folder / "trainer.json", trainer_state)


def write_rank_state(folder: Path, rank: int, state: dict[str, Any]) -> None:
    """Store what differs between processes: generator states, unlogged loss sums."""
    write_state(state, folder, f"rank{rank}")


def commit(root: Path, name: str, pointer: str, info: dict[str, Any]) -> None:
    """Publish the temporary folder as ``name`` and point ``<pointer>.json`` at it."""
    tmp, final = root / f".tmp-{name}", root / name
    if final.exists():  # left behind by a kill between rename and pointer update
        shutil.rmtree(final)
    tmp.rename(final)
    write_json(root / f"{pointer}.json", {"dir": name, **info})
    _remove_unreferenced(root)


def best_pointer(student: str = "student") -> str:
    """The pointer of a student's best-validation weights: ``best`` for the run's main
    student, ``best-<name>`` for a peer a method trains beside it."""
    return "best" if student == "student" else f"best-{student}"


def _remove_unreferenced(root: Path) -> None:
    keep = {read_json(pointer)["dir"] for pointer in root.glob("*.json")}
    for folder in root.iterdir():
        if folder.is_dir() and folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def load_into(module: nn.Module, state: dict[str, Tensor], source: Path) -> None:
    """Load ``state`` into ``module``; a mismatch names the file and the offending keys."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    resized = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or resized:
        details = [
            f"{label} {keys[:4]}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", resized),
            )
            if keys
        ]
        raise CheckpointError(
            f"{source}: weights do not fit the model ({'; '.join(details)}); were they saved "
            "from another architecture or recipe?"
        )
    module.load_state_dict(state)


def read_pointer(root: Path, pointer: str) -> dict[str, Any]:
    """The contents of ``last.json`` or ``best.json``."""
    return read_json(root / f"{pointer}.json")


def has_checkpoint(root: Path, pointer: str = "last") -> bool:
    """Whether ``<pointer>.json`` exists under ``root``."""
    return (root / f"{pointer}.json").is_file()


def load_model_state(root: Path, pointer: str) -> dict[str, Tensor]:
    """Weights of the checkpoint ``pointer`` ("last" or "best") refers to."""
    if not has_checkpoint(root, pointer):
        raise CheckpointError(f"{root / (pointer + '.json')}: no {pointer!r} checkpoint in {root}")
    return read_tensors(root / read_pointer(root, pointer)["dir"] / MODEL_FILE)


def load_training_state(root: Path, rank: int) -> tuple[dict, dict, dict, dict, dict]:
    """(student, method, optimizer, trainer, rank) states of the ``last`` checkpoint."""
    folder = root / read_pointer(root, "last")["dir"]
    rank_stem = f"rank{rank}"
    if not (folder / f"{rank_stem}.json").is_file():
        raise CheckpointError(
            f"{folder}: no random state for process {rank}; was the run saved with fewer processes?"
        )
    return (
        read_tensors(folder / MODEL_FILE),
        read_tensors(folder / METHOD_FILE),
        read_state(folder, "optimizer"),
        read_json(folder / "trainer.json"),
        read_state(folder, rank_stem),
    )
