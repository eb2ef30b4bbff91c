"""Bit flips, truncations, deletions and garbage in every kind of file distil writes.

Each file is produced once per module through the real code path (a tiny run, its
pretrained teacher, a teacher cache finished and one killed part-way), copied per example,
damaged by hypothesis (one flipped bit at any offset, a cut at any length, the file deleted,
emptied or replaced by random bytes) and read back through the real reader. The outcome is
either a distil error naming the file, or the documented fall-back with a warning naming it
(a training checkpoint falls back to the previous one; a cached pretrained model is trained
again; a missing seal is read unverified), or exactly the data that was written — never an
uncaught torch/safetensors/json/yaml exception, never silently different data.

The number of cases run per kind is printed at the end of the module (``pytest -s``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TINY_RECIPE, DiesAfter, Killed
from distil.cache.reader import TeacherCache
from distil.cache.writer import cache_teacher
from distil.config import load_config
from distil.data import load_data
from distil.data.datasets import in_order
from distil.errors import DistilError
from distil.models.causal_lm import tiny_causal_lm
from distil.models.language_model import LanguageModel
from distil.pipeline import run
from distil.pretrained import cached_model
from distil.report.runs import load_run
from distil.tasks import task_for
from distil.tasks.classifier_models import pretrained_teacher
from distil.teachers import ModuleTeacher
from distil.train.accelerator import make_accelerator
from distil.train.checkpoint import (
    load_model_state,
    load_training_state,
    read_pointer,
    usable_checkpoint,
)

#: Producing the files takes about a minute (a run, its teacher, two caches): the module is slow.
pytestmark = pytest.mark.slow

EXAMPLES = 20  # per file kind; the cheap kinds, read in milliseconds
RESUME_EXAMPLES = 6  # a partial cache's files: each example finishes the cache
COUNTS: dict[str, Counter] = defaultdict(Counter)


# ------------------------------------------------------------------------- what is written


@pytest.fixture(scope="module")
def produced(tmp_path_factory, lm_data) -> dict[str, Path]:
    """Every file kind, written once by the real code: a finished tiny run (checkpoints,
    pointers, best weights, metrics, recipe, log), its pretrained teacher, a complete teacher
    cache and one killed part-way."""
    root = tmp_path_factory.mktemp("produced")
    recipe = root / "tiny.yaml"
    recipe.write_text(TINY_RECIPE.replace("OUT", str(root / "run")))
    overrides = ["train.epochs=1", "train.checkpoint_every=4", "train.eval_every=4"]
    config = load_config(recipe, overrides)
    run(config, data=load_data(config.data))
    teacher_folder = pretrained_teacher(
        task_for(config), config.teachers["teacher"], make_accelerator()
    )
    shutil.copytree(teacher_folder, root / "pretrained" / "teacher")
    teacher = cache_teacher_model(lm_data)
    write_cache(teacher, lm_data, root / "cache" / "cache")
    with pytest.raises(Killed):
        write_cache(DiesAfter(teacher, 9), lm_data, root / "partial" / "cache")
    return {
        "run": root / "run", "pretrained": root / "pretrained", "cache": root / "cache",
        "partial": root / "partial",
    }  # fmt: skip


def cache_teacher_model(lm_data) -> ModuleTeacher:
    model = LanguageModel(tiny_causal_lm(lm_data.vocab_size, 32, 1, 2, seed=1), lm_data.vocab_size)
    return ModuleTeacher(model)


def cache_splits(lm_data) -> dict:
    return {"train": lm_data.train.subset(range(120)), "val": lm_data.val}


def write_cache(teacher, lm_data, folder: Path) -> None:
    settings_ = {
        "teacher_fingerprint": "tiny-seed-1",
        "tokenizer_fingerprint": lm_data.fingerprint,
        "vocab_size": lm_data.vocab_size,
    }
    cache_teacher(
        teacher, cache_splits(lm_data), folder, settings=settings_, k=16, codec="compact",
        shard_tokens=1500, batch_size=8,
    )  # fmt: skip


# ----------------------------------------------------------------- readers and fingerprints


def fingerprint(value: Any) -> str:
    """A digest of nested state in which tensors count by dtype, shape and bytes."""

    def plain(item: Any) -> Any:
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().contiguous()
            raw = item.reshape(-1).view(torch.uint8) if item.numel() else item
            digest = hashlib.sha256(raw.numpy().tobytes()).hexdigest()
            return f"tensor {item.dtype} {tuple(item.shape)} {digest}"
        if isinstance(item, dict):
            return {str(k): plain(v) for k, v in sorted(item.items(), key=lambda kv: str(kv[0]))}
        if isinstance(item, list | tuple):
            return [plain(v) for v in item]
        return item

    return hashlib.sha256(json.dumps(plain(value), sort_keys=True).encode()).hexdigest()


def read_resume(root: Path) -> Any:
    """What ``--resume`` reads: the checkpoint it picks and every state in it."""
    folder = usable_checkpoint(root / "run" / "checkpoints")
    return folder.name, fingerprint(load_training_state(folder, 0))


def read_best(root: Path) -> Any:
    """What ``distil eval --checkpoint best`` and the final metrics read."""
    checkpoints = root / "run" / "checkpoints"
    return read_pointer(checkpoints, "best"), fingerprint(load_model_state(checkpoints, "best"))


def read_report(root: Path) -> Any:
    """What ``distil report`` reads of a run folder."""
    record = load_run(root / "run")
    return fingerprint([record.config, record.metrics, record.history])


def pristine_files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.name != "checksums.json"}


def read_pretrained(root: Path, original: dict[str, bytes]) -> Any:
    """A cached pretrained model reused (or, damaged, set aside and trained again — here
    by copying the original files, as a retrain from the same seed gives them)."""
    folder = root / "pretrained" / "teacher"
    retrained = []

    def produce(work: Path, staging: Path) -> None:
        retrained.append(True)
        for name, data in original.items():
            (staging / name).write_bytes(data)

    assert cached_model(folder, complete="model.safetensors", produce=produce) == folder
    if retrained:  # the damaged folder is kept beside the fresh one, never deleted
        assert folder.with_name("teacher.damaged").is_dir()
    return bool(retrained), fingerprint(
        {name: hashlib.sha256(data).hexdigest() for name, data in pristine_files(folder).items()}
    )


def cached_logits(folder: Path, lm_data) -> str:
    """What a run reads of a cache: its settings (checked against the run's) and top-k."""
    cache = TeacherCache(folder)
    outputs: list[Any] = [cache.manifest.settings]
    for split, blocks in cache_splits(lm_data).items():
        batch = next(iter(in_order(blocks, len(blocks))))
        topk = cache.split(split).signal(batch).logits
        outputs.append([topk.indices, topk.logprobs])
    return fingerprint(outputs)


def read_resumed_cache(root: Path, lm_data, teacher) -> Any:
    """``distil cache-teacher`` resumed on a killed cache, then the finished cache read."""
    write_cache(teacher, lm_data, root / "partial" / "cache")
    return cached_logits(root / "partial" / "cache", lm_data)


# --------------------------------------------------------------------------- the file kinds


@dataclass
class Kind:
    name: str
    source: str  # which produced folder holds it
    file: str  # the path to damage, relative to the per-example root (glob allowed)
    read: str  # the reader (a key of READERS)


def kinds() -> list[Kind]:
    last, best = "run/checkpoints/{last}", "run/checkpoints/{best}"
    listed = [
        *(
            Kind(f"checkpoint {f}", "run", f"{last}/{f}", "resume")
            for f in (
                "model.safetensors",
                "method.safetensors",
                "optimizer.safetensors",
                "optimizer.json",
                "trainer.json",
                "rank0.json",
                "rank0.safetensors",
                "checksums.json",
                "pointer.json",
            )
        ),  # fmt: skip
        Kind("pointer last.json", "run", "run/checkpoints/last.json", "resume"),
        Kind("pointer previous.json", "run", "run/checkpoints/previous.json", "resume"),
        Kind("pointer best.json", "run", "run/checkpoints/best.json", "best"),
        Kind("best model.safetensors", "run", f"{best}/model.safetensors", "best"),
        Kind("best checksums.json", "run", f"{best}/checksums.json", "best"),
        Kind("run metrics.json", "run", "run/metrics.json", "report"),
        Kind("run metrics.jsonl", "run", "run/metrics.jsonl", "report"),
        Kind("run config.yaml", "run", "run/config.yaml", "report"),
        Kind("run checksums.json", "run", "run/checksums.json", "report"),
        Kind(
            "pretrained model.safetensors",
            "pretrained",
            "pretrained/teacher/model.safetensors",
            "pretrained",
        ),  # fmt: skip
        Kind(
            "pretrained teacher.json", "pretrained", "pretrained/teacher/teacher.json", "pretrained"
        ),  # fmt: skip
        Kind(
            "pretrained checksums.json",
            "pretrained",
            "pretrained/teacher/checksums.json",
            "pretrained",
        ),  # fmt: skip
        Kind("cache manifest.json", "cache", "cache/cache/manifest.json", "cache"),
        Kind("cache checksums.json", "cache", "cache/cache/checksums.json", "cache"),
        Kind("cache train shard", "cache", "cache/cache/train-r000-00000.safetensors", "cache"),
        Kind("cache val shard", "cache", "cache/cache/val-r000-00000.safetensors", "cache"),
        *(
            Kind(f"partial cache {f}", "partial", f"partial/cache/{f}", "resume-cache")
            for f in (
                "cache-settings.json",
                "checksums-r000.json",
                "train-r000-00000.safetensors",
            )
        ),  # fmt: skip
    ]
    return listed


KINDS = kinds()


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    total = sum(sum(c.values()) for c in COUNTS.values())
    print(f"\nfile fuzz: {total} damaged files read back")
    for name, outcomes in COUNTS.items():
        print(f"  {name}: {sum(outcomes.values())} cases ({dict(sorted(outcomes.items()))})")


@pytest.fixture(scope="module")
def references(produced, lm_data) -> dict[str, Any]:
    """What each reader gives on the undamaged files, and its documented fall-back."""
    checkpoints = produced["run"] / "checkpoints"
    names = {
        "last": read_pointer(checkpoints, "last")["dir"],
        "previous": read_pointer(checkpoints, "previous")["dir"],
        "best": read_pointer(checkpoints, "best")["dir"],
    }
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for name, folder in produced.items():
            shutil.copytree(folder, root / name if name != "run" else root / "run")
        original = pristine_files(root / "pretrained" / "teacher")
        previous = checkpoints / names["previous"]
        return {
            "names": names,
            "original": original,
            "resume": [read_resume(root)],
            "resume fallback": [(previous.name, fingerprint(load_training_state(previous, 0)))],
            "best": [read_best(root)],
            "report": [read_report(root)],
            "pretrained": [read_pretrained(root, original)],
            "pretrained fallback": [(True, read_pretrained(root, original)[1])],
            "cache": [cached_logits(root / "cache" / "cache", lm_data)],
            "resume-cache": [cached_logits(root / "cache" / "cache", lm_data)],
        }


def damage(path: Path, data) -> str:
    """Apply one hypothesis-drawn damage to ``path``; returns its label."""
    size = path.stat().st_size
    how = data.draw(st.sampled_from(["flip", "truncate", "delete", "empty", "garbage"]))
    if how == "flip":
        offset, bit = data.draw(st.integers(0, size - 1)), data.draw(st.integers(0, 7))
        raw = bytearray(path.read_bytes())
        raw[offset] ^= 1 << bit
        path.write_bytes(bytes(raw))
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: data.draw(st.integers(0, size - 1))])
    elif how == "delete":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    else:
        garbage = data.draw(st.binary(min_size=1, max_size=256))
        if garbage == path.read_bytes():
            garbage += b"\0"
        path.write_bytes(garbage)
    return how


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class World:
    """The module's produced files, references and data (one short repr for hypothesis)."""

    def __init__(self, produced, references, lm_data) -> None:
        self.produced, self.references, self.lm_data = produced, references, lm_data

    def __repr__(self) -> str:
        return "world"


@pytest.fixture(scope="module")
def world(produced, references, lm_data) -> World:
    return World(produced, references, lm_data)


def check_damage(kind: Kind, world: World, data) -> None:
    """Damage one copy of ``kind``'s file and read it back: a distil error naming the file,
    the documented fall-back with a warning naming it, or exactly the data written."""
    produced, references, lm_data = world.produced, world.references, world.lm_data
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        shutil.copytree(produced[kind.source], root / kind.source)
        target = root / kind.file.format(**references["names"])
        how = damage(target, data)
        warnings = Warnings()
        logger = logging.getLogger("distil")
        logger.addHandler(warnings)
        try:
            result = READERS[kind.read](root, references, lm_data)
        except DistilError as error:
            COUNTS[kind.name][f"{how}: error"] += 1
            assert target.name in str(error), f"the error does not name {target.name}: {error}"
            return
        except (Killed, AssertionError):
            raise
        except Exception as error:  # noqa: BLE001 — exactly what must never reach the user
            pytest.fail(f"{kind.name}, {how}: uncaught {type(error).__name__}: {error}")
        finally:
            logger.removeHandler(warnings)
        warned = " ".join(warnings.messages)
        if result in references[kind.read]:
            COUNTS[kind.name][f"{how}: same data"] += 1
            return
        fallbacks = references.get(f"{kind.read} fallback", [])
        assert result in fallbacks, f"{kind.name}, {how}: read back as other data, silently"
        assert target.name in warned, f"the fall-back warning does not name {target.name}: {warned}"
        COUNTS[kind.name][f"{how}: fall-back"] += 1


QUICK = [k for k in KINDS if k.read != "resume-cache"]
RESUMED = [k for k in KINDS if k.read == "resume-cache"]


@pytest.mark.parametrize("kind", QUICK, ids=[k.name for k in QUICK])
@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(data=st.data())
def test_a_damaged_file_is_named_or_falls_back_never_read_as_other_data(kind, world, data):
    check_damage(kind, world, data)


@pytest.mark.parametrize("kind", RESUMED, ids=[k.name for k in RESUMED])
@settings(max_examples=RESUME_EXAMPLES, deadline=None, database=None)
@given(data=st.data())
def test_a_damaged_partial_cache_is_named_or_finished_as_if_intact(kind, world, data):
    check_damage(kind, world, data)


READERS: dict[str, Callable[[Path, dict, Any], Any]] = {
    "resume": lambda root, refs, lm_data: read_resume(root),
    "best": lambda root, refs, lm_data: read_best(root),
    "report": lambda root, refs, lm_data: read_report(root),
    "pretrained": lambda root, refs, lm_data: read_pretrained(root, refs["original"]),
    "cache": lambda root, refs, lm_data: cached_logits(root / "cache" / "cache", lm_data),
    "resume-cache": lambda root, refs, lm_data: read_resumed_cache(
        root, lm_data, cache_teacher_model(lm_data)
    ),
}
