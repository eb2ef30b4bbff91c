"""The teacher-hacking monitor: trends, the firing rule, and a constructed training run where
the student drifts from the oracle towards a wrong teacher."""

from __future__ import annotations

import json

import pytest

from conftest import LM_DATA, LM_TEACHER, lm_recipe
from distil.config import parse_config
from distil.eval.monitors import TeacherHackingMonitor, relative_trend, teacher_hacking_verdict
from distil.lm.config import LMModelConfig
from distil.lm.resolve import pretrained_folder
from distil.pipeline import run


def test_relative_trend_is_the_fitted_fractional_change():
    assert relative_trend([1.0, 1.5, 2.0, 2.5, 3.0]) == pytest.approx(2.0 / 2.0)
    assert relative_trend([4.0, 4.0, 4.0]) == 0.0
    assert relative_trend([3.0, 2.0, 1.0]) == pytest.approx(-2.0 / 2.0)


def test_fires_only_when_teacher_distance_falls_while_oracle_distance_rises():
    hacking = TeacherHackingMonitor(window=4)
    fired = [hacking.update(s, 1.0 - 0.1 * s, 0.5 + 0.05 * s) for s in range(6)]
    assert fired == [False, False, False, True, True, True]
    assert hacking.fired_at == 3

    healthy = TeacherHackingMonitor(window=4)
    assert not any(healthy.update(s, 1.0 - 0.1 * s, 0.8 - 0.05 * s) for s in range(8))

    noisy = TeacherHackingMonitor(window=4, tolerance=0.01)
    wiggle = [0.0, 0.002, -0.002, 0.001, -0.001, 0.002]
    assert not any(noisy.update(s, 1.0 - w, 0.5 + w) for s, w in enumerate(wiggle))


def test_the_warning_names_what_it_counts(caplog):
    """A validator is not told the step: its monitor counts evaluations and says so (the
    warning used to read "at 4" for the fourth evaluation of a run whose verdict said step
    20). Bug caught: the unit dropped from the message."""
    monitor = TeacherHackingMonitor(window=3, unit="evaluation")
    with caplog.at_level("WARNING", logger="distil"):
        for n in range(1, 5):
            monitor.update(n, 1.0 - 0.1 * n, 0.5 + 0.05 * n)
    assert "teacher hacking (at evaluation 3)" in caplog.text


def test_verdict_replays_a_runs_validation_log(tmp_path):
    log = tmp_path / "metrics.jsonl"
    rows = [{"kind": "train", "step": 1, "loss": 2.0}] + [
        {"kind": "eval", "step": 10 * s, "teacher_kl": 1.0 - 0.1 * s, "oracle_kl": 0.4 + 0.1 * s}
        for s in range(1, 6)
    ]
    log.write_text("\n".join(json.dumps(r) for r in rows))
    verdict = teacher_hacking_verdict(log, window=4)
    assert verdict["detected"] and verdict["first_step"] == 40
    assert verdict["oracle_kl"]["min"] == pytest.approx(0.5)
    assert teacher_hacking_verdict(tmp_path / "missing.jsonl") is None


def test_monitor_fires_when_a_student_is_distilled_from_a_wrong_teacher(tmp_path, lm_data):
    """Constructed teacher hacking: the student starts as the oracle (a pretrained LM) and is
    distilled from a teacher that is wrong everywhere (an untrained LM). Its distance to the
    teacher falls while its distance to the oracle rises — the monitor must say so. The
    control — distilling from the oracle itself — must not fire."""
    oracle = str(
        pretrained_folder(
            LMModelConfig(**LM_TEACHER), lm_data.tokenizer, lm_data.teacher_train, "t"
        )
    )
    train = {
        "max_steps": 40, "batch_size": 16, "lr": 0.0003, "eval_every": 5,
        "checkpoint_every": 40, "progress": False,
    }  # fmt: skip
    evaluation = {"batch_size": 32, "oracle": {"model": oracle}, "hacking_window": 4}
    method = {"name": "kd", "temperature": 1.0, "alpha": 1.0}
    wrong = {"tiny": {"hidden": 32, "layers": 1, "heads": 2, "seed": 7}}
    hacked = run(parse_config(lm_recipe(
        tmp_path, method, name="hacked", data=LM_DATA, student={"model": oracle},
        teacher=wrong, train=train, eval=evaluation,
    )))  # fmt: skip
    verdict = hacked.metrics["lm"]["teacher_hacking"]
    assert verdict["detected"], verdict
    assert verdict["teacher_kl"]["last"] < verdict["teacher_kl"]["first"]
    assert verdict["oracle_kl"]["last"] > verdict["oracle_kl"]["first"]

    control = run(parse_config(lm_recipe(
        tmp_path, method, name="control", data=LM_DATA, student=lm_recipe(tmp_path, method)["student"],
        teacher={"model": oracle}, train=train, eval=evaluation,
    )))  # fmt: skip
    assert not control.metrics["lm"]["teacher_hacking"]["detected"]
