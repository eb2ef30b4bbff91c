"""The live progress bar and the per-step ``metrics.jsonl`` log of a training run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from distil.errors import DataError
from distil.train.state_io import finite_json, write_text_atomic


class ProgressBar:
    """A rich progress bar showing the step, the live loss and the last validation metric."""

    def __init__(self, total_steps: int, title: str, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task(title, total=total_steps, status="")

    def __enter__(self) -> ProgressBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, step: int, status: str) -> None:
        """Move to ``step`` and show ``status`` (loss, metric)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=step, status=status)


class MetricsLog:
    """Appends JSON rows to ``metrics.jsonl``; on resume, drops rows past the checkpoint.

    Dropping the rows a killed run wrote after its last checkpoint makes the log of a
    resumed run identical to the log of an uninterrupted one. A last line cut short by the
    kill is dropped with them; any other line that is not JSON is damage, and an error
    naming ``file:line`` (dropping it would silently lose a logged step).
    """

    def __init__(self, path: Path, enabled: bool, resume_step: int | None) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and path.exists():
            lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
            for number, line in enumerate(lines, start=1):
                try:
                    row = json.loads(line) if line.strip() else None
                except json.JSONDecodeError:
                    if number == len(lines):  # no newline after it: cut short by the kill
                        continue
                    raise DataError(
                        f"{path}:{number}: not valid JSON (damaged); the log of the steps "
                        "before the checkpoint cannot be kept — fix or delete that line"
                    ) from None
                if isinstance(row, dict) and row.get("step", 0) <= resume_step:
                    kept.append(line)
        write_text_atomic(path, "".join(line + "\n" for line in kept))

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (main process only)."""
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(finite_json(row), allow_nan=False) + "\n")
