"""The command line, run as a real subprocess: what a user types and sees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DISTIL = [sys.executable, "-m", "distil"]


def distil(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*DISTIL, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ.copy(),
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"distil {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def test_help_lists_the_commands():
    out = distil("--help").stdout
    for command in ("train", "eval", "report", "list", "demo", "bench"):
        assert command in out


def test_list_shows_registered_and_shipped_things():
    assert "kd" in distil("list", "methods").stdout
    assert "forward_kl" in distil("list", "losses").stdout
    assert "demo" in distil("list", "recipes").stdout
    assert "resnet8x4" in distil("list", "models").stdout
    assert (
        "lm " in distil("list", "tasks").stdout
        and "classification" in distil("list", "tasks").stdout
    )


def test_a_typo_is_one_line_with_a_suggestion_and_exit_2(tiny_recipe):
    result = distil("train", str(tiny_recipe), "method.temprature=2", check=False)
    assert result.returncode == 2
    assert "did you mean 'temperature'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_train_eval_report_round_trip(tiny_recipe, tmp_path):
    out = distil(
        "train", str(tiny_recipe), "train.mixed_precision=bf16", "output.report=true"
    ).stdout
    run_dir = tmp_path / "run"
    assert "| kd |" in out and (run_dir / "report.html").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    evaluated = json.loads(distil("eval", str(run_dir), "--checkpoint", "best").stdout)
    assert evaluated["accuracy"] == pytest.approx(metrics["best_val"]["test"]["accuracy"], abs=0.02)
    report = tmp_path / "compare.html"
    table = distil("report", str(run_dir), "--out", str(report)).stdout
    assert report.is_file() and "| kd |" in table


@pytest.mark.slow
def test_demo_quick(tmp_path):
    out = distil("demo", "--quick", "--out", str(tmp_path / "demo")).stdout
    assert "| supervised |" in out and "| kd |" in out
    metrics = json.loads((tmp_path / "demo/metrics.json").read_text())
    methods = [row["method"] for row in metrics["rows"]]
    assert methods == ["teacher", "supervised", "kd"]
    for row in metrics["rows"]:
        assert {"method", "accuracy", "ece", "agreement", "nll"} <= set(row)
    assert (tmp_path / "demo/report.html").stat().st_size > 10_000


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tiny_recipe, tmp_path):
    common = ["train.epochs=12", "train.checkpoint_every=10", "student.options.dropout=0.1"]
    distil("train", str(tiny_recipe), *common, f"output.dir={tmp_path / 'straight'}")

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [*DISTIL, "train", str(tiny_recipe), *common, f"output.dir={killed_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pointer = killed_dir / "checkpoints" / "last.json"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if pointer.is_file() and json.loads(pointer.read_text())["step"] >= 30:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed_dir / "metrics.json").exists()

    distil("train", str(tiny_recipe), *common, f"output.dir={killed_dir}", "--resume")
    straight = json.loads((tmp_path / "straight/metrics.json").read_text())
    resumed = json.loads((killed_dir / "metrics.json").read_text())
    assert resumed["last"] == straight["last"]
    assert resumed["best_val"] == straight["best_val"]
