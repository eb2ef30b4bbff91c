"""Diagnostics that tell the truth, on real runs: the teacher's calibration beside the
student's in metrics.json, the report and ``distil eval``; an LM run's teacher-hacking
curves and verdict in its report; the fidelity study's doc table as its JSON says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import LM_DATA, LM_TEACHER, TINY_RECIPE, lm_recipe
from distil.cli import app
from distil.config import load_config, parse_config
from distil.pipeline import run
from distil.report import html as report_html
from distil.report import plots, write_report

ROOT = Path(__file__).resolve().parents[2]


def ece_from_bins(bins: dict) -> float:
    """ECE recomputed from stored bins (Guo et al. 2017): Σ_b n_b/N · |acc_b − conf_b|."""
    total = sum(bins["count"])
    return sum(
        count / total * abs(acc - conf)
        for count, acc, conf in zip(
            bins["count"], bins["accuracy"], bins["confidence"], strict=True
        )  # fmt: skip
        if count
    )


@pytest.fixture(scope="module")
def kd_run(tmp_path_factory) -> Path:
    """One real tiny KD run on digits (about ten seconds)."""
    folder = tmp_path_factory.mktemp("diagnostics")
    recipe = folder / "tiny.yaml"
    recipe.write_text(TINY_RECIPE.replace("OUT", str(folder / "run")))
    return run(load_config(str(recipe))).run_dir


def test_metrics_json_holds_the_teachers_reliability_beside_the_students(kd_run):
    metrics = json.loads((kd_run / "metrics.json").read_text())
    block = metrics["classification"]
    teacher_bins = block["teacher_reliability"]["teacher"]
    assert sum(teacher_bins["count"]) == sum(block["reliability"]["student"]["count"])
    # the bins are the teacher's own: they give back the teacher's ECE, not the student's
    assert ece_from_bins(teacher_bins) == pytest.approx(
        metrics["teachers"]["teacher"]["test"]["ece"]
    )
    assert ece_from_bins(block["reliability"]["student"]) == pytest.approx(
        metrics["last"]["test"]["ece"]
    )


def test_the_report_draws_the_teacher_beside_the_student(kd_run, tmp_path, monkeypatch):
    drawn = {}

    def spy(reliability_by_label, path, ece_by_label=None, teacher_labels=()):
        drawn.update(bins=dict(reliability_by_label), eces=dict(ece_by_label or {}),
                     teachers=set(teacher_labels))  # fmt: skip
        return plots.plot_reliability(reliability_by_label, path, ece_by_label, teacher_labels)

    monkeypatch.setattr(report_html, "plot_reliability", spy)
    write_report([kd_run], tmp_path / "report.html", title="calibration")
    metrics = json.loads((kd_run / "metrics.json").read_text())
    assert list(drawn["bins"])[0] == "teacher" and drawn["teachers"] == {"teacher"}
    assert drawn["bins"]["teacher"] == metrics["classification"]["teacher_reliability"]["teacher"]
    assert drawn["eces"]["teacher"] == metrics["teachers"]["teacher"]["test"]["ece"]
    students = [label for label in drawn["bins"] if label != "teacher"]
    assert len(students) == 1
    assert drawn["bins"][students[0]] == metrics["classification"]["reliability"]["student"]


def test_distil_eval_prints_generalisation_beside_fidelity(kd_run):
    result = CliRunner().invoke(app, ["eval", str(kd_run)])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)  # stdout stays JSON for scripts
    metrics = json.loads((kd_run / "metrics.json").read_text())
    teacher = metrics["teachers"]["teacher"]["test"]
    assert evaluated["teacher"] == {"name": "teacher", **teacher}
    assert evaluated["ece"] == pytest.approx(metrics["last"]["test"]["ece"], abs=1e-6)
    lines = {" ".join(line.split()) for line in result.stderr.splitlines()}
    text = "\n".join(lines)
    for label, value in (("student accuracy", evaluated["accuracy"]),
                         ("student ECE", evaluated["ece"]),
                         ("teacher accuracy", teacher["accuracy"]),
                         ("teacher ECE", teacher["ece"]),
                         ("agreement (top-1)", evaluated["agreement"]),
                         ("KL(teacher ‖ student)", evaluated["teacher_kl"])):  # fmt: skip
        assert re.search(rf"(^| ){re.escape(label)} {value:.4f}( |$)", text, re.M), (label, text)


@pytest.mark.slow
def test_an_lm_report_draws_the_teacher_hacking_curves(tmp_path, lm_data, monkeypatch):
    """The constructed hacking run of tests/test_monitors.py (a pretrained student distilled
    from an untrained teacher, the pretrained LM as oracle): its report holds one panel with
    both distances per evaluation, the monitor's step marked, and the verdict."""
    from distil.lm.config import LMModelConfig
    from distil.lm.resolve import pretrained_folder

    oracle = str(pretrained_folder(LMModelConfig(**LM_TEACHER), lm_data.tokenizer,
                                   lm_data.teacher_train, "t"))  # fmt: skip
    train = {"max_steps": 40, "batch_size": 16, "lr": 0.0003, "eval_every": 5,
             "checkpoint_every": 40, "progress": False}  # fmt: skip
    hacked = run(parse_config(lm_recipe(
        tmp_path, {"name": "kd", "temperature": 1.0, "alpha": 1.0}, name="hacked", data=LM_DATA,
        student={"model": oracle}, teacher={"tiny": {"hidden": 32, "layers": 1, "heads": 2,
                                                     "seed": 7}},
        train=train, eval={"batch_size": 32, "oracle": {"model": oracle}, "hacking_window": 4},
    )))  # fmt: skip
    verdict = hacked.metrics["lm"]["teacher_hacking"]
    assert verdict["detected"], verdict
    evals = [json.loads(line) for line in (hacked.run_dir / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in line]  # fmt: skip

    drawn = []
    real_save = plots._save

    def keep_lines(figure, path):
        if Path(path).name == "hacking.png":
            drawn.extend((line.get_label(), list(line.get_xdata()), list(line.get_ydata()))
                         for axes in figure.axes for line in axes.get_lines())  # fmt: skip
        return real_save(figure, path)

    monkeypatch.setattr(plots, "_save", keep_lines)
    html = write_report([hacked.run_dir], tmp_path / "report.html", title="hacking").read_text()
    lines = {label.split(": ", 1)[1]: (xs, ys) for label, xs, ys in drawn}
    steps = [e["step"] for e in evals]
    assert lines["KL to teacher"] == (steps, [e["teacher_kl"] for e in evals])
    assert lines["KL to oracle"] == (steps, [e["oracle_kl"] for e in evals])
    marked = lines[f"hacking detected at step {verdict['first_step']}"]
    assert marked[0] == [verdict["first_step"]] * 2  # a vertical line at the step
    assert html.count("data:image/png;base64,") == 3  # curves, perplexity bars, hacking
    assert f"<td>detected at step {verdict['first_step']}</td>" in html
    assert f"{verdict['oracle_kl']['first']:.3f} → min {verdict['oracle_kl']['min']:.3f}" in html


def test_the_fidelity_page_quotes_the_committed_results():
    """docs/diagnostics.md's table is `distil bench fidelity --show` of the committed JSON."""
    from distil.bench import load_results, summary_table

    rows = load_results("fidelity", ROOT / "benchmarks" / "results")
    page = (ROOT / "docs" / "diagnostics.md").read_text(encoding="utf-8")
    assert summary_table(rows) in page
    payload = json.loads((ROOT / "benchmarks" / "results" / "fidelity.json").read_text())
    assert not payload["quick"]
    seeds = {(r["method"], r["seed"]) for r in rows}
    assert len({m for m, _ in seeds}) >= 5 and len(seeds) >= 15  # 4+ teachers and alone, 3 seeds
