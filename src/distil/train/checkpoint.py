"""Checkpoints that survive a kill at any moment.

Layout of ``<run>/checkpoints``::

    step-000120/   model.safetensors (student), method.safetensors (the method's own
                   parameters), optimizer.{json,safetensors}, trainer.json, rank<r>.{json,safetensors}…
    best-000100/   model.safetensors (weights only: all that "best" is used for)
    best-peer-000090/  a peer student's best weights (methods that train a cohort)
    last.json      {"dir": "step-000120", "step": 120}
    best.json      {"dir": "best-000100", "step": 100, "metric": 0.93}
    best-peer.json {"dir": "best-peer-000090", "step": 90, "metric": 0.91}

A folder is written under a temporary name, sealed with ``checksums.json`` (the sha256 of
every file in it) and renamed when complete; the pointer files are replaced atomically after
that, and the ``last`` checkpoint before it stays as ``previous.json``. A kill therefore
leaves either the previous checkpoint or the new one, never half of one. Every folder is
verified against its checksums when it is read: a damaged training checkpoint falls back to
the previous good one with a warning (a lost pointer to the newest verified folder); damaged
weights with nothing to fall back on are an error naming the file. Folders no pointer refers
to are deleted — and nothing is deleted while any checkpoint is in doubt.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor, nn

from distil.errors import CheckpointError
from distil.methods.base import MAIN_STUDENT
from distil.train.state_io import (
    read_json,
    read_state,
    read_tensors,
    sha256_of,
    write_json,
    write_state,
)

MODEL_FILE = "model.safetensors"
METHOD_FILE = "method.safetensors"
CHECKSUMS_FILE = "checksums.json"
#: A copy of the pointer written into the folder it points at (and sealed with it), so a
#: damaged or edited ``last.json``/``best.json`` is caught instead of read as another step.
POINTER_RECORD = "pointer.json"

log = logging.getLogger("distil")


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
    """Seal the temporary folder, publish it as ``name`` and point ``<pointer>.json`` at it
    (the ``last`` checkpoint it replaces stays as ``previous``)."""
    tmp, final = root / f".tmp-{name}", root / name
    write_json(tmp / POINTER_RECORD, {"dir": name, **info})  # sealed: pointers are checked by it
    seal(tmp)
    if final.exists():  # left behind by a kill between rename and pointer update
        shutil.rmtree(final)
    tmp.rename(final)
    former = _pointer_or_none(root, "last") if pointer == "last" else None
    if former is not None and former["dir"] != name:
        write_json(root / "previous.json", former)
    write_json(root / f"{pointer}.json", {"dir": name, **info})
    _remove_unreferenced(root)


def seal(folder: Path, names: list[str] | None = None) -> None:
    """Write ``checksums.json`` in ``folder``: the sha256 of each of ``names`` (default: every
    file in it). The one integrity record of everything distil writes outside a teacher
    cache: checkpoints, run folders, pretrained models (see :func:`verify`)."""
    paths = _files(folder) if names is None else [folder / name for name in names]
    write_json(folder / CHECKSUMS_FILE, {path.name: sha256_of(path) for path in paths})


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.name != CHECKSUMS_FILE)


def verify(folder: Path) -> None:
    """CheckpointError naming the first file of ``folder`` that is missing or not the one
    written (its sha256 differs from ``checksums.json``). A folder written before checksums
    existed is accepted with a warning."""
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder missing")
    manifest = folder / CHECKSUMS_FILE
    if not manifest.is_file():
        log.warning(
            "%s has no %s (written by an older distil): not verified", folder, CHECKSUMS_FILE
        )
        return
    recorded = read_json(manifest)
    if not isinstance(recorded, dict) or not all(isinstance(d, str) for d in recorded.values()):
        raise CheckpointError(f"{manifest}: not a checksum record (damaged or edited)")
    unlisted = sorted({f.name for f in _files(folder)} - set(recorded))
    if unlisted:  # a file nobody can vouch for: the record itself was damaged
        raise CheckpointError(f"{manifest}: does not list {unlisted[0]} (damaged or edited)")
    for name, digest in recorded.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (its folder's {CHECKSUMS_FILE} lists it)")
        if sha256_of(path) != digest:
            raise CheckpointError(
                f"{path}: damaged (its sha256 differs from the one recorded in {CHECKSUMS_FILE} "
                "when it was written)"
            )


def holds_checkpoints(root: Path) -> bool:
    """Whether ``root`` holds any training checkpoint, even with its pointer lost."""
    return has_checkpoint(root) or has_checkpoint(root, "previous") or any(root.glob("step-*"))


def usable_checkpoint(root: Path, *, main: bool = True) -> Path | None:
    """The newest training checkpoint that verifies: ``last``, else ``previous``, else the
    newest ``step-*`` folder (a lost pointer) — with a warning naming what was skipped, and
    ``last.json`` pointed at the one chosen. None when ``root`` holds none; CheckpointError
    listing every problem when none verifies. Only the ``main`` process warns and writes."""
    candidates, problems = [], []
    for pointer in ("last", "previous"):
        try:
            if has_checkpoint(root, pointer):
                candidates.append(root / read_pointer(root, pointer)["dir"])
        except (CheckpointError, KeyError, TypeError) as error:
            problems.append(f"{root / (pointer + '.json')}: unreadable ({error})")
    folders = [f for f in sorted(root.glob("step-*"), reverse=True) if f not in candidates]
    if folders and not has_checkpoint(root, "last"):
        problems.append(f"{root / 'last.json'}: missing")
    candidates += folders
    for folder in candidates:
        try:
            verify(folder)
            trainer_state = read_json(folder / "trainer.json")
        except CheckpointError as error:
            problems.append(str(error))
            continue
        if problems and main:
            log.warning("%s; resuming from %s instead", "; ".join(problems), folder.name)
            step = trainer_state["state"]["step"]
            write_json(root / "last.json", {"dir": folder.name, "step": step})
        return folder
    if problems:
        raise CheckpointError(f"{root}: no checkpoint verifies ({'; '.join(problems)})")
    return None


def _pointer_or_none(root: Path, pointer: str) -> dict[str, Any] | None:
    try:
        return read_pointer(root, pointer)
    except CheckpointError:
        return None


def best_pointer(student: str = MAIN_STUDENT) -> str:
    """The pointer of a student's best-validation weights: ``best`` for the run's main
    student, ``best-<name>`` for a peer a method trains beside it."""
    return "best" if student == MAIN_STUDENT else f"best-{student}"


def _remove_unreferenced(root: Path) -> None:
    try:
        keep = {read_json(pointer)["dir"] for pointer in root.glob("*.json")}
    except (CheckpointError, KeyError, TypeError):
        return  # a pointer is unreadable: delete nothing while a checkpoint is in doubt
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
    """The contents of ``last.json`` or ``best.json``, checked against the copy sealed in the
    folder it names (folders written before that copy existed are taken at their word)."""
    path = root / f"{pointer}.json"
    content = read_json(path)
    if not isinstance(content, dict) or not isinstance(content.get("dir"), str):
        raise CheckpointError(f"{path}: not a checkpoint pointer (no folder named)")
    record = root / content["dir"] / POINTER_RECORD
    if record.is_file() and read_json(record) != content:
        raise CheckpointError(
            f"{path}: differs from the record sealed in {content['dir']}/{POINTER_RECORD} "
            "(damaged or edited)"
        )
    if not record.is_file() and not (root / content["dir"]).is_dir():
        raise CheckpointError(f"{path}: points at {content['dir']}, which does not exist")
    return content


def has_checkpoint(root: Path, pointer: str = "last") -> bool:
    """Whether ``<pointer>.json`` exists under ``root``."""
    return (root / f"{pointer}.json").is_file()


def load_model_state(root: Path, pointer: str) -> dict[str, Tensor]:
    """Weights of the checkpoint ``pointer`` ("last" or "best") refers to, verified."""
    if not has_checkpoint(root, pointer):
        raise CheckpointError(f"{root / (pointer + '.json')}: no {pointer!r} checkpoint in {root}")
    folder = root / read_pointer(root, pointer)["dir"]
    verify(folder)
    return read_tensors(folder / MODEL_FILE)


def load_training_state(folder: Path, rank: int) -> tuple[dict, dict, dict, dict, dict]:
    """(student, method, optimizer, trainer, rank) states of a verified checkpoint folder."""
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
