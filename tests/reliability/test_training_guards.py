"""Training guards: a run stops with a clear error where it can no longer be trusted, and
nothing it already did well is lost or overwritten.

* a non-finite loss part or gradient stops the run before the optimizer moves, naming the
  step and the part, and the last good checkpoint stays;
* non-finite weights are never checkpointed;
* every metrics file is strict JSON (no bare NaN);
* an output folder that cannot be written, or a full disk, is refused before any work;
* ``distil eval`` on a run that did not finish says so.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import namedtuple
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import torch
import torch.nn.functional as F

from distil.config import load_config
from distil.data import load_data
from distil.errors import ConfigError, TrainingError
from distil.eval.checkpointed import evaluate_run
from distil.methods import METHODS, LossOutput, Method, MethodConfig, register_method
from distil.methods.base import Need
from distil.pipeline import run
from distil.train.checkpoint import load_model_state, read_pointer
from distil.train.state_io import write_json


def strict_json(text: str) -> Any:
    """Parse as strict JSON: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


class FaultConfig(MethodConfig):
    name: Literal["fault"] = "fault"
    kind: Literal["nan_loss", "nan_gradient", "nan_weight"] = "nan_loss"
    from_step: int = 6  # the 1-based step the fault starts at


if "fault" not in METHODS:

    @register_method
    class Fault(Method):
        """Cross-entropy, and from ``from_step`` on the fault it is told to inject."""

        name = "fault"
        Config = FaultConfig
        needs: ClassVar[frozenset[Need]] = frozenset()
        steps_done = 0

        def loss(self, student, teachers, batch) -> LossOutput:
            ce = F.cross_entropy(student.logits, batch["labels"])
            terms = {"ce": (1.0, ce)}
            faulty = self.steps_done + 1 >= self.config.from_step
            if self.config.kind == "nan_loss":
                terms["boom"] = (0.5, ce * (math.nan if faulty else 0.0))
            elif self.config.kind == "nan_gradient" and faulty:
                # finite value (0), non-finite gradient: d sqrt(x)/dx at 0 times 0
                terms["root"] = (1.0, (student.logits * 0).abs().sqrt().sum())
            return LossOutput.combine(terms)

        def on_step_end(self, step: int, total_steps: int, loss: LossOutput) -> None:
            self.steps_done = step
            if self.config.kind == "nan_weight" and step == self.config.from_step:
                with torch.no_grad():
                    next(self.context.student.parameters()).view(-1)[0] = math.nan


@pytest.fixture(scope="module")
def digits():
    return load_data(load_config("kd-digits").data)


def faulty_run(tiny_recipe: Path, digits, out: Path, kind: str, from_step: int = 6):
    overrides = [f"method={{name: fault, kind: {kind}, from_step: {from_step}}}", "teacher=null",
                 "train.checkpoint_every=4", "train.log_every=1", f"output.dir={out}"]  # fmt: skip
    return run(load_config(tiny_recipe, overrides), data=digits)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("nan_loss", r"step 6: the loss is not finite \(part .boom."),
        ("nan_gradient", "step 6: the gradient is not finite"),
    ],
)
def test_a_non_finite_loss_or_gradient_stops_the_run_and_keeps_the_last_good_checkpoint(
    tiny_recipe, digits, tmp_path, kind, message
):
    out = tmp_path / kind
    with pytest.raises(TrainingError, match=message) as error:
        faulty_run(tiny_recipe, digits, out, kind)
    assert "last good checkpoint (step 4) is kept" in str(error.value)
    assert "\n" not in str(error.value)
    checkpoints = out / "checkpoints"
    assert read_pointer(checkpoints, "last")["step"] == 4
    assert all(torch.isfinite(t).all() for t in load_model_state(checkpoints, "last").values())
    rows = [strict_json(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows if r["kind"] == "train") == 5  # step 6 never logged


def test_non_finite_weights_are_never_checkpointed(tiny_recipe, digits, tmp_path):
    out = tmp_path / "weights"
    with pytest.raises(TrainingError, match="step 8: weights are not finite") as error:
        faulty_run(tiny_recipe, digits, out, "nan_weight", from_step=8)
    assert "student." in str(error.value)  # names the tensor
    assert read_pointer(out / "checkpoints", "last")["step"] == 4
    assert not (out / "checkpoints" / "step-000008").exists()


def test_metrics_files_are_strict_json(tmp_path):
    write_json(tmp_path / "m.json", {"a": math.nan, "b": [1.0, math.inf], "c": {"d": -math.inf}})
    assert strict_json((tmp_path / "m.json").read_text()) == {
        "a": None,
        "b": [1.0, None],
        "c": {"d": None},
    }
    from distil.train.progress import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl", enabled=True, resume_step=None)
    log.write({"kind": "eval", "step": 1, "agreement": math.nan})
    assert strict_json((tmp_path / "metrics.jsonl").read_text())["agreement"] is None


def test_an_unwritable_output_folder_is_refused_before_any_work(tiny_recipe, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    loaded = []
    monkeypatch.setattr("distil.tasks.classification.load_data", lambda *a: loaded.append(1))
    with pytest.raises(ConfigError, match=r"output.dir: .*a-file/run cannot be written"):
        run(load_config(tiny_recipe, [f"output.dir={blocker / 'run'}"]))
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(ConfigError, match="only 1 MiB free"):
        run(load_config(tiny_recipe, [f"output.dir={tmp_path / 'full'}"]))
    assert loaded == []  # the data was never loaded


def test_eval_of_an_unfinished_run_says_so(tiny_recipe, digits, tmp_path):
    out = tmp_path / "unfinished"
    with pytest.raises(TrainingError):
        faulty_run(tiny_recipe, digits, out, "nan_loss")
    with pytest.raises(ConfigError, match="did not finish .*last checkpoint is at step 4"):
        evaluate_run(out)
    assert 0 <= evaluate_run(out, unfinished=True)["accuracy"] <= 1


# ----------------------------------------------------------------------------- options at which a loss vanishes


def test_jsd_at_its_ends_is_a_kl_on_the_fused_path_too_not_a_silent_zero():
    """β = 0 or 1 made JSD identically zero with zero gradient: a GKD configuration ported
    from TRL (β = 0 forward KL, β = 1 reverse KL) trained nothing, without a word."""
    from distil import losses
    from distil.losses.fused_lm import fused_lm_loss
    from distil.methods import build_method

    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 3, 8, generator=generator, dtype=torch.float64)
    head = torch.randn(13, 8, generator=generator, dtype=torch.float64)
    teacher = torch.randn(2, 3, 13, generator=generator, dtype=torch.float64)
    labels = torch.tensor([[1, 2, -100], [3, 4, 5]])
    for beta, kl in ((0.0, "forward_kl"), (1.0, "reverse_kl")):
        fused = fused_lm_loss(hidden, head, labels=labels, teacher=teacher, divergence="jsd",
                              beta=beta, kd_weight=1.0).kd  # fmt: skip
        reference = fused_lm_loss(hidden, head, labels=labels, teacher=teacher,
                                  divergence=kl, kd_weight=1.0).kd  # fmt: skip
        assert float(fused) > 0
        torch.testing.assert_close(fused, reference)
        logits = (hidden @ head.T).requires_grad_()
        (gradient,) = torch.autograd.grad(losses.jsd(logits, teacher, beta=beta), logits)
        assert gradient.abs().sum() > 0
    assert build_method({"name": "gkd", "beta": 0.0}).config.beta == 0.0
