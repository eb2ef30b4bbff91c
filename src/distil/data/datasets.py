"""In-memory datasets: ``ArrayDataset`` (tensors indexed by sample) and ``DataSplits``.

Every built-in loader ends by wrapping tensors in ``ArrayDataset`` and returning the three
splits as ``DataSplits``. Reading files and choosing split indices happen elsewhere
(``builtin.py``, ``splits.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from distil.errors import ShapeError

Inputs = torch.Tensor | dict[str, torch.Tensor]


class ArrayDataset(Dataset):
    """Samples held as tensors: ``inputs`` ``(N, *shape)`` (or a dict of them) and ``labels``.

    ``inputs`` is a float32 tensor for images and features, or a dict of equally long tensors
    (``input_ids``, ``attention_mask``) for tokenized text. ``labels`` is int64 ``(N,)``.
    Each item carries its ``index`` within this dataset so that cached teacher outputs can be
    looked up per sample after the default collate has stacked a batch.
    """

    def __init__(self, inputs: Inputs, labels: torch.Tensor) -> None:
        if labels.ndim != 1:
            raise ShapeError(f"labels must be 1-D (N,), got shape {tuple(labels.shape)}")
        tensors = inputs.items() if isinstance(inputs, dict) else [("inputs", inputs)]
        for name, tensor in tensors:
            if tensor.shape[0] != labels.shape[0]:
                raise ShapeError(
                    f"{name} has {tensor.shape[0]} samples but labels has {labels.shape[0]}"
                )
        self.inputs = inputs
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if isinstance(self.inputs, dict):
            sample_inputs: Inputs = {name: tensor[index] for name, tensor in self.inputs.items()}
        else:
            sample_inputs = self.inputs[index]
        return {"inputs": sample_inputs, "labels": self.labels[index], "index": index}

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ArrayDataset:
        """A new dataset holding copies of the samples at ``indices``, re-indexed from 0."""
        positions = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        if isinstance(self.inputs, dict):
            inputs: Inputs = {name: tensor[positions] for name, tensor in self.inputs.items()}
        else:
            inputs = self.inputs[positions]
        return ArrayDataset(inputs, self.labels[positions])


@dataclass
class DataSplits:
    """A loaded dataset cut into train, validation and test sets, plus what models need."""

    name: str
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    input_shape: tuple[int, ...]  # one sample's shape, e.g. (1, 28, 28) or (max_length,)
    num_classes: int
    class_names: list[str]
    config: Any = None  # the DataConfig it was loaded with (set by load_data)


def in_order(dataset: Dataset, batch_size: int) -> DataLoader:
    """Batches of ``dataset`` in index order, drawing nothing from the global RNG.

    A plain DataLoader takes a seed from torch's global generator every time it is iterated;
    evaluation in the middle of training would then shift the random stream of dropout and
    a resumed run would no longer equal an uninterrupted one.
    """
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator().manual_seed(0)
    )
