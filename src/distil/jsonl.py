"""Reading JSON-lines files (run logs, corpora, generated data) with errors that name the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distil.errors import DataError


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of ``path``; a line that is not a
    JSON object is a ``DataError`` naming ``path:line``."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number}: expected a JSON object per line")
            yield number, record


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every object of a JSON-lines file, in order (see :func:`json_lines`)."""
    return [record for _, record in json_lines(path)]
