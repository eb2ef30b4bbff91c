"""Scale on an existing engine (Hugging Face Accelerate): evaluation sharded over processes,
FSDP on CPU (refused, pinned), the shipped accelerate configs, sharded generation.

Two-process runs use ``accelerate launch --multi_gpu --num_processes 2`` on CPU (gloo), as
``tests/test_distributed.py`` does; they are slow on two cores and kept tiny.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE_CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
LAUNCH_TWO = [*LAUNCH, "--multi_gpu", "--num_processes", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def launched(command: list[str], **env: str) -> subprocess.CompletedProcess:
    """Run ``command`` (a launcher and its script) and return what it did, output included."""
    return subprocess.run(command, capture_output=True, text=True, env={**ENV, **env}, timeout=600)


# ----------------------------------------------------------------------- sharded evaluation

#: Scores fixed tiny models on splits of uneven size (23 samples, 11 blocks) with the
#: functions the validators and the final metrics use; each rank writes what it computed and
#: how many rows each model saw.
EVAL_SCRIPT = r'''
"""Scores fixed tiny models on uneven splits; writes what this rank computed and counted."""

import json
import sys
from pathlib import Path

import torch
from torch import nn

from distil.data.datasets import ArrayDataset
from distil.data.text import TokenBlocks
from distil.eval.evaluate import evaluate_model, teacher_logits
from distil.eval.lm import LMValidator, lm_metrics
from distil.eval.validators import ClassificationValidator
from distil.teachers import ModuleTeacher
from distil.train.accelerator import make_accelerator


class Counting(nn.Module):
    """A fixed model that counts the samples (rows of its input) it scored."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, inputs):
        tensor = inputs["input_ids"] if isinstance(inputs, dict) else inputs
        self.rows += tensor.shape[0]
        return self.net(tensor)


def tiny_lm(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Embedding(7, 5), nn.Linear(5, 7))


out = Path(sys.argv[1])
accelerator = make_accelerator()
torch.manual_seed(0)
features, labels = torch.randn(23, 5), torch.randint(0, 3, (23,))
split = ArrayDataset(features, labels)  # 23 samples: uneven over two processes
torch.manual_seed(1)
student = Counting(nn.Linear(5, 3))
torch.manual_seed(2)
teacher = ModuleTeacher(Counting(nn.Linear(5, 3)))
ids = torch.randint(0, 7, (11, 6))
lm_labels = torch.randint(0, 7, (11, 6))
lm_labels[:, :2] = -100
lm_labels[4] = -100  # a block with nothing to score
blocks = TokenBlocks(ids, lm_labels, torch.ones_like(ids), torch.zeros(11, dtype=torch.long), ["d"])
lm_student = Counting(tiny_lm(3))
lm_teacher = ModuleTeacher(Counting(tiny_lm(4)))
oracle = ModuleTeacher(Counting(tiny_lm(5)))

rng_before = torch.get_rng_state()
reference = teacher_logits(teacher, split, batch_size=4, accelerator=accelerator)
result = {
    "reference_rows": reference.shape[0],
    "classification": evaluate_model(
        student, split, reference_logits=reference, batch_size=4, accelerator=accelerator,
        with_reliability=True,
    ),
    "validator": ClassificationValidator(
        split, teacher, batch_size=4, ece_bins=15, accelerator=accelerator
    )(student, accelerator.device),
    "lm": lm_metrics(
        lm_student, blocks, teacher=lm_teacher, oracle=oracle, batch_size=2,
        accelerator=accelerator,
    ),
    "lm_validator": LMValidator(
        blocks, lm_teacher, batch_size=2, oracle=oracle, accelerator=accelerator
    )(lm_student, accelerator.device),
}
result["rng_unchanged"] = torch.equal(rng_before, torch.get_rng_state())
result["rows"] = {
    "student": student.rows, "teacher": teacher.module.rows,
    "lm_student": lm_student.rows, "lm_teacher": lm_teacher.module.rows,
    "oracle": oracle.module.rows,
}
(out / f"rank{accelerator.process_index}.json").write_text(json.dumps(result))
'''


def scores_by_rank(launcher: list[str], folder: Path) -> list[dict]:
    folder.mkdir()
    script = folder / "score.py"
    script.write_text(EVAL_SCRIPT)
    result = launched([*launcher, str(script), str(folder)])
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))]


def assert_close(actual, expected, where: str) -> None:
    """Equal structure, numbers equal up to float summation order (rel 1e-6): the gathered
    per-sample values are the same numbers, only summed in another grouping."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), where
        for key in expected:
            assert_close(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close(a, e, f"{where}[{i}]")
    elif expected is None:  # an empty reliability bin
        assert actual is None, where
    else:
        assert actual == pytest.approx(expected, rel=1e-6, abs=1e-9), where


@pytest.mark.slow
def test_sharded_evaluation_over_two_processes_equals_one(tmp_path):
    """Every rank ends with the one-process metrics, having scored only its shard: the
    classification validator's and the final metrics' path (teacher references included) and
    the LM validator's (teacher and oracle), on splits whose size is not a multiple of 2 (the
    last shard is padded with duplicates, which must not be counted)."""
    (one,) = scores_by_rank([sys.executable], tmp_path / "one")
    two = scores_by_rank(LAUNCH_TWO, tmp_path / "two")
    assert len(two) == 2
    for rank in two:
        assert rank["reference_rows"] == one["reference_rows"] == 23
        for part in ("classification", "validator", "lm", "lm_validator"):
            assert_close(rank[part], one[part], part)
        assert rank["lm"]["tokens"] == one["lm"]["tokens"] == 40
        assert rank["rng_unchanged"] and one["rng_unchanged"]
    # one process: every row of both scorings (23 samples twice, 11 blocks twice); two: each
    # rank its shard — ceil(23 / 4) = 6 batches of 4 dealt alternately (12 rows, the last one
    # a padding duplicate), 6 batches of 2 blocks (6 rows) — per scoring
    assert one["rows"] == {"student": 46, "teacher": 46, "lm_student": 22, "lm_teacher": 22,
                           "oracle": 22}  # fmt: skip
    for rank in two:
        assert rank["rows"] == {"student": 24, "teacher": 24, "lm_student": 12,
                                "lm_teacher": 12, "oracle": 12}  # fmt: skip


# ----------------------------------------------------------------------------- FSDP on CPU

FSDP_PROBE = r"""
import json, sys
import torch
from accelerate import Accelerator


def say(record):  # one write per line: two ranks printing at once must not run together
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


try:
    accelerator = Accelerator(cpu=True)  # what distil asks for on CPUs
    model = accelerator.prepare(torch.nn.Linear(4, 2))
    say({"type": str(accelerator.distributed_type), "fsdp2": accelerator.is_fsdp2,
         "model": type(model).__name__})
except Exception as error:
    say({"error": f"{type(error).__name__}: {error}"})
"""


#: Registered before the accelerator, so it runs after distil's exit handler (atexit is LIFO):
#: records whether the process group was still alive at that point.
EXIT_PROBE = r"""
import atexit, json, sys
from pathlib import Path

import torch

out = Path(sys.argv[1])


def record():
    alive = torch.distributed.is_initialized()
    (out / f"rank{rank}.json").write_text(json.dumps({"alive_at_exit": alive}))


atexit.register(record)
from distil.train.accelerator import make_accelerator

accelerator = make_accelerator()
rank = accelerator.process_index
accelerator.wait_for_everyone()
"""


@pytest.mark.slow
def test_a_launched_process_closes_its_process_group_before_exit(tmp_path):
    """Bug caught: a finished two-process run left its gloo group to interpreter shutdown,
    where about one exit in two aborted (SIGABRT, "terminate called without an active
    exception") and the launcher reported the run failed."""
    script = tmp_path / "probe.py"
    script.write_text(EXIT_PROBE)
    result = launched([*LAUNCH_TWO, str(script), str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*.json"))]
    assert seen == [{"alive_at_exit": False}] * 2


@pytest.mark.slow
def test_fsdp_on_cpu_is_not_supported_by_the_installed_accelerate(tmp_path):
    """Pins what the installed torch/accelerate do with FSDP on two CPU processes, so this
    fails (and distil's refusal can go) the day they shard there: FSDP1 stops inside its
    plugin, FSDP2 quietly runs plain DDP (every process holds the whole model)."""
    import accelerate
    import torch

    script = tmp_path / "probe.py"
    script.write_text(FSDP_PROBE)
    seen = {}
    for version in (1, 2):
        result = launched([*LAUNCH, "--use_fsdp", "--fsdp_version", str(version),
                           "--num_processes", "2", str(script)])  # fmt: skip
        seen[version] = [json.loads(line) for line in result.stdout.splitlines()
                         if line.startswith("{")]  # fmt: skip
    versions = f"torch {torch.__version__}, accelerate {accelerate.__version__}"
    # accelerate ≤ 1.15: "no available devices found"; 1.16: "… is not supported on cpu"
    fsdp1_refusals = ("no available devices found", "is not supported on cpu")
    assert len(seen[1]) == 2 and all(any(m in r.get("error", "") for m in fsdp1_refusals)
                                     for r in seen[1]), (versions, seen[1])  # fmt: skip
    assert len(seen[2]) == 2, (versions, seen[2])
    for rank in seen[2]:
        assert rank == {"type": "DistributedType.MULTI_CPU", "fsdp2": False,
                        "model": "DistributedDataParallel"}, (versions, rank)  # fmt: skip


def test_distil_refuses_fsdp_without_a_gpu_in_one_line(tiny_recipe):
    """`accelerate launch --use_fsdp` (or an FSDP config) sets ACCELERATE_USE_FSDP in every
    process; on a machine without CUDA distil says so and exits 2 before loading anything."""
    result = launched(
        [sys.executable, "-m", "distil", "train", str(tiny_recipe)],
        ACCELERATE_USE_FSDP="true",
        FSDP_VERSION="2",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: FSDP needs GPUs"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "--multi_gpu" in lines[-1] and "docs/scale.md" in lines[-1]


# ------------------------------------------------------------------- shipped accelerate configs


def test_every_documented_accelerate_config_is_shipped():
    names = {path.name for path in ACCELERATE_CONFIGS}
    assert names == {"ddp.yaml", "ddp-multinode.yaml", "fsdp.yaml", "deepspeed-zero2.yaml",
                     "deepspeed-zero3.yaml"}  # fmt: skip
    scale_doc = (ROOT / "docs" / "scale.md").read_text()
    for name in names:
        assert f"configs/accelerate/{name}" in scale_doc, name


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_is_accepted_by_accelerate(path):
    """Each file loads with accelerate's own config loader (unknown keys are an error there)
    and passes `accelerate launch`'s own validation, and asks for what its name says."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    config = load_config_from_file(str(path))
    args, _, _ = _validate_launch_command(
        launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    )
    expected = {
        "ddp.yaml": ("MULTI_GPU", 1), "ddp-multinode.yaml": ("MULTI_GPU", 2),
        "fsdp.yaml": ("FSDP", 1), "deepspeed-zero2.yaml": ("DEEPSPEED", 1),
        "deepspeed-zero3.yaml": ("DEEPSPEED", 1),
    }[path.name]  # fmt: skip
    assert (str(config.distributed_type).rsplit(".", 1)[-1], config.num_machines) == expected
    assert args.multi_gpu == (expected[0] == "MULTI_GPU")
    assert args.use_fsdp == (expected[0] == "FSDP")
    assert args.use_deepspeed == (expected[0] == "DEEPSPEED")
    if args.use_fsdp:
        from accelerate.utils.launch import prepare_multi_gpu_env

        env = prepare_multi_gpu_env(args)
        assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
        assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"  # distil saves whole weights
    if args.use_deepspeed:
        assert (
            int(args.zero_stage)
            == {"deepspeed-zero2.yaml": 2, "deepspeed-zero3.yaml": 3}[path.name]
        )
        assert int(args.gradient_accumulation_steps) == 1  # distil accumulates itself


# ---------------------------------------------------------------------- sharded generation


@pytest.mark.slow
def test_seq_kd_generation_sharded_over_two_processes_equals_one(tmp_path):
    """`distil train` with seq_kd under two processes: each rank writes its parts (part p by
    rank p mod 2), one manifest lists them all, and the store is byte for byte the one a
    single process writes (part p is seeded by p, not by the rank that writes it). 96 prompts
    in parts of 64: two parts of uneven size."""
    import yaml

    from conftest import LM_DATA, lm_recipe

    method = {"name": "seq_kd", "prompt_tokens": 8, "new_tokens": 8, "samples_per_prompt": 2}
    train_section = {"max_steps": 2, "batch_size": 8, "eval_every": 2, "checkpoint_every": 2,
                     "progress": False}  # fmt: skip
    recipe = lm_recipe(
        tmp_path, method, data=dict(LM_DATA, train_blocks=48), train=train_section,
        teacher={"tiny": {"hidden": 32, "layers": 1, "heads": 2, "seed": 3}},
    )  # fmt: skip
    path = tmp_path / "seq_kd.yaml"
    path.write_text(yaml.safe_dump(recipe))
    for launcher, folder in (([sys.executable], "one"), (LAUNCH_TWO, "two")):
        result = launched([*launcher, "-m", "distil", "train", str(path),
                           f"output.dir={tmp_path / folder}"])  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = tmp_path / "one" / "generations", tmp_path / "two" / "generations"
    parts = sorted(p.name for p in one.glob("part-*.jsonl"))
    assert parts == ["part-00000.jsonl", "part-00001.jsonl"]
    assert sorted(p.name for p in two.glob("part-*.jsonl")) == parts
    for name in parts:
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    manifest_one = json.loads((one / "manifest.json").read_text())
    manifest_two = json.loads((two / "manifest.json").read_text())
    assert [p["rank"] for p in manifest_two["parts"]] == [0, 1]  # written by both processes
    assert [p["rank"] for p in manifest_one["parts"]] == [0, 0]
    assert [p["records"] for p in manifest_two["parts"]] == [64, 32]
    strip = [{k: v for k, v in p.items() if k != "rank"} for p in manifest_one["parts"]]
    assert strip == [{k: v for k, v in p.items() if k != "rank"} for p in manifest_two["parts"]]
    assert manifest_two["settings"] == manifest_one["settings"]
    assert sorted(p.name for p in two.glob("checksums-r*.json")) == [
        "checksums-r000.json", "checksums-r001.json"
    ]  # fmt: skip


class WordTokenizer:
    """Just enough of a tokenizer for generation: one id per known word, left padding."""

    pad_token_id, eos_token_id, padding_side = 0, 0, "left"
    words = ["<pad>", "the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far"]

    def __call__(self, texts, return_tensors, padding, add_special_tokens):
        import torch

        rows = [[self.words.index(w) for w in text.split()] for text in texts]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return {"input_ids": ids, "attention_mask": mask}

    def decode(self, ids, skip_special_tokens):
        return " ".join(self.words[int(i)] for i in ids if int(i) != 0 or not skip_special_tokens)


class CountingGenerator:
    """A deterministic stand-in for a LanguageModel's ``generate`` that counts its calls:
    each new token is (last token + 1) mod vocab, never the padding id."""

    def __init__(self) -> None:
        import torch

        self.head, self.vocab_size, self.calls = torch.zeros(10, 4), 10, 0

    def generate(self, input_ids, attention_mask, *, max_new_tokens, **options):
        import torch

        self.calls += 1
        rows = [input_ids]
        for _ in range(max_new_tokens):
            rows.append(rows[-1][:, -1:] % 9 + 1)
        return torch.cat(rows, dim=1)


PROMPTS = [" ".join(["the", "cat", "sat", "on", "a", "mat", "dog"][: 1 + i % 7]) for i in range(10)]


def write_store(folder: Path, model: CountingGenerator | None = None) -> list[dict]:
    from distil.lm.generation import generate_continuations

    return generate_continuations(
        model or CountingGenerator(), WordTokenizer(), PROMPTS, folder, max_new_tokens=3,
        batch_size=2, part_size=4,
    )  # fmt: skip


def test_generated_store_has_one_verified_manifest(tmp_path):
    """Three parts (4 + 4 + 2 prompts), each listed with its size and the sha256 recorded when
    it was written; reading the store again generates nothing and gives the same records."""
    from distil.train.state_io import sha256_of

    folder = tmp_path / "generations"
    records = write_store(folder)
    assert [r["id"] for r in records] == list(range(10))
    assert [r["prompt"] for r in records] == PROMPTS
    assert records[0]["response"] == "cat sat on"  # the stand-in's continuation of "the"
    manifest = json.loads((folder / "manifest.json").read_text())
    ledger = json.loads((folder / "checksums-r000.json").read_text())
    assert [p["file"] for p in manifest["parts"]] == [f"part-0000{i}.jsonl" for i in range(3)]
    assert [p["records"] for p in manifest["parts"]] == [4, 4, 2]
    for part in manifest["parts"]:
        assert part["sha256"] == ledger[part["file"]] == sha256_of(folder / part["file"])
        assert part["bytes"] == (folder / part["file"]).stat().st_size
    again = CountingGenerator()
    assert write_store(folder, again) == records and again.calls == 0


def damage_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def damage_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (damage_flip, "sha256 differs from the manifest"),
        (damage_truncate, "bytes, the manifest says"),
        (Path.unlink, r"missing \(listed in"),
    ],
    ids=["bit-flip", "truncated", "deleted"],
)
def test_damaged_generated_part_is_refused_naming_it(tmp_path, damage, message):
    """A finished store whose part was altered, cut short or lost is an error naming that
    part — never silently regenerated or read half."""
    from distil.errors import DataError

    folder = tmp_path / "generations"
    write_store(folder)
    damage(folder / "part-00001.jsonl")
    model = CountingGenerator()
    with pytest.raises(DataError, match=message) as caught:
        write_store(folder, model)
    assert str(caught.value).startswith(f"{folder / 'part-00001.jsonl'}: ")
    assert model.calls == 0


def test_resumed_generation_refuses_a_part_damaged_before_the_merge(tmp_path):
    """Killed before the merge (no manifest): a part that is not the one its rank recorded is
    refused naming it; a whole part is reused and only the missing one is generated."""
    from distil.errors import DataError

    folder = tmp_path / "generations"
    records = write_store(folder)
    (folder / "manifest.json").unlink()
    (folder / "part-00002.jsonl").unlink()
    model = CountingGenerator()
    assert write_store(folder, model) == records
    assert model.calls == 1  # the last part: 2 prompts, one batch
    (folder / "manifest.json").unlink()
    damage_flip(folder / "part-00000.jsonl")
    with pytest.raises(DataError, match="damaged") as caught:
        write_store(folder)
    assert str(caught.value).startswith(f"{folder / 'part-00000.jsonl'}: ")


def test_generated_store_made_with_other_settings_is_refused(tmp_path):
    from distil.errors import DataError
    from distil.lm.generation import generate_continuations

    folder = tmp_path / "generations"
    write_store(folder)
    with pytest.raises(DataError, match="other settings .*max_new_tokens"):
        generate_continuations(
            CountingGenerator(), WordTokenizer(), PROMPTS, folder, max_new_tokens=5,
            batch_size=2, part_size=4,
        )  # fmt: skip
