"""The live progress bar and the per-step ``metrics.jsonl`` log of a training run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from distil.train.state_io import finite_json


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
    resumed run identical to the log of an uninterrupted one.
    """

    def __init__(self, path: Path, enabled: bool, resume_step: int | None) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by the kill
                    continue
                if row.get("step", 0) <= resume_step:
                    kept.append(line)
        path.write_text("".join(line + "\n" for line in kept))

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (main process only)."""
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(finite_json(row), allow_nan=False) + "\n")
