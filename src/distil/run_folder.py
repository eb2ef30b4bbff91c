"""The run folder's own files — ``config.yaml``, ``metrics.json``, ``metrics.jsonl`` — sealed
when written and verified when read back (``distil eval``, ``distil report``).

They are sealed the way checkpoints are (:func:`distil.train.checkpoint.seal`: a
``checksums.json`` with each file's sha256): at the start of a run (the recipe), and again
when it finishes (recipe, final metrics, step log together). A file whose bytes differ from
its record is a ``DataError`` naming it, so a flipped digit in ``metrics.json`` is never
reported as a result. A folder without ``checksums.json`` (written by an older distil, or
the record deleted) is read with a warning that it is not verified.

The step log of a run that has not finished is not sealed (it is still growing); a last line
cut short by a kill is skipped with a warning (``--resume`` logs that step again), any other
line that is not JSON is an error naming ``file:line``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from distil.errors import DataError
from distil.train.checkpoint import CHECKSUMS_FILE, seal
from distil.train.state_io import read_json

log = logging.getLogger("distil")

#: What a run folder's seal covers once the run has finished.
RUN_FILES = ("config.yaml", "metrics.json", "metrics.jsonl")


def seal_run(run_dir: Path, *, finished: bool) -> None:
    """Record the sha256 of the recipe (a run starting or resuming) or of every run file (a
    finished run) in ``run_dir``; main process only."""
    names = RUN_FILES if finished else RUN_FILES[:1]
    seal(run_dir, [name for name in names if (run_dir / name).is_file()])


def read_run_config(path: Path) -> dict[str, Any] | None:
    """A run's ``config.yaml`` as a mapping, verified; None when there is none."""
    text = read_run_text(path)
    if text is None:
        return None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise DataError(f"{path}: invalid YAML: {' '.join(str(error).split())}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise DataError(f"{path}: expected a mapping at the top level, got {type(config).__name__}")
    return config


def _record(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CHECKSUMS_FILE
    if not path.is_file():
        return None
    record = read_json(path, DataError)
    if not isinstance(record, dict):
        raise DataError(f"{path}: not a checksum record (expected a JSON object)")
    return record


def is_sealed(path: Path) -> bool:
    """Whether ``path``'s folder records a checksum for it."""
    record = _record(path.parent)
    return record is not None and path.name in record


def read_run_text(path: Path) -> str | None:
    """The text of run file ``path``, verified against its folder's seal; None when it does
    not exist and the seal does not list it. A listed file that is missing or whose bytes
    differ is a ``DataError`` naming it; a step log the seal does not list yet (the run is
    still being written) is read as it is; a finished run's ``metrics.json`` must be listed."""
    record = _record(path.parent)
    listed = record is not None and path.name in record
    if not path.is_file():
        if listed:
            raise DataError(f"{path}: missing (its folder's {CHECKSUMS_FILE} lists it)")
        return None
    data = path.read_bytes()
    if record is None:
        log.warning("%s has no %s (written by an older distil): %s not verified",
                    path.parent, CHECKSUMS_FILE, path.name)  # fmt: skip
    elif not listed and "metrics.json" in record:  # a finished run's seal lists every file
        raise DataError(
            f"{path.parent / CHECKSUMS_FILE}: does not list {path.name} (damaged or edited)"
        )
    elif not listed and path.name == "metrics.json":
        raise DataError(
            f"{path}: not sealed in {CHECKSUMS_FILE}: the run stopped while finishing; "
            "`distil train <recipe> --resume` finishes it"
        )
    elif listed and hashlib.sha256(data).hexdigest() != record[path.name]:
        raise DataError(
            f"{path}: damaged (its sha256 differs from the one recorded in {CHECKSUMS_FILE} "
            "when it was written)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def read_step_log(path: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` ([] when there is none): verified when sealed; in a log
    still being written a torn last line (a kill mid-write) is skipped with a warning."""
    sealed = is_sealed(path)
    text = read_run_text(path)
    if text is None:
        return []
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            if not sealed and number == len(lines):  # no newline after it: cut by a kill
                log.warning("%s:%d: last line cut short (the run was killed while writing "
                            "it); skipped", path, number)  # fmt: skip
                continue
            raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object per line")
        rows.append(row)
    return rows
