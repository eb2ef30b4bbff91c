"""Datasets with seeded splits: configuration, registry, built-in loaders and the dataset type.

Importing this package registers the built-in datasets (``digits``, ``mnist``, ``mnist1d``,
``file``); the heavy libraries behind them are imported only when a dataset is loaded.
"""

from distil.data import builtin as _builtin  # noqa: F401  (registers the built-in datasets)
from distil.data.config import DataConfig
from distil.data.datasets import ArrayDataset, DataSplits
from distil.data.registry import DATASETS, load_data

__all__ = ["DataConfig", "DataSplits", "ArrayDataset", "DATASETS", "load_data"]
