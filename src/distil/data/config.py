"""The ``data:`` section of a recipe: which dataset, where its file is, and how to split it.

Only settings live here; loading is in ``builtin.py`` and splitting in ``splits.py``. The split
has its own ``split_seed`` so that runs trained with different seeds are still scored on the
same test samples.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from distil.data.augment import AugmentConfig
from distil.registry import did_you_mean


class DataConfig(BaseModel):
    """Which dataset to load and how to cut it into train, validation and test sets."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(
        default="digits", description="Registered dataset name (see DATASETS.names())."
    )
    path: str | None = Field(
        default=None, description="CSV or JSONL file to read, for the 'file' dataset."
    )
    label_field: str = Field(
        default="label", description="Column holding each row's class (int id or string name)."
    )
    label_kind: Literal["auto", "id", "name"] = Field(
        default="auto",
        description="How file labels are read: 'id' (non-negative integers), 'name' (any "
        "string, numbered in sorted order) or 'auto' (ids when every label is one; a few "
        "non-integers among integers are an error, not new classes)",
    )
    classes: list[str] | None = Field(
        default=None, min_length=2,
        description="The file's class names in id order; a label outside them is an error",
    )  # fmt: skip
    text_field: str | None = Field(
        default=None, description="Column holding text to tokenize instead of numeric features."
    )
    feature_fields: list[str] | None = Field(
        default=None, description="Numeric feature columns; default: every non-label column."
    )
    tokenizer: str | None = Field(
        default=None, description="Local Hugging Face tokenizer folder, needed with text_field."
    )
    max_length: int = Field(
        default=128, gt=0, description="Tokens per text after padding or truncation."
    )
    val_fraction: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="Share of samples held out for validation."
    )
    test_fraction: float = Field(
        default=0.2,
        ge=0.0,
        lt=1.0,
        description="Share held out for testing, for datasets without their own test split.",
    )
    split_seed: int = Field(
        default=0, description="Seed of the split alone, independent of the training seed."
    )
    train_limit: int | None = Field(
        default=None,
        gt=0,
        description="Keep only this many training samples (stratified), for few-data runs.",
    )

    class_groups: list[list[int]] | None = Field(
        default=None,
        description="Merge classes into groups, e.g. [[0,1,2,3,4],[5,6,7,8,9]] turns digits "
        "into the binary task 'below 5 vs 5 and above' (few-class distillation).",
    )
    augment: AugmentConfig | None = Field(
        default=None,
        description="Random shifts/flips of training inputs, drawn anew each time a sample is "
        "used (e.g. {shift: 2}); validation and test inputs are never augmented.",
    )

    @model_validator(mode="after")
    def _groups_are_a_partition(self) -> DataConfig:
        if self.class_groups is not None:
            members = [c for group in self.class_groups for c in group]
            if len(self.class_groups) < 2 or any(not group for group in self.class_groups):
                raise ValueError("class_groups needs at least two non-empty groups")
            if len(members) != len(set(members)):
                raise ValueError(f"class_groups must not repeat a class: {self.class_groups}")
        return self

    @field_validator("dataset")
    @classmethod
    def _registered_dataset(cls, name: str, info: ValidationInfo) -> str:
        """Refused while a recipe is read (``data.dataset: unknown dataset …``), not after
        the run folder exists and teachers are being built. A config built in Python is
        checked by ``load_data`` (a dataset may be registered after it is made)."""
        from distil.data import DATASETS  # importing it registers the built-in datasets

        if (info.context or {}).get("recipe") and name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}{did_you_mean(name, DATASETS.names())}")
        return name

    @model_validator(mode="after")
    def _classes_are_distinct(self) -> DataConfig:
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            repeated = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise ValueError(f"classes must not repeat a name: {repeated}")
        return self

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be below 1 so some samples remain for "
                f"training; got {self.val_fraction} + {self.test_fraction}"
            )
        return self
