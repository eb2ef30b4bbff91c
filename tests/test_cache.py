"""The offline teacher cache: round trip, integrity, resume after a kill, rank shards."""

from __future__ import annotations

import pytest
import torch

from conftest import DiesAfter, Killed
from distil.cache.manifest import MANIFEST, Manifest
from distil.cache.reader import TeacherCache
from distil.cache.writer import cache_teacher
from distil.data.datasets import in_order
from distil.errors import ConfigError, DataError
from distil.models.causal_lm import tiny_causal_lm
from distil.models.language_model import LanguageModel
from distil.teachers import ModuleTeacher


@pytest.fixture(scope="module")
def teacher(lm_data):
    model = LanguageModel(tiny_causal_lm(lm_data.vocab_size, 32, 1, 2, seed=1), lm_data.vocab_size)
    return ModuleTeacher(model)


def settings_of(lm_data, teacher="tiny-seed-1"):
    return {
        "teacher_fingerprint": teacher,
        "tokenizer_fingerprint": lm_data.fingerprint,
        "vocab_size": lm_data.vocab_size,
    }


def write(teacher, lm_data, folder, *, codec="plain", k=16, shard_tokens=1500, **options):
    splits = {"train": lm_data.train.subset(range(120)), "val": lm_data.val}
    return cache_teacher(
        teacher, splits, folder, settings=settings_of(lm_data), k=k, codec=codec,
        shard_tokens=shard_tokens, batch_size=8, **options,
    )  # fmt: skip


@pytest.mark.parametrize("codec", ["plain", "compact"])
def test_round_trip_gives_the_teachers_top_k(teacher, lm_data, tmp_path, codec):
    stats = write(teacher, lm_data, tmp_path, codec=codec)
    cache = TeacherCache(tmp_path)
    manifest = cache.manifest
    assert manifest.tokens("train") == lm_data.train.subset(range(120)).num_tokens()
    assert stats.tokens == manifest.tokens("train") + manifest.tokens("val")
    assert len([s for s in manifest.shards if s.split == "train"]) > 1  # really sharded
    cached = cache.split("train")
    for batch in list(in_order(lm_data.train.subset(range(120)), 16))[:3]:
        stored = cached.signal(batch).logits
        logprobs = torch.log_softmax(teacher.signal(batch).logits, -1)
        expected_lp, expected_ids = logprobs.topk(16, dim=-1)
        # Order inside a top-k does not matter to a loss: compare as sets of (id, logprob).
        order = stored.indices.argsort(-1)
        ids = stored.indices.gather(-1, order)
        lps = stored.logprobs.gather(-1, order)
        expected_order = expected_ids.argsort(-1)
        assert torch.equal(ids, expected_ids.gather(-1, expected_order))
        probs, expected_probs = lps.exp(), expected_lp.gather(-1, expected_order).exp()
        tolerance = 2e-3 if codec == "plain" else 0.05 * expected_probs + 1e-4
        assert ((probs - expected_probs).abs() <= tolerance).all()


def test_record_size_of_each_codec(teacher, lm_data, tmp_path):
    write(teacher, lm_data, tmp_path / "plain", codec="plain", k=64)
    write(teacher, lm_data, tmp_path / "compact", codec="compact", k=64)
    plain = Manifest.read(tmp_path / "plain").settings["record_bytes"]
    compact = Manifest.read(tmp_path / "compact").settings["record_bytes"]
    assert plain == 6 * 64
    assert compact < plain / 2


def test_truncated_or_altered_shard_is_named(teacher, lm_data, tmp_path):
    write(teacher, lm_data, tmp_path)
    shard = sorted(tmp_path.glob("train-*.safetensors"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[:-10])
    with pytest.raises(DataError, match=f"{shard.name}.*truncated or altered"):
        TeacherCache(tmp_path)
    altered = bytearray(data)
    altered[-5] ^= 0xFF
    shard.write_bytes(bytes(altered))
    with pytest.raises(DataError, match=f"{shard.name}: sha256 differs"):
        TeacherCache(tmp_path)
    (tmp_path / MANIFEST).unlink()
    with pytest.raises(DataError, match="no manifest.json"):
        TeacherCache(tmp_path)


def test_cache_of_another_teacher_or_tokenizer_is_refused(teacher, lm_data, tmp_path):
    write(teacher, lm_data, tmp_path)
    cache = TeacherCache(tmp_path)
    cache.check_matches(
        tokenizer_fingerprint=lm_data.fingerprint, teacher_fingerprint="tiny-seed-1"
    )
    with pytest.raises(ConfigError, match="another tokenizer"):
        cache.check_matches(tokenizer_fingerprint="0" * 64, teacher_fingerprint=None)
    with pytest.raises(ConfigError, match="another teacher"):
        cache.check_matches(tokenizer_fingerprint=lm_data.fingerprint, teacher_fingerprint="x" * 64)


def test_blocks_from_other_data_are_refused(teacher, lm_data, tmp_path):
    write(teacher, lm_data, tmp_path)
    cached = TeacherCache(tmp_path).split("train")
    batch = next(iter(in_order(lm_data.train.subset(range(120)), 4)))
    batch["inputs"]["input_ids"] = batch["inputs"]["input_ids"].flip(-1)
    with pytest.raises(DataError, match="differs from the block cached"):
        cached.signal(batch)
    with pytest.raises(ConfigError, match="holds no 'test' split"):
        TeacherCache(tmp_path).split("test")


def test_caching_resumes_after_a_kill_and_matches_an_uninterrupted_run(teacher, lm_data, tmp_path):
    write(teacher, lm_data, tmp_path / "whole")
    with pytest.raises(Killed):
        write(DiesAfter(teacher, 9), lm_data, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / MANIFEST).exists()
    partial = sorted(p.name for p in (tmp_path / "resumed").glob("*.safetensors"))
    assert partial, "no complete shard was written before the kill"
    assert not list((tmp_path / "resumed").glob(".*.tmp"))  # never a half-written shard visible
    stats = write(teacher, lm_data, tmp_path / "resumed")
    whole, resumed = Manifest.read(tmp_path / "whole"), Manifest.read(tmp_path / "resumed")
    assert stats.tokens < whole.tokens("train") + whole.tokens("val")  # only the rest was done
    assert resumed.tokens("train") == whole.tokens("train")
    batch = next(iter(in_order(lm_data.train.subset(range(120)), 120)))
    a = TeacherCache(tmp_path / "whole").split("train").signal(batch).logits
    b = TeacherCache(tmp_path / "resumed").split("train").signal(batch).logits
    assert torch.equal(a.indices, b.indices) and torch.equal(a.logprobs, b.logprobs)


def test_resume_with_other_settings_is_refused(teacher, lm_data, tmp_path):
    with pytest.raises(Killed):
        write(DiesAfter(teacher, 3), lm_data, tmp_path)
    with pytest.raises(DataError, match="started with other settings.*k"):
        write(teacher, lm_data, tmp_path, k=8)


def test_rank_shards_merge_into_one_manifest(teacher, lm_data, tmp_path):
    write(teacher, lm_data, tmp_path / "single")
    for rank in (1, 0):  # rank 0 merges once every rank's shards are there
        write(teacher, lm_data, tmp_path / "ranks", rank=rank, world_size=2)
    single, ranks = Manifest.read(tmp_path / "single"), Manifest.read(tmp_path / "ranks")
    assert {s.rank for s in ranks.shards} == {0, 1}
    assert ranks.tokens("train") == single.tokens("train")
    batch = next(iter(in_order(lm_data.train.subset(range(120)), 120)))
    a = TeacherCache(tmp_path / "single").split("train").signal(batch).logits
    b = TeacherCache(tmp_path / "ranks").split("train").signal(batch).logits
    assert torch.equal(a.indices, b.indices)


def test_merge_refuses_an_incomplete_set_of_ranks(teacher, lm_data, tmp_path):
    with pytest.raises(DataError, match="a process did not finish"):
        write(teacher, lm_data, tmp_path, rank=0, world_size=2)
    assert not (tmp_path / MANIFEST).exists()
