"""distil — a knowledge-distillation toolkit for PyTorch.

The Python API in one breath::

    import distil
    config = distil.load_config("kd-mnist", ["train.epochs=5"])
    result = distil.run(config)          # trains, evaluates, writes the run folder
    print(result.metrics["last"]["test"])

Losses live in :mod:`distil.losses`, methods in :mod:`distil.methods`, teachers in
:mod:`distil.teachers`, tasks (classification, lm, your own) in :mod:`distil.tasks`, the one
loop in :mod:`distil.train`, the one run in :mod:`distil.pipeline`. The names below are imported on
first use, so ``import distil`` (and the command line) stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_config": "distil.config",
    "parse_config": "distil.config",
    "RunConfig": "distil.config",
    "run": "distil.pipeline",
    "RunResult": "distil.pipeline",
    "Task": "distil.tasks",
    "register_task": "distil.tasks",
    "Trainer": "distil.train",
    "TrainConfig": "distil.train",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'distil' has no attribute {name!r}")
