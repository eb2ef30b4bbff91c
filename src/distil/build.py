"""Build a run's parts from its recipe: the student, and the teacher with its weights.

A teacher comes from a weights file, or — with ``teacher.pretrain`` — is trained here once
with plain supervision and cached under the user cache folder, keyed by a hash of everything
that determines it (model, options, data, pretraining settings). The second run is free.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import save_file
from torch import nn

from distil import __version__
from distil.config import RunConfig, StudentConfig
from distil.data import DataConfig, DataSplits, load_data
from distil.errors import ConfigError
from distil.methods import build_method
from distil.models import build_model
from distil.paths import cache_dir
from distil.teachers import DTYPES, ModuleTeacher
from distil.train import TrainConfig, Trainer
from distil.train.checkpoint import load_into, load_model_state, read_pointer
from distil.train.state_io import read_tensors

log = logging.getLogger("distil")


def build_network(config: StudentConfig, data: DataSplits) -> nn.Module:
    """The model a student/teacher section names, sized to the data, with its weights."""
    model = build_model(
        config.model, input_shape=data.input_shape, num_classes=data.num_classes, **config.options
    )
    if config.weights:
        load_weights(model, Path(config.weights))
    return model


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights, naming the file and the mismatching keys on failure."""
    load_into(model, read_tensors(path), path)


def build_teacher(
    config: RunConfig, data: DataSplits, accelerator: Accelerator
) -> ModuleTeacher | None:
    """The frozen teacher of a run, or None when the recipe has none."""
    teacher_config = config.teacher
    if teacher_config is None:
        return None
    model = build_network(teacher_config, data)
    if not teacher_config.weights:
        if teacher_config.pretrain is None:
            raise ConfigError(
                "teacher: give teacher.weights (a safetensors file) or teacher.pretrain "
                "(train it here first); an untrained teacher teaches nothing"
            )
        cached = pretrained_teacher_state(config, accelerator)
        load_into(model, cached, teacher_cache_folder(config) / "model.safetensors")
    device = teacher_config.device or accelerator.device
    return ModuleTeacher(model, device=device, dtype=DTYPES[teacher_config.dtype])


def teacher_cache_key(config: RunConfig) -> str:
    """Hash of everything that determines a pretrained teacher."""
    teacher = config.teacher
    identity = {
        "model": teacher.model,
        "options": teacher.options,
        "data": teacher_data_config(config).model_dump(mode="json"),
        "pretrain": teacher.pretrain.model_dump(mode="json"),
        "distil": __version__,  # model code may change between versions
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def teacher_cache_folder(config: RunConfig) -> Path:
    """Where the recipe's pretrained teacher is cached."""
    return cache_dir() / "teachers" / f"{config.teacher.model}-{teacher_cache_key(config)}"


def teacher_data_config(config: RunConfig) -> DataConfig:
    """The data the teacher pretrains on: the recipe's, with the teacher's own train_limit."""
    return config.data.model_copy(update={"train_limit": config.teacher.pretrain.train_limit})


def pretrained_teacher_state(
    config: RunConfig, accelerator: Accelerator
) -> dict[str, torch.Tensor]:
    """Weights of the recipe's teacher trained with supervision, from cache or trained now."""
    folder = teacher_cache_folder(config)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        log.info("training the teacher %s once; cached in %s", config.teacher.model, folder)
        _train_teacher(config, accelerator, folder)
    accelerator.wait_for_everyone()
    return read_tensors(weights)


def _train_teacher(config: RunConfig, accelerator: Accelerator, folder: Path) -> None:
    pretrain = config.teacher.pretrain
    data = load_data(teacher_data_config(config))
    set_seed(pretrain.seed)
    model = build_model(
        config.teacher.model,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        **config.teacher.options,
    )
    work = folder.with_name(folder.name + ".training")
    train_config = TrainConfig(
        seed=pretrain.seed,
        epochs=pretrain.epochs,
        batch_size=pretrain.batch_size,
        lr=pretrain.lr,
        weight_decay=pretrain.weight_decay,
        progress=config.train.progress,
        balance_every=0,
    )
    trainer = Trainer(
        model,
        build_method({"name": "supervised"}),
        train_data=data.train,
        val_data=data.val,
        config=train_config,
        output_dir=work,
        accelerator=accelerator,
    )
    trainer.fit(resume=True)
    if accelerator.is_main_process:
        best = load_model_state(work / "checkpoints", "best")
        staging = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        save_file(best, str(staging / "model.safetensors"))
        (staging / "teacher.json").write_text(
            json.dumps(
                {
                    "recipe": config.teacher.model_dump(mode="json"),
                    "data": teacher_data_config(config).model_dump(mode="json"),
                    "best_step": read_pointer(work / "checkpoints", "best")["step"],
                },
                indent=1,
            )
        )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
        shutil.rmtree(work, ignore_errors=True)
