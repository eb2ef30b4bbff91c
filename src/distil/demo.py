"""``distil demo``: the embedded defaults, end to end on data that ships with the install.

One table of demos, each a shipped recipe and a few variants of it (recipe overrides) run
through the one :func:`~distil.pipeline.run`:

* ``classic`` trains the ``demo`` recipe's CNN teacher on real MNIST once (cached), then the
  MLP student alone (``supervised``) and distilled with ``kd``, over three seeds; it prints the
  mean ± std table and writes ``metrics.json`` (a row per method) and one ``report.html``.
* ``llm`` distils a small Llama-style LM pretrained here on all of Brown (cached; SmolLM2-135M
  would take the whole budget on a CPU — ``kd-smollm2`` and ``distil bench llm`` use it) into
  a 4× narrower student that trains on 256 blocks (16k tokens), the few-data setting where a
  teacher matters most. One teacher cache serves every cached variant. The table: test
  perplexity and agreement with the teacher, for the student alone, forward KL, reverse KL,
  JSD and TAID from the cache, forward KL from the live teacher, and on-policy GKD.

``--quick`` runs one seed with a smaller budget, to check the whole path in seconds.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distil.config import RunConfig, load_config
from distil.pipeline import run
from distil.report import markdown_table, summary_rows, write_report
from distil.report.runs import load_run
from distil.tasks import task_for


@dataclass
class DemoResult:
    """The printed table, the summary rows and where the files went."""

    table: str
    rows: list[dict]
    metrics_path: Path
    report: Path | None = None


@dataclass(frozen=True)
class Variant:
    """One row of a demo: recipe overrides, and where its teacher signal comes from."""

    overrides: list[str]
    teacher: str = "-"


@dataclass(frozen=True)
class Demo:
    """A shipped recipe, the variants compared, and how their results are shown."""

    recipe: str
    variants: dict[str, Variant]
    out: Path
    quick: list[str]
    #: Turns the runs into the table, ``metrics.json`` and any report.
    summarise: Callable[..., DemoResult]
    seeds: tuple[int, ...] = (0, 1, 2)
    #: Overrides every variant shares, given the demo's output folder.
    common: Callable[[Path], list[str]] = lambda out: []
    #: Work before the variants run (the LLM demo caches its teacher); returns facts for
    #: the table and metrics.json.
    prepare: Callable[[RunConfig, Any, Path], dict[str, Any]] | None = None
    #: The run's name, given the demo's key and the variant's folder.
    run_name: Callable[[str, str], str] = lambda which, folder: f"demo-{which}-{folder}"


def run_demo(which: str, out: Path | None = None, *, quick: bool = False,
             progress: bool = True) -> DemoResult:  # fmt: skip
    """Run demo ``which`` into ``out`` (its variant folders there are replaced)."""
    demo = DEMOS[which]
    out = out or demo.out
    seeds = demo.seeds[:1] if quick else demo.seeds
    common = [*(demo.quick if quick else []), *demo.common(out)]
    if not any(o.startswith("train.progress=") for o in common):
        common.append(f"train.progress={str(progress).lower()}")
    base = load_config(demo.recipe, common)
    data = task_for(base).load_data()
    facts = demo.prepare(base, data, out) if demo.prepare else {}
    runs: dict[str, list[Path]] = {}
    results: dict[str, list[dict]] = {}
    for label, variant in demo.variants.items():
        folder = out / slug(label)
        shutil.rmtree(folder, ignore_errors=True)
        for seed in seeds:
            run_dir = folder / f"seed-{seed}" if len(demo.seeds) > 1 else folder
            config = load_config(
                demo.recipe,
                [*common, *variant.overrides, f"train.seed={seed}", f"output.dir={run_dir}",
                 f"name={demo.run_name(which, slug(label))}"],
            )  # fmt: skip
            result = run(config, data=data)
            runs.setdefault(label, []).append(result.run_dir)
            results.setdefault(label, []).append(result.metrics)
    return demo.summarise(demo, out, seeds, runs, results, base, facts, quick)


def slug(label: str) -> str:
    """A folder name for a variant label ("forward KL (live)" → "forward-kl-live")."""
    return re.sub(r"[()]", "", label.lower()).replace(" ", "-")


# ----------------------------------------------------------------------------- classic

CLASSIC_COLUMNS = ("method", "n_seeds", "accuracy", "accuracy_std", "ece", "ece_std",
                   "agreement", "agreement_std", "nll", "nll_std", "best_val_accuracy",
                   "best_val_accuracy_std")  # fmt: skip


def summarise_classic(demo, out, seeds, runs, results, base, facts, quick) -> DemoResult:
    """Mean ± std per method over seeds, the teacher first; one report over every run."""
    run_dirs = [d for dirs in runs.values() for d in dirs]
    rows = summary_rows([load_run(d) for d in run_dirs])
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps({
        "recipe": demo.recipe, "seeds": list(seeds),
        "rows": [{key: row.get(key) for key in CLASSIC_COLUMNS} for row in rows],
    }, indent=1))  # fmt: skip
    report = write_report(run_dirs, out / "report.html", title="distil demo")
    return DemoResult(markdown_table(rows), rows, metrics_path, report)


# ----------------------------------------------------------------------------- llm

#: Cached rows train from the cache; the live teacher only scores them (one KL for every row).
CACHED = ["teacher.live_eval=true"]
LIVE = ["teacher.cache=null"]


def cache_llm_teacher(base: RunConfig, data: Any, out: Path) -> dict[str, Any]:
    """Write the teacher cache every cached variant trains from (once)."""
    from distil.lm.caching import cache_recipe_teacher

    logging.getLogger("distil").setLevel(logging.WARNING)
    started = time.perf_counter()
    manifest, _ = cache_recipe_teacher(base, data=data)
    return {"manifest": manifest, "seconds": time.perf_counter() - started}


def summarise_llm(demo, out, seeds, runs, results, base, facts, quick) -> DemoResult:
    """One row per variant (one seed), the teacher's own perplexity first."""
    rows, teacher_row = [], None
    for label, metrics_list in results.items():
        metrics = metrics_list[0]
        test = metrics["last"]["test"]
        rows.append({
            "method": label, "teacher": demo.variants[label].teacher,
            "perplexity": test["perplexity"], "top1_agreement": test.get("top1_agreement"),
            "teacher_kl": test.get("teacher_kl"), "seconds": metrics["train_seconds"],
        })  # fmt: skip
        teacher_test = next(iter(metrics["teachers"].values()), {}).get("test")
        teacher_row = teacher_row or teacher_test
    if teacher_row is not None:
        rows.insert(0, {"method": "teacher", "teacher": "-", "perplexity": teacher_row["perplexity"],
                        "top1_agreement": 1.0, "teacher_kl": 0.0, "seconds": None})  # fmt: skip
    manifest = facts["manifest"]
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps({
        "recipe": demo.recipe, "quick": quick, "rows": rows,
        "cache": {"tokens": manifest.tokens("train"), "bytes_per_token": manifest.record_bytes,
                  "k": manifest.settings["k"], "codec": manifest.settings["codec"]["name"],
                  "seconds": facts["seconds"]},
    }, indent=1))  # fmt: skip
    return DemoResult(format_llm_table(rows, base, manifest), rows, metrics_path)


def format_llm_table(rows: list[dict], config: RunConfig, manifest) -> str:
    """The LLM demo's markdown table with a header saying what ran."""
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


# ----------------------------------------------------------------------------- the table

DEMOS: dict[str, Demo] = {
    "classic": Demo(
        recipe="demo",
        variants={"supervised": Variant(["method={name: supervised}"]), "kd": Variant([])},
        out=Path("runs/demo"),
        quick=["train.epochs=3", "teacher.pretrain.epochs=3"],
        summarise=summarise_classic,
        common=lambda out: ["output.report=false"],  # one report over every run instead
        run_name=lambda which, folder: f"demo-{folder}",
    ),
    "llm": Demo(
        recipe="kd-brown",
        variants={
            "student alone": Variant(["method={name: supervised}", "teacher=null"]),
            "forward KL": Variant(CACHED, "cache"),
            "reverse KL": Variant([*CACHED, "method.divergence=reverse_kl"], "cache"),
            "JSD(0.5)": Variant([*CACHED, "method.divergence=jsd", "method.beta=0.5"], "cache"),
            "TAID": Variant([*CACHED, "method={name: taid, alpha: 0.5}"], "cache"),
            "forward KL (live)": Variant(LIVE, "live"),
            "GKD (on-policy)": Variant(
                [*LIVE, "method={name: gkd, prompt_tokens: 16, new_tokens: 32}"], "live"
            ),
        },
        out=Path("runs/demo-llm"),
        quick=[
            "train.max_steps=40",
            "train.eval_every=20",
            "train.checkpoint_every=40",
            "teacher.pretrain.steps=100",
            "data.eval_blocks=32",
        ],  # fmt: skip
        seeds=(0,),
        common=lambda out: [
            "train.progress=false",
            f"cache.dir={out}/teacher-cache",
            f"teacher.cache={out}/teacher-cache",
        ],  # fmt: skip
        prepare=cache_llm_teacher,
        summarise=summarise_llm,
    ),
}
