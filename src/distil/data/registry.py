"""The dataset registry and ``load_data``, the one entry point from a ``DataConfig`` to splits.

Loaders are functions ``(DataConfig) -> DataSplits`` registered with ``@DATASETS.register``;
the built-in ones are in ``builtin.py``, which ``distil.data`` imports so they are always there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from distil.data.augment import AugmentedDataset
from distil.data.config import DataConfig
from distil.data.datasets import ArrayDataset, DataSplits
from distil.errors import ConfigError
from distil.registry import Registry

DatasetLoader = Callable[[DataConfig], DataSplits]

DATASETS: Registry[DatasetLoader] = Registry("dataset")


def load_data(config: DataConfig) -> DataSplits:
    """Load the dataset ``config.dataset`` and split it as ``config`` says.

    Raises ``UnknownNameError`` (with the closest names) for an unregistered dataset, and the
    loader's ``DataError``/``ConfigError`` for bad files or missing settings.
    """
    loader = DATASETS.get(config.dataset)
    splits = loader(config)
    splits = group_classes(splits, config.class_groups) if config.class_groups else splits
    if config.augment is not None:  # training inputs only: val and test are scored as stored
        splits = replace(splits, train=AugmentedDataset(splits.train, config.augment))
    return replace(splits, config=config)


def group_classes(splits: DataSplits, groups: list[list[int]]) -> DataSplits:
    """Relabel every split so that class ``c`` becomes the index of the group holding it."""
    mapping = torch.full((splits.num_classes,), -1, dtype=torch.long)
    for new_label, group in enumerate(groups):
        for old_label in group:
            if not 0 <= old_label < splits.num_classes:
                raise ConfigError(
                    f"data.class_groups: class {old_label} does not exist in {splits.name!r} "
                    f"({splits.num_classes} classes)"
                )
            mapping[old_label] = new_label
    missing = (mapping < 0).nonzero().flatten().tolist()
    if missing:
        raise ConfigError(
            f"data.class_groups: classes {missing} of {splits.name!r} are in no group"
        )

    def relabel(dataset: ArrayDataset) -> ArrayDataset:
        return ArrayDataset(dataset.inputs, mapping[dataset.labels])

    names = ["+".join(splits.class_names[c] for c in group) for group in groups]
    return replace(splits, train=relabel(splits.train), val=relabel(splits.val),
                   test=relabel(splits.test), num_classes=len(groups), class_names=names)  # fmt: skip
