"""The dataset registry and ``load_data``, the one entry point from a ``DataConfig`` to splits.

Loaders are functions ``(DataConfig) -> DataSplits`` registered with ``@DATASETS.register``;
the built-in ones are in ``builtin.py``, which ``distil.data`` imports so they are always there.
"""

from __future__ import annotations

from collections.abc import Callable

from distil.data.config import DataConfig
from distil.data.datasets import DataSplits
from distil.registry import Registry

DatasetLoader = Callable[[DataConfig], DataSplits]

DATASETS: Registry[DatasetLoader] = Registry("dataset")


def load_data(config: DataConfig) -> DataSplits:
    """Load the dataset ``config.dataset`` and split it as ``config`` says.

    Raises ``UnknownNameError`` (with the closest names) for an unregistered dataset, and the
    loader's ``DataError``/``ConfigError`` for bad files or missing settings.
    """
    loader = DATASETS.get(config.dataset)
    return loader(config)
