"""The one training loop and everything it owns: schedules, checkpoints, diagnostics."""

from distil.train.config import TrainConfig
from distil.train.trainer import Trainer, TrainResult

__all__ = ["TrainConfig", "Trainer", "TrainResult"]
