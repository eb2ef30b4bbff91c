"""Errors that distil raises at its boundaries.

Every error names the culprit (the config key, file and line, tensor and shape) and what was
expected, so a user never has to read a traceback from deep inside torch. Inner code trusts
inputs that were validated where they entered; it does not define errors of its own.
"""

from __future__ import annotations


class DistilError(Exception):
    """Base class of every error distil raises on purpose."""


class ConfigError(DistilError, ValueError):
    """A recipe or a ``key=value`` override is invalid (unknown key, wrong type, bad value)."""


class UnknownNameError(DistilError, LookupError):
    """A registry (losses, methods, models, datasets, …) has no entry by that name."""

    def __str__(self) -> str:  # LookupError would quote the message like a dict key
        return str(self.args[0]) if self.args else ""


class DataError(DistilError, ValueError):
    """A data file or dataset is malformed: names the file, the line and what was expected."""


class ShapeError(DistilError, ValueError):
    """Tensors that must fit together do not: names both tensors and their shapes."""


class TrainingError(DistilError):
    """Training cannot go on: a loss, gradient or weight stopped being finite. Names the step
    and the part; the last good checkpoint is kept."""


class CheckpointError(DistilError):
    """A checkpoint is missing, truncated or does not match the run it should resume."""
