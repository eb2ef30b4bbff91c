"""Reading JSON-lines files (run logs, corpora, generated data) with errors that name the line.

Also the one description of a file that is not UTF-8 (:func:`not_utf8`), which every reader of
user text files raises, so a latin-1 or UTF-16 file is named with its line and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distil.errors import DataError

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of ``path``; a line that is not
    UTF-8 or not a JSON object is a ``DataError`` naming ``path:line``. A UTF-8 byte-order
    mark at the start is ignored."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                if raw.startswith(_UTF16_BOMS):
                    raise _utf16(path)
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path}:{number}: not UTF-8 text ({error.reason} at column "
                    f"{error.start + 1}); save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(
                    f"{path}:{number}: not valid JSON ({error.msg} at column {error.colno})"
                ) from None
            except RecursionError:
                raise DataError(f"{path}:{number}: JSON nested too deeply") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number}: expected a JSON object per line")
            yield number, record


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every object of a JSON-lines file, in order (see :func:`json_lines`)."""
    return [record for _, record in json_lines(path)]


def not_utf8(path: Path, data: bytes, error: UnicodeDecodeError) -> DataError:
    """The error for ``data`` (the bytes of ``path``, or its first line) that failed to
    decode: ``path:line``, the reason, and a hint when the file is UTF-16."""
    if data.startswith(_UTF16_BOMS):
        return _utf16(path)
    line = data.count(b"\n", 0, error.start) + 1
    column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
    return DataError(
        f"{path}:{line}: not UTF-8 text ({error.reason} at column {column}); save the file as UTF-8"
    )


def _utf16(path: Path) -> DataError:
    return DataError(
        f"{path}:1: UTF-16 text (it starts with a UTF-16 byte-order mark); save the file as UTF-8"
    )
