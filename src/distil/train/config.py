"""Typed settings of the one training loop (the ``train:`` section of a recipe)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainConfig(BaseModel):
    """How long, how fast and how carefully to train; every field has a safe default."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="seed of weights, data order, dropout")
    epochs: int = Field(10, ge=1, description="passes over the training split")
    max_steps: int | None = Field(
        None, ge=1, description="stop after this many optimizer steps (overrides epochs)"
    )
    batch_size: int = Field(64, ge=1, description="global batch size per optimizer step")
    grad_accum_steps: int = Field(1, ge=1, description="micro-batches accumulated per step")
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    schedule: Literal["constant", "cosine", "linear"] = Field(
        "cosine", description="decay after warmup"
    )
    warmup_steps: int = Field(0, ge=0, description="linear warmup from 0 to lr")
    max_grad_norm: float | None = Field(None, gt=0.0, description="clip the global gradient norm")
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    eval_every: int | None = Field(
        None, ge=1, description="validate every N steps (default: each epoch)"
    )
    checkpoint_every: int | None = Field(
        None, ge=1, description="save 'last' every N steps (default: each epoch)"
    )
    log_every: int = Field(10, ge=1, description="write a metrics.jsonl row every N steps")
    balance_every: int = Field(
        50, ge=0, description="measure each loss part's gradient share every N steps (0: off)"
    )
    balance_warn_share: float = Field(
        0.98,
        gt=0.5,
        le=1.0,
        description="warn when one part carries this mean share of the gradient norm",
    )
    progress: bool = Field(True, description="show a live progress bar")

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainConfig:
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"train.batch_size={self.batch_size} must be divisible by "
                f"train.grad_accum_steps={self.grad_accum_steps}"
            )
        return self
