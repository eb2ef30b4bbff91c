"""``distil demo llm``: language-model distillation end to end on Brown, on a 2-core CPU.

The teacher is a small Llama-style LM pretrained here on all of Brown (cached after the
first run) — SmolLM2-135M would take the whole budget to run over enough text on a CPU;
``kd-smollm2`` and ``distil bench llm`` use it. The student, 4× narrower, trains on 256
blocks (16k tokens): the few-data setting where a teacher matters most. One teacher cache
serves every cached run. The table: held-out (test documents) perplexity and agreement with
the teacher, for the student alone and distilled with forward KL, reverse KL, JSD and TAID
from the cache, forward KL from the live teacher, and on-policy GKD (live by nature).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from distil.config import LMRunConfig, load_config
from distil.lm.caching import cache_recipe_teacher
from distil.lm.data import load_lm_data
from distil.lm.pipeline import run_lm

RECIPE = "kd-brown"
#: Cached rows train from the cache; the live teacher only scores them (one KL for every row).
CACHED = ["teacher.live_eval=true"]
LIVE = ["teacher.cache=null"]
#: Row label -> (teacher source, overrides of the kd-brown recipe).
RUNS: dict[str, tuple[str, list[str]]] = {
    "student alone": ("-", ["method={name: supervised}", "teacher=null"]),
    "forward KL": ("cache", CACHED),
    "reverse KL": ("cache", [*CACHED, "method.divergence=reverse_kl"]),
    "JSD(0.5)": ("cache", [*CACHED, "method.divergence=jsd", "method.beta=0.5"]),
    "TAID": ("cache", [*CACHED, "method={name: taid, alpha: 0.5}"]),
    "forward KL (live)": ("live", LIVE),
    "GKD (on-policy)": ("live", [*LIVE, "method={name: gkd, prompt_tokens: 16, new_tokens: 32}"]),
}
QUICK = ["train.max_steps=40", "train.eval_every=20", "train.checkpoint_every=40",
         "teacher.pretrain.steps=100", "data.eval_blocks=32"]  # fmt: skip


@dataclass
class LLMDemoResult:
    """The printed table, one row per run, and where the metrics went."""

    table: str
    rows: list[dict]
    metrics_path: Path


def run_llm_demo(out: Path, *, quick: bool = False) -> LLMDemoResult:
    """Run every row into ``out`` (replacing earlier runs there) and tabulate them."""
    logging.getLogger("distil").setLevel(logging.WARNING)
    common = [*(QUICK if quick else []), "train.progress=false", f"cache.dir={out}/teacher-cache"]
    base = load_config(RECIPE, [*common, f"teacher.cache={out}/teacher-cache"])
    assert isinstance(base, LMRunConfig)
    data = load_lm_data(base.data)
    started = time.perf_counter()
    manifest, _ = cache_recipe_teacher(base, data=data)
    cache_seconds = time.perf_counter() - started
    rows, teacher_row = [], None
    for label, (source, overrides) in RUNS.items():
        folder = out / label.lower().replace(" ", "-").replace("(", "").replace(")", "")
        shutil.rmtree(folder, ignore_errors=True)
        config = load_config(
            RECIPE,
            [*common, f"teacher.cache={out}/teacher-cache", *overrides,
             f"output.dir={folder}", f"name=demo-llm-{folder.name}"],
        )  # fmt: skip
        result = run_lm(config, data=data)
        test = result.metrics["last"]["test"]
        rows.append({
            "method": label, "teacher": source, "perplexity": test["perplexity"],
            "top1_agreement": test.get("top1_agreement"), "teacher_kl": test.get("teacher_kl"),
            "seconds": result.metrics["train_seconds"],
        })  # fmt: skip
        teacher_row = teacher_row or result.metrics.get("teacher")
    if teacher_row is not None:
        rows.insert(0, {"method": "teacher", "teacher": "-", "perplexity": teacher_row["test"]["perplexity"],
                        "top1_agreement": 1.0, "teacher_kl": 0.0, "seconds": None})  # fmt: skip
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps({
        "recipe": RECIPE, "quick": quick, "rows": rows,
        "cache": {"tokens": manifest.tokens("train"), "bytes_per_token": manifest.record_bytes,
                  "k": manifest.settings["k"], "codec": manifest.settings["codec"]["name"],
                  "seconds": cache_seconds},
    }, indent=1))  # fmt: skip
    return LLMDemoResult(table=format_table(rows, base, manifest), rows=rows,
                         metrics_path=metrics_path)  # fmt: skip


def format_table(rows: list[dict], config: LMRunConfig, manifest) -> str:
    """The demo's markdown table with a header saying what ran."""
    teacher = config.teacher.tiny if config.teacher else None
    lines = [
        f"Teacher: tiny local Llama (hidden {teacher.hidden}, {teacher.layers} layers) pretrained "
        "here on all of Brown — SmolLM2-135M is too slow for a 2-core demo (see kd-smollm2).",
        f"Student: hidden {config.student.tiny.hidden}, {config.student.tiny.layers} layers, "
        f"{config.train.max_steps} steps on {config.data.train_blocks} blocks of "
        f"{config.data.block_size} tokens. Cache: {manifest.settings['codec']['name']} codec, "
        f"k={manifest.settings['k']}, {manifest.record_bytes} bytes/token.",
        "Held-out = test documents; agreement = the student's top-1 next token is the teacher's.",
        "",
        "| method | teacher | test perplexity | top-1 agreement | KL(teacher‖student) | train s |",
        "|:---|:---|---:|---:|---:|---:|",
    ]
    for row in rows:
        agree = "–" if row["top1_agreement"] is None else f"{row['top1_agreement']:.3f}"
        kl = "–" if row["teacher_kl"] is None else f"{row['teacher_kl']:.3f}"
        seconds = "–" if row["seconds"] is None else f"{row['seconds']:.0f}"
        lines.append(
            f"| {row['method']} | {row['teacher']} | {row['perplexity']:.1f} | {agree} | {kl} | {seconds} |"
        )
    return "\n".join(lines)
