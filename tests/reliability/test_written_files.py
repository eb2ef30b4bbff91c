"""Every file distil writes is checked when it is read back: pretrained models, run folders'
recipe, metrics and step log, checkpoint pointers, teacher caches (resumed and merged) —
damage is an error or a warning naming the file, never a silent load of other data."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from conftest import TINY_RECIPE, DiesAfter, Killed
from distil.cache.manifest import MANIFEST, STARTED, Manifest
from distil.cache.reader import TeacherCache
from distil.cache.writer import cache_teacher
from distil.config import load_config
from distil.data import load_data
from distil.errors import CheckpointError, ConfigError, DataError
from distil.eval.checkpointed import evaluate_run
from distil.models.causal_lm import tiny_causal_lm
from distil.models.language_model import LanguageModel
from distil.pipeline import run
from distil.pretrained import cached_model
from distil.report.runs import load_run
from distil.tasks import task_for
from distil.tasks.classifier_models import pretrained_teacher
from distil.teachers import ModuleTeacher
from distil.train.accelerator import make_accelerator
from distil.train.checkpoint import load_model_state, read_pointer
from distil.train.progress import MetricsLog

OVERRIDES = ["train.epochs=1", "train.checkpoint_every=4", "train.eval_every=4"]


def flip_a_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    path.write_bytes(bytes(data))


def recipe_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.yaml"
    path.write_text(TINY_RECIPE.replace("OUT", str(folder / "run")))
    return path


# ---------------------------------------------------------------------- pretrained models


def test_a_damaged_cached_teacher_is_set_aside_and_trained_again(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DISTIL_CACHE_DIR", str(tmp_path / "cache"))
    config = load_config(recipe_file(tmp_path), ["teacher.pretrain.epochs=1"])
    task, spec, accelerator = task_for(config), config.teachers["teacher"], make_accelerator()
    folder = pretrained_teacher(task, spec, accelerator)
    weights = folder / "model.safetensors"
    original = weights.read_bytes()
    flip_a_byte(weights)
    damaged = weights.read_bytes()
    with caplog.at_level(logging.WARNING, logger="distil"):
        assert pretrained_teacher(task, spec, accelerator) == folder
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert f"{weights}: damaged" in warned and "pretraining it again" in warned
    assert weights.read_bytes() == original  # trained again, from the same seed
    aside = folder.with_name(folder.name + ".damaged")
    assert (aside / "model.safetensors").read_bytes() == damaged  # kept, not deleted


def test_cached_model_reuses_a_sealed_folder_and_retrains_an_unverifiable_one(tmp_path, caplog):
    calls = []

    def produce(work: Path, staging: Path) -> None:
        calls.append(work)
        (staging / "model.bin").write_bytes(b"weights %d" % len(calls))

    folder = tmp_path / "models" / "m-1"
    neighbour = tmp_path / "models" / "m-2"
    neighbour.mkdir(parents=True)
    (neighbour / "model.bin").write_bytes(b"other work")
    assert cached_model(folder, complete="model.bin", produce=produce) == folder
    assert cached_model(folder, complete="model.bin", produce=produce) == folder
    assert len(calls) == 1  # reused: it verifies
    (folder / "checksums.json").unlink()  # cannot be verified any more
    with caplog.at_level(logging.WARNING, logger="distil"):
        cached_model(folder, complete="model.bin", produce=produce)
    assert len(calls) == 2 and "checksums.json: missing" in caplog.text
    assert (folder / "model.bin").read_bytes() == b"weights 2"
    assert (folder.with_name("m-1.damaged") / "model.bin").read_bytes() == b"weights 1"
    assert (neighbour / "model.bin").read_bytes() == b"other work"


def test_a_damaged_cached_tiny_lm_is_trained_again_not_loaded(
    lm_data, tmp_path, monkeypatch, caplog
):
    from distil.lm.config import LMModelConfig
    from distil.lm.resolve import pretrained_folder

    monkeypatch.setenv("DISTIL_CACHE_DIR", str(tmp_path / "cache"))
    config = LMModelConfig(
        tiny={"hidden": 16, "layers": 1, "heads": 2},
        pretrain={"steps": 4, "batch_size": 8, "lr": 0.005},
    )
    data = lm_data.teacher_train.subset(range(32))
    folder = pretrained_folder(config, lm_data.tokenizer, data, "teacher")
    assert (folder / "checksums.json").is_file()  # sealed: HF weights, config, tokenizer
    weights = folder / "model.safetensors"
    original = weights.read_bytes()
    flip_a_byte(weights, 0.9)
    with caplog.at_level(logging.WARNING, logger="distil"):
        assert pretrained_folder(config, lm_data.tokenizer, data, "teacher") == folder
    assert f"{weights}: damaged" in caplog.text and "pretraining it again" in caplog.text
    assert weights.read_bytes() == original
    assert folder.with_name(folder.name + ".damaged").is_dir()


# ---------------------------------------------------------------------------- run folders


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One finished tiny run (checkpoints at steps 4 and 8, best weights, metrics)."""
    folder = tmp_path_factory.mktemp("finished")
    config = load_config(recipe_file(folder), [*OVERRIDES, f"output.dir={folder / 'run'}"])
    return run(config, data=load_data(config.data)).run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def test_edited_final_metrics_are_refused_by_report_and_eval(run_copy):
    metrics_path = run_copy / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["last"]["test"]["accuracy"] = 0.999  # valid JSON, another result
    metrics_path.write_text(json.dumps(metrics, indent=1))
    with pytest.raises(DataError, match=f"{metrics_path}: damaged"):
        load_run(run_copy)
    with pytest.raises(DataError, match=f"{metrics_path}: damaged"):
        evaluate_run(run_copy)


def test_an_edited_recipe_is_refused_on_resume_and_a_deleted_seal_only_warns(run_copy, caplog):
    config_path = run_copy / "config.yaml"
    recipe = load_config(config_path, [f"output.dir={run_copy}"])
    written = config_path.read_text()
    config_path.write_text(written.replace("lr: 0.005", "lr: 0.05", 1))
    with pytest.raises(DataError, match=f"{config_path}: damaged"):
        run(recipe, resume=True)
    with pytest.raises(DataError, match=f"{config_path}: damaged"):
        load_run(run_copy)
    config_path.write_text(written)
    record = load_run(run_copy)
    (run_copy / "checksums.json").unlink()
    with caplog.at_level(logging.WARNING, logger="distil"):
        unsealed = load_run(run_copy)
    assert "not verified" in caplog.text
    assert unsealed.metrics == record.metrics and unsealed.history == record.history


def test_a_finished_runs_seal_must_list_every_run_file(run_copy):
    seal = run_copy / "checksums.json"
    recorded = json.loads(seal.read_text())
    del recorded["config.yaml"]  # valid JSON; the recipe no longer vouched for
    seal.write_text(json.dumps(recorded))
    config_path = run_copy / "config.yaml"
    config_path.write_text(config_path.read_text().replace("lr: 0.005", "lr: 0.05", 1))
    with pytest.raises(DataError, match=f"{seal}: does not list config.yaml"):
        load_run(run_copy)


def test_an_edited_pointer_is_refused(run_copy):
    checkpoints = run_copy / "checkpoints"
    best = checkpoints / "best.json"
    pointer = json.loads(best.read_text())
    pointer["step"] += 4  # still a valid pointer, to another step
    best.write_text(json.dumps(pointer))
    with pytest.raises(CheckpointError, match=f"{best}: differs from the record sealed"):
        read_pointer(checkpoints, "best")


def test_a_file_its_seal_does_not_list_is_refused(run_copy):
    checkpoints = run_copy / "checkpoints"
    folder = checkpoints / read_pointer(checkpoints, "last")["dir"]
    seal = folder / "checksums.json"
    recorded = json.loads(seal.read_text())
    del recorded["model.safetensors"]  # valid JSON, one file no longer vouched for
    seal.write_text(json.dumps(recorded))
    flip_a_byte(folder / "model.safetensors", 0.9)
    with pytest.raises(CheckpointError, match=f"{seal}: does not list model.safetensors"):
        load_model_state(checkpoints, "last")


def test_a_resumed_log_drops_a_torn_last_line_and_refuses_a_damaged_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"kind": "train", "step": step, "loss": 1.0 / step} for step in (1, 2, 3, 4)]
    whole = "".join(json.dumps(row) + "\n" for row in rows)
    path.write_text(whole + '{"kind": "train", "st')  # the kill cut the step-5 row
    MetricsLog(path, enabled=True, resume_step=3)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]
    path.write_text(whole.replace('"step": 2', '"step"! 2'))
    with pytest.raises(DataError, match=f"{path}:2: not valid JSON"):
        MetricsLog(path, enabled=True, resume_step=3)


# -------------------------------------------------------------------------- teacher caches


@pytest.fixture(scope="module")
def teacher(lm_data):
    model = LanguageModel(tiny_causal_lm(lm_data.vocab_size, 32, 1, 2, seed=1), lm_data.vocab_size)
    return ModuleTeacher(model)


def settings_of(lm_data, teacher="tiny-seed-1", tokenizer=None):
    return {
        "teacher_fingerprint": teacher,
        "tokenizer_fingerprint": tokenizer or lm_data.fingerprint,
        "vocab_size": lm_data.vocab_size,
    }


def write(teacher, lm_data, folder, *, settings=None, codec="plain", k=16, **options):
    splits = {"train": lm_data.train.subset(range(120)), "val": lm_data.val}
    return cache_teacher(
        teacher, splits, folder, settings=settings or settings_of(lm_data), k=k, codec=codec,
        shard_tokens=1500, batch_size=8, **options,
    )  # fmt: skip


def test_a_resumed_cache_verifies_the_shards_it_keeps(teacher, lm_data, tmp_path):
    with pytest.raises(Killed):
        write(DiesAfter(teacher, 9), lm_data, tmp_path)
    shard = sorted(tmp_path.glob("train-*.safetensors"))[0]
    flip_a_byte(shard, 0.9)
    with pytest.raises(DataError, match=f"{shard}: damaged"):
        write(DiesAfter(teacher, 0), lm_data, tmp_path)  # refused before any new work


def test_the_merge_refuses_a_shard_damaged_after_it_was_written(teacher, lm_data, tmp_path):
    write(teacher, lm_data, tmp_path, rank=1, world_size=2)  # rank 0 merges
    shard = sorted(tmp_path.glob("train-r001-*.safetensors"))[-1]
    flip_a_byte(shard, 0.9)
    with pytest.raises(DataError, match=f"{shard}: damaged"):
        write(teacher, lm_data, tmp_path, rank=0, world_size=2)
    assert not (tmp_path / MANIFEST).exists()


@pytest.mark.parametrize(
    "setting, change, shown",
    [
        ("teacher", {"settings": "teacher"}, "'tiny-seed-1' → 'tiny-seed-2'"),
        ("tokenizer", {"settings": "tokenizer"}, "→ '0000"),
        ("k", {"k": 8}, "k: 16 → 8"),
        ("codec", {"codec": "compact"}, "'name': 'plain'"),
        ("temperature", {"record": {"temperature": 0.5}}, "temperature: 0.5 → 1.0"),
    ],
)
def test_a_resume_with_another_setting_is_refused_showing_both_values(
    teacher, lm_data, tmp_path, setting, change, shown
):
    with pytest.raises(Killed):
        write(DiesAfter(teacher, 3), lm_data, tmp_path)
    options: dict = {}
    if change.get("settings") == "teacher":
        options["settings"] = settings_of(lm_data, teacher="tiny-seed-2")
    elif change.get("settings") == "tokenizer":
        options["settings"] = settings_of(lm_data, tokenizer="0" * 64)
    elif "record" in change:  # a cache started by a writer with another temperature
        record = json.loads((tmp_path / STARTED).read_text()) | change["record"]
        (tmp_path / STARTED).write_text(json.dumps(record))
    else:
        options.update(change)
    with pytest.raises(DataError, match="started with other settings") as refused:
        write(teacher, lm_data, tmp_path, **options)
    assert shown in str(refused.value)
    if setting == "codec":
        assert "'name': 'compact'" in str(refused.value)


def test_a_lost_settings_record_is_refused_while_shards_exist(teacher, lm_data, tmp_path):
    with pytest.raises(Killed):
        write(DiesAfter(teacher, 9), lm_data, tmp_path)
    (tmp_path / STARTED).unlink()
    with pytest.raises(DataError, match=f"{tmp_path / STARTED}: missing while"):
        write(teacher, lm_data, tmp_path)


def test_an_edited_manifest_is_refused_and_a_reader_shows_both_fingerprints(
    teacher, lm_data, tmp_path
):
    write(teacher, lm_data, tmp_path)
    cache = TeacherCache(tmp_path)
    with pytest.raises(ConfigError) as refused:
        cache.check_matches(tokenizer_fingerprint="0" * 64, teacher_fingerprint=None)
    assert lm_data.fingerprint[:12] in str(refused.value) and "0" * 12 in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        cache.check_matches(tokenizer_fingerprint=lm_data.fingerprint, teacher_fingerprint="x" * 64)
    assert "tiny-seed-1"[:12] in str(refused.value) and "x" * 12 in str(refused.value)
    manifest = tmp_path / MANIFEST
    payload = json.loads(manifest.read_text())
    payload["k"] = 8  # valid JSON: the shards would be decoded as another k
    manifest.write_text(json.dumps(payload, indent=2))
    with pytest.raises(DataError, match=f"{manifest}: damaged"):
        Manifest.read(tmp_path)
