"""Save nested training state (optimizer, RNG, counters) without pickle.

Tensors go to a safetensors file; everything else (numbers, strings, lists, dicts with int
keys such as an optimizer's parameter ids) goes to a JSON skeleton that refers to the tensors
by key. Loading never executes code from the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from distil.errors import CheckpointError, DistilError


def split_state(state: Any) -> tuple[Any, dict[str, Tensor]]:
    """Replace every tensor in ``state`` by a reference; return (skeleton, tensors)."""
    tensors: dict[str, Tensor] = {}

    def encode(value: Any) -> Any:
        if isinstance(value, Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = value.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                return {"__dict__": {k: encode(v) for k, v in value.items()}}
            return {"__items__": [[encode(k), encode(v)] for k, v in value.items()]}
        if isinstance(value, list | tuple):
            return {"__list__": [encode(v) for v in value]}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint")

    return encode(state), tensors


def join_state(skeleton: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of :func:`split_state` (tuples come back as lists)."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {k: join_state(v, tensors) for k, v in skeleton["__dict__"].items()}
        if "__items__" in skeleton:
            return {
                join_state(k, tensors): join_state(v, tensors) for k, v in skeleton["__items__"]
            }
        if "__list__" in skeleton:
            return [join_state(v, tensors) for v in skeleton["__list__"]]
    return skeleton


def write_state(state: Any, folder: Path, stem: str) -> None:
    """Write ``state`` as ``<stem>.json`` plus ``<stem>.safetensors`` in ``folder``."""
    skeleton, tensors = split_state(state)
    save_file(tensors, str(folder / f"{stem}.safetensors"))
    write_json(folder / f"{stem}.json", skeleton)


def read_state(folder: Path, stem: str) -> Any:
    """Read what :func:`write_state` wrote; damaged files raise ``CheckpointError``."""
    tensors = read_tensors(folder / f"{stem}.safetensors")
    return join_state(read_json(folder / f"{stem}.json"), tensors)


def read_tensors(path: Path) -> dict[str, Tensor]:
    """Load a safetensors file, naming the file when it is missing or damaged."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path}: unreadable or truncated safetensors file ({error})"
        ) from None


def read_json(path: Path, error: type[DistilError] = CheckpointError) -> Any:
    """Load a JSON file; missing or not JSON raises ``error`` naming the file (a checkpoint's
    by default; a cache's files are data)."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise error(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise error(f"{path}: not valid JSON ({problem})") from None


def finite_json(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None: strict JSON has no such numbers,
    and a bare ``NaN`` makes the file unreadable to most JSON parsers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


def write_json(path: Path, value: Any) -> None:
    """Write strict JSON atomically: a reader sees the old file or the new one, never a half;
    non-finite numbers are written as null."""
    write_text_atomic(path, json.dumps(finite_json(value), indent=1, allow_nan=False))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to a temporary file, flush it to disk and rename it over
    ``path``: a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two writers never share one
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def sha256_of(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks: the one digest of every seal and manifest."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
