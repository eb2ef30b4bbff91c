"""Training-time input augmentation: random shifts (and horizontal flips) of each sample.

With few labels, a teacher earns its keep on inputs nobody labelled: distilling on shifted
copies lets it label what the student sees, while plain supervision only repeats the stored
label. Only the training split is wrapped (``load_data``); validation and test stay exact.

Every draw comes from torch's global generator, which the trainer checkpoints and restores,
so a resumed run shifts the same samples the same way as an uninterrupted one. A no-op
config (``shift: 0``, no flip) draws nothing, leaving the random stream as without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from torch.utils.data import Dataset

from distil.data.datasets import ArrayDataset
from distil.errors import ConfigError

#: Per-sample input ranks that can be shifted: images ``(C, H, W)`` and sequences ``(C, L)``.
IMAGE_RANK, SEQUENCE_RANK = 3, 2


class AugmentConfig(BaseModel):
    """How each training sample is perturbed every time it is drawn."""

    model_config = ConfigDict(extra="forbid")

    shift: int = Field(
        default=0,
        ge=0,
        description="Largest translation in pixels (images: both axes) or positions "
        "(sequences: the last axis); each sample moves by a uniform offset in "
        "[-shift, shift] per axis, filling with zeros. 0: no shift.",
    )
    flip: bool = Field(
        default=False, description="Mirror images left-right with probability 0.5 (images only)."
    )


def shifted(sample: Tensor, offsets: Sequence[int], shift: int) -> Tensor:
    """``sample`` moved by ``offsets`` along its last ``len(offsets)`` axes, zeros filling in.

    The sample is zero-padded by ``shift`` on each side and cropped back to its size, the
    window displaced by the offset (each in ``[-shift, shift]``); nothing wraps around.
    """
    axes = len(offsets)
    padded = F.pad(sample, [shift] * (2 * axes))
    window = [slice(None)] * (sample.ndim - axes)
    for offset, size in zip(offsets, sample.shape[-axes:], strict=True):
        window.append(slice(shift - offset, shift - offset + size))
    return padded[tuple(window)]


class AugmentedDataset(Dataset):
    """``dataset`` with each item's ``inputs`` freshly augmented; ``labels`` and ``index``
    are passed through, so outputs cached per index still line up with their sample.

    ``inputs`` and ``labels`` (the attributes) are the wrapped dataset's stored tensors, not
    augmented: code that reads the split as a whole sees what was loaded.
    """

    def __init__(self, dataset: ArrayDataset, config: AugmentConfig) -> None:
        inputs = dataset.inputs
        if isinstance(inputs, dict):
            raise ConfigError(
                "data.augment: tokenized text inputs cannot be shifted or flipped; remove "
                "data.augment for text datasets"
            )
        rank = inputs.ndim - 1
        if rank not in (IMAGE_RANK, SEQUENCE_RANK):
            raise ConfigError(
                f"data.augment: inputs of shape {tuple(inputs.shape[1:])} are neither images "
                "(C, H, W) nor sequences (C, L); feature vectors cannot be shifted"
            )
        if config.flip and rank != IMAGE_RANK:
            raise ConfigError(
                f"data.augment.flip: inputs of shape {tuple(inputs.shape[1:])} are sequences, "
                "and only images (C, H, W) are flipped; set data.augment.flip=false"
            )
        self.dataset = dataset
        self.config = config
        self._shift_axes = rank - 1  # every axis after the channels

    @property
    def inputs(self) -> Tensor:
        return self.dataset.inputs

    @property
    def labels(self) -> Tensor:
        return self.dataset.labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        item["inputs"] = self.augment(item["inputs"])
        return item

    def augment(self, sample: Tensor) -> Tensor:
        """One random draw of the configured perturbation (shift first, then flip)."""
        shift = self.config.shift
        if shift:
            offsets = torch.randint(-shift, shift + 1, (self._shift_axes,)).tolist()
            sample = shifted(sample, offsets, shift)
        if self.config.flip and bool(torch.rand(()) < 0.5):
            sample = sample.flip(-1)
        return sample

    def subset(self, indices: Sequence[int] | np.ndarray | Tensor) -> AugmentedDataset:
        """The samples at ``indices`` (re-indexed from 0), augmented the same way."""
        return AugmentedDataset(self.dataset.subset(indices), self.config)
