"""``hf_sequence_classifier``: a Hugging Face sequence classifier from a local folder.

The wrapper gives a transformers model the zoo's one-argument ``forward``: a dict of tensors
(``input_ids``, ``attention_mask``, …) in, logits ``(batch, num_classes)`` out. It only loads
from a local path and never downloads; fetching weights is someone else's job. The
``input_shape`` that every factory receives is ignored here, because token ids have variable
length: a batch's shape is set by its collator, not fixed per model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from distil.errors import ConfigError
from distil.models.registry import MODELS


class SequenceClassifier(nn.Module):
    """A transformers ``...ForSequenceClassification`` model that returns bare logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokenised batch, e.g. ``input_ids`` ``(batch, seq)`` → logits ``(batch, num_classes)``."""
        return self.model(**inputs).logits


@MODELS.register("hf_sequence_classifier")
def hf_sequence_classifier(
    *, input_shape: tuple[int, ...], num_classes: int, path: str, new_head: bool = False
) -> SequenceClassifier:
    """Load ``AutoModelForSequenceClassification`` from the local folder ``path``.

    A bare encoder gets a fresh classification head of ``num_classes`` outputs. A saved
    classifier whose head has another number of labels is refused with a ``ConfigError``
    unless ``new_head=True``, which replaces that head with a fresh one: silently
    re-initialising a trained teacher's head would make it distil noise. ``input_shape`` is
    ignored (see the module docstring).
    """
    del input_shape  # token ids have variable length; nothing to check
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"model 'hf_sequence_classifier': path {path!r} is not a folder")
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"model 'hf_sequence_classifier': path {path!r} holds no config.json, "
            "so it is not a saved transformers model"
        )
    # Imported here rather than at the top: transformers takes seconds to import, and every
    # user of the model zoo would otherwise pay that, even one training a small CNN.
    from transformers import AutoConfig, AutoModelForSequenceClassification

    saved_config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    saved_architectures = saved_config.architectures or []
    has_classifier_head = any(
        architecture.endswith("ForSequenceClassification") for architecture in saved_architectures
    )
    if has_classifier_head and saved_config.num_labels != num_classes and not new_head:
        raise ConfigError(
            f"model 'hf_sequence_classifier': the classifier at {path!r} has "
            f"{saved_config.num_labels} labels but num_classes is {num_classes}; "
            "set new_head=true to replace its head with a fresh one"
        )
    model = AutoModelForSequenceClassification.from_pretrained(
        str(folder),
        num_labels=num_classes,
        ignore_mismatched_sizes=new_head,
        local_files_only=True,
    )
    return SequenceClassifier(model)
