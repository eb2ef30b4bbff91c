"""Students and teachers of the classification task, built from their recipe sections.

A teacher comes from a weights file, or — with ``pretrain`` — is trained here once with
plain supervision and kept in the pretrained-model cache (:mod:`distil.pretrained`), keyed by
a hash of everything that determines it (model, options, data, pretraining settings).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import save_file
from torch import nn

from distil import __version__
from distil.data import DataConfig, DataSplits, load_data
from distil.errors import ConfigError
from distil.eval.validators import ClassificationValidator
from distil.models import build_model
from distil.pretrained import cache_folder, cached_model, content_key, pretrain_supervised
from distil.teachers import DTYPES, ModuleTeacher
from distil.train.checkpoint import load_into
from distil.train.config import TrainConfig
from distil.train.state_io import read_tensors

if TYPE_CHECKING:
    from distil.tasks.classification import ClassificationTask, StudentConfig, TeacherConfig


def build_network(spec: StudentConfig, data: DataSplits) -> nn.Module:
    """The model a student/teacher section names, sized to the data, with its weights."""
    model = build_model(
        spec.model, input_shape=data.input_shape, num_classes=data.num_classes, **spec.options
    )
    if spec.weights:
        load_weights(model, Path(spec.weights), data)
    return model


def load_weights(model: nn.Module, path: Path, data: DataSplits | None = None) -> None:
    """Load safetensors weights, naming the file and the mismatching keys on failure; weights
    whose output layer scores another number of classes than ``data`` has are named as that
    (a 10-class teacher on 3-class data), not as a shape mismatch of some tensor."""
    state = read_tensors(path)
    expected = model.state_dict()
    resized = {
        k: state[k].shape for k in expected if k in state and state[k].shape != expected[k].shape
    }
    scored = {shape[0] for shape in resized.values() if len(shape) >= 1}
    if (
        data is not None
        and resized
        and len(scored) == 1
        and all(
            expected[k].ndim == len(shape) >= 1
            and expected[k].shape[0] == data.num_classes
            and expected[k].shape[1:] == shape[1:]
            for k, shape in resized.items()
        )
    ):  # only the output layer differs, in its number of rows: another label set
        names = getattr(data, "class_names", None) or []
        shown = f" ({', '.join(names[:10])}{' …' if len(names) > 10 else ''})" if names else ""
        raise ConfigError(
            f"{path}: these weights score {scored.pop()} classes but the data has "
            f"{data.num_classes}{shown}; a teacher must be trained on the data's label set "
            "(data.classes or data.class_groups can map the data onto it)"
        )
    load_into(model, state, path)


def build_teacher(
    task: ClassificationTask, name: str, spec: TeacherConfig, data: DataSplits,
    accelerator: Accelerator,
) -> ModuleTeacher:  # fmt: skip
    """The frozen teacher a section describes, on its own device and dtype."""
    model = build_network(spec, data)
    if not spec.weights:
        if spec.pretrain is None:
            raise ConfigError(
                f"teachers.{name}: give weights (a safetensors file) or pretrain (train it "
                "here first); an untrained teacher teaches nothing"
            )
        folder = pretrained_teacher(task, spec, accelerator)
        load_into(model, read_tensors(folder / "model.safetensors"), folder / "model.safetensors")
    device = spec.device or accelerator.device
    return ModuleTeacher(model, device=device, dtype=DTYPES[spec.dtype])


def teacher_data_config(data: DataConfig, spec: TeacherConfig) -> DataConfig:
    """The data a teacher pretrains on: the recipe's, with the teacher's own train_limit."""
    return data.model_copy(update={"train_limit": spec.pretrain.train_limit})


def teacher_cache_key(data: DataConfig, spec: TeacherConfig) -> str:
    """Hash of everything that determines a pretrained teacher."""
    return content_key(
        {
            "model": spec.model,
            "options": spec.options,
            "data": teacher_data_config(data, spec).model_dump(mode="json"),
            "pretrain": spec.pretrain.model_dump(mode="json"),
            "distil": __version__,  # model code may change between versions
        }
    )


def pretrained_teacher(
    task: ClassificationTask, spec: TeacherConfig, accelerator: Accelerator
) -> Path:
    """The cache folder of a section's teacher trained with supervision (trained now if new)."""
    data_config = teacher_data_config(task.config.data, spec)
    folder = cache_folder("teachers", f"{spec.model}-{teacher_cache_key(task.config.data, spec)}")

    def produce(work: Path, staging: Path) -> None:
        pretrain = spec.pretrain
        data = load_data(data_config)
        set_seed(pretrain.seed)
        model = build_model(
            spec.model, input_shape=data.input_shape, num_classes=data.num_classes, **spec.options
        )
        train_config = TrainConfig(
            seed=pretrain.seed, epochs=pretrain.epochs, batch_size=pretrain.batch_size,
            lr=pretrain.lr, weight_decay=pretrain.weight_decay,
            progress=task.config.train.progress, balance_every=0,
        )  # fmt: skip
        best, best_step = pretrain_supervised(
            model, task, train_data=data.train, data=data,
            validator=ClassificationValidator(data.val, None, batch_size=512, ece_bins=15),
            select_metric="accuracy", config=train_config, work=work, accelerator=accelerator,
        )  # fmt: skip
        if accelerator.is_main_process:
            save_file(best, str(staging / "model.safetensors"))
            record: dict[str, Any] = {
                "recipe": spec.model_dump(mode="json"),
                "data": data_config.model_dump(mode="json"),
                "best_step": best_step,
            }
            (staging / "teacher.json").write_text(json.dumps(record, indent=1))

    return cached_model(
        folder, complete="model.safetensors", produce=produce, accelerator=accelerator
    )
