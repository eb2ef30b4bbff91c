"""``privacy``: does distillation leak the teacher's private text? Canary exposure, KD vs Swing.

The setting of Swing distillation (Li et al., 2022), scaled to a CPU. The *private text* is a
slice of Brown with canaries planted in its training documents — sentences
``"the pin of agent <name> is <4 digits>"`` with random secrets, each planted 1, 4, 16 or 64 times
(two canaries per count). A teacher LM is pretrained on it (and memorises the frequent
ones); students are distilled from the teacher on the same private text with the teacher's
soft targets only (α = 1: no hard labels, so whatever a student knows of a secret came
through the teacher), by plain ``kd`` and by ``swing``. Every canary's exposure
(:mod:`distil.eval.privacy`: log2 10⁴ − log2 rank among all 10⁴ secrets, ≤ 13.3 bits;
about 1.4 for a model that never saw the canary) is
measured in the teacher and in each student, three student seeds; the quality cost is the
students' test perplexity on held-out Brown documents (which hold no canaries).

Rows: ``exposure`` per (model, insertion count, canary, seed) with task ``"<n>× planted"``
and ``perplexity`` with task ``"test text"``; the teacher is the row ``teacher``.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from distil.bench.harness import SUITES, Row, Suite, grouped
from distil.config import parse_config
from distil.eval.privacy import Canary, canary_exposure, make_canaries
from distil.lm.data import load_lm_data, split_records
from distil.lm.resolve import build_lm
from distil.models.causal_lm import load_causal_lm
from distil.models.language_model import LanguageModel
from distil.pipeline import run

INSERTIONS = (1, 4, 16, 64)
CANARIES_PER_COUNT = 2
DIGITS = 4
NAMES = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
PREFIX = "the pin of agent {name} is "  # no digits outside the secret
DOCUMENTS = 60  # Brown documents of private text (~220k tokens)
TEACHER = {"tiny": {"hidden": 128, "layers": 2, "heads": 4},
           "pretrain": {"steps": 800, "batch_size": 32, "lr": 0.004}}  # fmt: skip
STUDENT = {"tiny": {"hidden": 64, "layers": 2, "heads": 4}}
DATA = {"corpus": "jsonl", "tokenizer": "brown-bpe-2048", "block_size": 64, "eval_blocks": 64}
METHODS = {
    "kd": {"name": "kd", "alpha": 1.0, "temperature": 1.0},
    "swing": {"name": "swing", "alpha": 1.0, "temperature": 1.0, "sensitive_temperature": 20.0,
              "noise_std": 1.0},
}  # fmt: skip
SEEDS = (0, 1, 2)


def private_corpus(path: Path, documents: int, digits: int) -> list[tuple[int, Canary]]:
    """Write the private text (Brown documents with canaries planted in training documents
    only) as JSONL at ``path``; return each canary with how often it was planted."""
    from distil.data.brown import load_brown

    records = [{"text": d.text, "domain": d.genre} for d in load_brown(None, documents)]
    # the recipe's own split, so canaries land in training documents, never in val/test
    train = split_records(records, 0.05, 0.05, 0)["train"]
    names = NAMES[: len(INSERTIONS) * CANARIES_PER_COUNT]
    canaries = make_canaries([PREFIX.format(name=n) for n in names], digits=digits, seed=0)
    planted = [(INSERTIONS[j // CANARIES_PER_COUNT], c) for j, c in enumerate(canaries)]
    rng = random.Random(0)
    for count, canary in planted:
        for _ in range(count):
            host = rng.choice(train)
            host["text"] = f"{host['text']} {canary.text} ."
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return planted


def collect(quick: bool) -> list[Row]:
    teacher, steps, seeds, documents, digits = TEACHER, 300, SEEDS, DOCUMENTS, DIGITS
    if quick:  # 100 secrets instead of 10^4: scoring is the slow part
        teacher = {**TEACHER, "pretrain": {**TEACHER["pretrain"], "steps": 40}}
        steps, seeds, documents, digits = 20, (0,), 20, 2
    logging.getLogger("distil").setLevel(logging.ERROR)
    rows: list[Row] = []
    with TemporaryDirectory(prefix="distil-privacy-") as scratch:
        corpus = Path(scratch) / "private.jsonl"
        planted = private_corpus(corpus, documents, digits)
        data_section = {**DATA, "path": str(corpus)}
        base = {"suite": "privacy", "steps": steps, "teacher_steps": teacher["pretrain"]["steps"],
                "secrets": 10**digits}  # fmt: skip

        def exposures(model: LanguageModel, tokenizer, method: str, seed: int) -> None:
            for number, (count, canary) in enumerate(planted):
                rows.append({**base, "task": f"{count}× planted", "method": method,
                             "seed": seed, "canary": number, "metric": "exposure",
                             "value": canary_exposure(model, tokenizer, canary)})  # fmt: skip

        def recipe(method: str, seed: int):
            train = {"max_steps": steps, "batch_size": 16, "lr": 0.005, "warmup_steps": 10,
                     "schedule": "cosine", "eval_every": steps, "checkpoint_every": steps,
                     "seed": seed, "progress": False}  # fmt: skip
            return parse_config({
                "task": "lm", "name": f"privacy-{method}", "data": data_section,
                "teacher": teacher, "student": STUDENT, "method": METHODS[method],
                "train": train,
                "output": {"dir": str(Path(scratch) / f"{method}-{seed}"), "report": False},
            })  # fmt: skip

        first = recipe(next(iter(METHODS)), seeds[0])
        data = load_lm_data(first.data)
        # the teacher, once (pretrained here and cached; every run below reuses it)
        model = build_lm(first.teacher, data.tokenizer, role="teacher",
                         pretrain_data=data.teacher_train)  # fmt: skip
        exposures(model, data.tokenizer, "teacher", 0)
        for method in METHODS:
            for seed in seeds:
                result = run(recipe(method, seed), data=data)
                student = LanguageModel(
                    load_causal_lm(result.run_dir / "student", dtype=torch.float32),
                    len(data.tokenizer),
                )
                exposures(student, data.tokenizer, method, seed)
                rows.append({**base, "task": "test text", "method": method, "seed": seed,
                             "metric": "perplexity",
                             "value": result.metrics["last"]["test"]["perplexity"]})  # fmt: skip
    return rows


def plot(rows: list[Row], path: Path) -> None:
    """Exposure against how often a canary was planted, one line per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = grouped([r for r in rows if r["metric"] == "exposure"], "exposure")
    counts = [int(task.split("×")[0]) for task in data]
    methods = list(dict.fromkeys(m for per_count in data.values() for m in per_count))
    figure = Figure(figsize=(7.2, 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for method, marker in zip(methods, "os^vD", strict=False):
        means = [data[task][method][0] for task in data]
        stds = [data[task][method][1] for task in data]
        axes.errorbar(counts, means, yerr=stds, marker=marker, capsize=3, label=method)
    secrets = max(r.get("secrets", 10**DIGITS) for r in rows)
    axes.axhline(math.log2(secrets), color="grey", linestyle=":", linewidth=1)
    axes.set_xscale("log", base=2)
    axes.set_xticks(counts, [str(c) for c in counts])
    axes.set_xlabel("times the canary was planted in the private text")
    axes.set_ylabel("exposure (bits; dotted: the maximum)")
    axes.set_title("Canary exposure: the teacher and its distilled students")
    figure.legend(loc="outside right upper", fontsize=8)
    figure.savefig(path, dpi=120)


SUITES.register("privacy")(Suite("privacy", collect, plot))
