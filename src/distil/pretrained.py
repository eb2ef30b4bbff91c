"""One cache for models distil pretrains itself (teachers, tiny LMs), for every task.

A model is trained here once with plain supervision — the one Trainer, the ``supervised``
method, the task's own validator — and its best-validation weights are kept in a folder of
the user cache (``$DISTIL_CACHE_DIR``, default ``~/.cache/distil``) named by a hash of
everything that determines it (architecture, options, data, pretraining settings, distil's
version). The next run that asks for the same model reuses it. Training runs in a work folder
next to it, so a killed pretraining resumes; the finished folder is sealed with the
checkpoints' ``checksums.json`` and published by one rename, so a reader never sees half of
it, and it is verified each time it is reused (a damaged one is trained again, not loaded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate import Accelerator, PartialState
from torch import Tensor, nn

from distil.errors import CheckpointError
from distil.paths import cache_dir
from distil.train.checkpoint import CHECKSUMS_FILE, load_model_state, read_pointer, seal, verify

log = logging.getLogger("distil")


def content_key(identity: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-able description of a model."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def cache_folder(kind: str, name: str) -> Path:
    """``<cache>/<kind>/<name>``: where a pretrained model of that kind lives."""
    return cache_dir() / kind / name


def cached_model(
    folder: Path,
    *,
    complete: str,
    produce: Callable[[Path, Path], None],
    accelerator: Accelerator | PartialState | None = None,
) -> Path:
    """``folder``, produced first unless it already holds the file ``complete`` and every file
    in it verifies against the ``checksums.json`` sealed when it was made.

    ``produce(work, staging)`` trains in ``work`` (kept across a kill, so training resumes)
    and writes the finished model into ``staging``; every process calls it (training may be
    distributed), and it writes on the main process only. The staging folder is then sealed
    and replaces ``folder`` in one rename and the work folder is deleted. A damaged, edited
    or unsealed cached model is never loaded: a warning names the file, the folder is set
    aside (renamed ``<folder>.damaged``, never deleted) and the model is trained again.
    """
    main = accelerator is None or accelerator.is_main_process
    if folder.exists() and _verifies(folder, complete, warn=main):
        return folder
    work = folder.with_name(folder.name + ".training")
    staging = folder.with_name(folder.name + ".tmp")
    if main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    log.info("pretraining %s once; cached in %s", folder.name, folder)
    produce(work, staging)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if main:
        seal(staging)
        if folder.exists():
            _set_aside(folder)
        os.replace(staging, folder)
        shutil.rmtree(work, ignore_errors=True)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return folder


def _verifies(folder: Path, complete: str, *, warn: bool) -> bool:
    """Whether ``folder`` holds ``complete`` and every file ``checksums.json`` lists, each
    with its recorded sha256."""
    problem = None
    if not (folder / complete).is_file():
        problem = f"{folder / complete}: missing from the cached model"
    elif not (folder / CHECKSUMS_FILE).is_file():
        problem = f"{folder / CHECKSUMS_FILE}: missing, so the cached model cannot be verified"
    else:
        try:
            verify(folder)
        except CheckpointError as error:
            problem = str(error)
    if problem is not None and warn:
        log.warning("%s; pretraining it again into a fresh folder (the damaged one is kept "
                    "as %s)", problem, _aside_name(folder).name)  # fmt: skip
    return problem is None


def _aside_name(folder: Path) -> Path:
    aside, number = folder.with_name(folder.name + ".damaged"), 1
    while aside.exists():
        number += 1
        aside = folder.with_name(f"{folder.name}.damaged-{number}")
    return aside


def _set_aside(folder: Path) -> None:
    """Keep a cached model that failed its checks next to the fresh one, for inspection."""
    os.replace(folder, _aside_name(folder))


def pretrain_supervised(
    model: nn.Module,
    task: Any,
    *,
    train_data: Any,
    validator: Callable,
    select_metric: str,
    config: Any,
    work: Path,
    data: Any,
    accelerator: Accelerator | None = None,
) -> tuple[dict[str, Tensor], int]:
    """Train ``model`` with cross-entropy alone (resuming in ``work``); returns its weights at
    the best validation step and that step."""
    from distil.methods import build_method
    from distil.train import Trainer

    trainer = Trainer(
        model, build_method({"name": "supervised"}), task=task, train_data=train_data,
        data=data, config=config, output_dir=work, validator=validator,
        select_metric=select_metric, accelerator=accelerator,
    )  # fmt: skip
    trainer.fit(resume=True)
    checkpoints = work / "checkpoints"
    return load_model_state(checkpoints, "best"), int(read_pointer(checkpoints, "best")["step"])
