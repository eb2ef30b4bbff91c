"""The LM commands end to end: cache-teacher, train from the cache, clean errors, demo llm."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from conftest import LM_DATA, lm_recipe
from distil.cli import app

runner = CliRunner()


def write_recipe(tmp_path, recipe) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_cache_then_train_from_the_cache(tmp_path):
    data = dict(LM_DATA, train_blocks=32)
    train = {"max_steps": 10, "batch_size": 8, "eval_every": 10, "checkpoint_every": 10,
             "progress": False}  # fmt: skip
    recipe = lm_recipe(tmp_path, {"name": "kd", "temperature": 1.0}, data=data, train=train)
    recipe["teacher"] = {"tiny": {"hidden": 32, "layers": 1, "heads": 2}}
    path = write_recipe(tmp_path, recipe)
    result = runner.invoke(app, ["cache-teacher", path])
    assert result.exit_code == 0, result.output
    assert "train: 32 blocks, 1,024 tokens" in result.output
    assert (tmp_path / "cache" / "manifest.json").is_file()
    result = runner.invoke(app, ["train", path, f"teacher.cache={tmp_path / 'cache'}",
                                 "teacher.live_eval=false"])  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "kd" / "metrics.json").read_text())
    assert metrics["teachers"]["teacher"]["source"] == "cache" and metrics["last"]["step"] == 10
    assert (tmp_path / "kd" / "student" / "config.json").is_file()  # an HF folder


def test_lm_errors_are_one_line(tmp_path):
    recipe = lm_recipe(tmp_path, {"name": "kd"}, teacher=None)
    result = runner.invoke(app, ["train", write_recipe(tmp_path, recipe)])
    assert result.exit_code == 2
    assert "needs a teacher; the recipe has no teacher section" in result.output
    recipe = lm_recipe(tmp_path, {"name": "kd"}, student={"tiny": {"hidden": 32}, "model": "x"})
    result = runner.invoke(app, ["train", write_recipe(tmp_path, recipe)])
    assert result.exit_code == 2 and "exactly one of 'model'" in result.output
    result = runner.invoke(app, ["cache-teacher", "kd-mnist"])
    assert result.exit_code == 2 and "task: lm" in result.output
    missing = lm_recipe(tmp_path, {"name": "kd"})
    missing["teacher"] = {"cache": str(tmp_path / "nowhere"), "tiny": {"hidden": 32}}
    result = runner.invoke(app, ["train", write_recipe(tmp_path, missing)])
    assert result.exit_code == 2 and "no manifest.json" in result.output


@pytest.mark.slow
def test_demo_llm_quick(tmp_path):
    result = runner.invoke(app, ["demo", "llm", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for row in ("student alone", "forward KL", "reverse KL", "JSD(0.5)", "TAID",
                "forward KL (live)", "GKD (on-policy)"):  # fmt: skip
        assert f"| {row} |" in result.output
    assert "SmolLM2-135M is too slow" in result.output
    rows = json.loads((tmp_path / "metrics.json").read_text())["rows"]
    assert all(r["perplexity"] > 1 for r in rows)


def test_eval_rescores_an_lm_run(tmp_path):
    train = {"max_steps": 6, "batch_size": 8, "eval_every": 6, "checkpoint_every": 6,
             "progress": False}  # fmt: skip
    recipe = lm_recipe(tmp_path, {"name": "supervised"}, teacher=None, train=train,
                       data=dict(LM_DATA, train_blocks=16))  # fmt: skip
    assert runner.invoke(app, ["train", write_recipe(tmp_path, recipe)]).exit_code == 0
    result = runner.invoke(app, ["eval", str(tmp_path / "supervised")])
    assert result.exit_code == 0, result.output
    rescored = json.loads(result.stdout)  # stderr holds the side-by-side view
    saved = json.loads((tmp_path / "supervised" / "metrics.json").read_text())
    assert rescored["perplexity"] == pytest.approx(saved["last"]["test"]["perplexity"], rel=1e-5)
