"""``hacking``: teacher hacking with offline vs online (on-policy) data, measured.

The setting of Tiapkin et al. (2025), scaled to a CPU: an *oracle* LM (the kd-brown teacher,
pretrained on all of Brown) stands for the true distribution; the *teacher* is an imperfect
proxy of it (a smaller LM pretrained briefly); the student is distilled from the teacher for
many epochs over a few fixed blocks (offline KD, the regime where hacking appears) or with
on-policy batches it samples itself (GKD). Every evaluation records KL(teacher ‖ student)
and KL(oracle ‖ student) on held-out blocks; the monitor says whether and when the first
kept falling while the second rose.
Rows per method: ``teacher_kl`` and ``oracle_kl`` (last), ``oracle_kl_min``,
``oracle_kl_rise`` (last − min), ``hacking_detected`` (0/1), and the curves as
``curve_teacher_kl`` / ``curve_oracle_kl`` rows with a ``step``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from tempfile import TemporaryDirectory

from distil.bench.harness import SUITES, Row, Suite
from distil.config import parse_config
from distil.lm.config import LMModelConfig
from distil.lm.data import load_lm_data
from distil.lm.resolve import pretrained_folder
from distil.pipeline import run

ORACLE = {"tiny": {"hidden": 128, "layers": 4, "heads": 4},
          "pretrain": {"steps": 600, "batch_size": 32, "lr": 0.004}}  # fmt: skip
TEACHER = {"tiny": {"hidden": 64, "layers": 2, "heads": 4},
           "pretrain": {"steps": 150, "batch_size": 32, "lr": 0.004}}  # fmt: skip
STUDENT = {"tiny": {"hidden": 48, "layers": 2, "heads": 4}}
DATA = {"corpus": "brown", "tokenizer": "brown-bpe-2048", "block_size": 64, "train_blocks": 64,
        "eval_blocks": 64}  # fmt: skip
METHODS = {
    "offline kd": {"name": "kd", "temperature": 1.0, "alpha": 1.0},
    "online gkd (λ=1)": {"name": "gkd", "on_policy_fraction": 1.0, "beta": 0.5,
                         "prompt_tokens": 16, "new_tokens": 48},
}  # fmt: skip


def collect(quick: bool) -> list[Row]:
    steps, every = (40, 10) if quick else (400, 25)
    oracle, teacher = ORACLE, TEACHER
    if quick:
        oracle = {**ORACLE, "pretrain": {**ORACLE["pretrain"], "steps": 100}}
        teacher = {**TEACHER, "pretrain": {**TEACHER["pretrain"], "steps": 30}}
    logging.getLogger("distil").setLevel(logging.ERROR)
    data = load_lm_data(parse_config(_recipe(DATA, teacher, {}, {}, Path("."))).data)
    oracle_dir = pretrained_folder(
        LMModelConfig(**oracle), data.tokenizer, data.teacher_train, "oracle"
    )
    rows: list[Row] = []
    with TemporaryDirectory(prefix="distil-hacking-") as scratch:
        for label, method in METHODS.items():
            train = {"max_steps": steps, "batch_size": 16, "lr": 0.005, "warmup_steps": 10,
                     "schedule": "constant", "eval_every": every, "checkpoint_every": steps,
                     "progress": False}  # fmt: skip
            evaluation = {"batch_size": 32, "oracle": {"model": str(oracle_dir)},
                          "hacking_window": 4}  # fmt: skip
            config = parse_config(
                _recipe(
                    DATA,
                    teacher,
                    method,
                    {"train": train, "eval": evaluation},
                    Path(scratch) / label.split()[0],
                )  # fmt: skip
            )
            result = run(config, data=data)
            evals = [
                json.loads(line)
                for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
                if '"eval"' in line
            ]
            verdict = result.metrics["lm"]["teacher_hacking"]
            oracle_curve = [e["oracle_kl"] for e in evals]
            base = {"suite": "hacking", "task": "brown", "method": label, "seed": 0,
                    "steps": steps, "train_blocks": DATA["train_blocks"]}  # fmt: skip
            for metric, value in {
                "teacher_kl": evals[-1]["teacher_kl"],
                "oracle_kl": oracle_curve[-1],
                "oracle_kl_min": min(oracle_curve),
                "oracle_kl_rise": oracle_curve[-1] - min(oracle_curve),
                "test_perplexity": result.metrics["last"]["test"]["perplexity"],
                "hacking_detected": float(verdict["detected"]),
            }.items():
                rows.append({**base, "metric": metric, "value": value})
            for e in evals:
                for metric in ("teacher_kl", "oracle_kl"):
                    rows.append({**base, "metric": f"curve_{metric}", "value": e[metric],
                                 "step": e["step"]})  # fmt: skip
    return rows


def _recipe(data: dict, teacher: dict, method: dict, sections: dict, out: Path) -> dict:
    return {
        "task": "lm", "name": "hacking", "data": data, "teacher": teacher, "student": STUDENT,
        "method": method or {"name": "supervised"}, "output": {"dir": str(out), "report": False},
        **sections,
    }  # fmt: skip


def plot(rows: list[Row], path: Path) -> None:
    """Distance to the teacher and to the oracle over training, per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(figure)
    for panel, metric in enumerate(("curve_teacher_kl", "curve_oracle_kl"), start=1):
        axes = figure.add_subplot(1, 2, panel)
        for method in dict.fromkeys(r["method"] for r in rows):
            points = [(r["step"], r["value"]) for r in rows
                      if r["method"] == method and r["metric"] == metric]  # fmt: skip
            axes.plot(*zip(*points, strict=True), marker="o", markersize=3, label=method)
        axes.set_xlabel("step")
        axes.set_ylabel(metric.removeprefix("curve_").replace("_kl", " KL (nats/token)"))
        axes.set_title("to the teacher" if panel == 1 else "to the oracle")
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


SUITES.register("hacking")(Suite("hacking", collect, plot))
