"""The seams every task, teacher set and cohort goes through.

* A third task (regression on a synthetic function), defined here and nowhere in distil,
  trains through the ordinary ``run`` with ``supervised`` and with a KD-style method — adding
  a task needs nothing changed in the loop, the methods, the reports or the CLI.
* N identical teachers averaged teach exactly what one teacher does.
* A method's peers are evaluated, checkpointed, resumed and reported as students of the run.
* What a method needs is checked before anything is built, in one line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from distil.config import RunConfig, load_config, parse_config
from distil.data import load_data
from distil.errors import ConfigError
from distil.eval.checkpointed import evaluate_run
from distil.methods import METHODS, LossOutput, Method, MethodConfig, build_method, register_method
from distil.methods.base import Need, SetupContext
from distil.outputs import ModelOutputs
from distil.pipeline import run
from distil.report import load_run, summary_rows
from distil.tasks import TASKS, Task, TeacherSet, register_task
from distil.teachers import ModuleTeacher

# ----------------------------------------------------------------------------- a third task


def target_function(inputs: torch.Tensor) -> torch.Tensor:
    """What the regression task's data follow (plus label noise)."""
    return torch.sin(3 * inputs[:, 0]) + inputs[:, 1] ** 2


class CurveData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: int = 512
    labelled: int = Field(48, description="training samples that carry a label")
    noise: float = 0.5
    seed: int = 0


class Regressor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hidden: int = 32
    exact: bool = Field(False, description="a teacher that knows the noiseless function")


class RegressionEval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    select_metric: Literal["mse"] = "mse"
    batch_size: int = 256


class RegressionConfig(RunConfig):
    task: Literal["regression"] = "regression"
    data: CurveData = Field(default_factory=CurveData)
    teachers: dict[str, Regressor] = Field(default_factory=dict)
    student: Regressor = Field(default_factory=Regressor)
    eval: RegressionEval = Field(default_factory=RegressionEval)


#: The target of a sample that has no label (distil's usual "ignore" value).
NO_LABEL = -100.0


class CurveSplit(torch.utils.data.Dataset):
    """Samples with a target each; an unlabelled one's target is NO_LABEL."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"inputs": self.inputs[index], "labels": self.targets[index], "index": index}


class Exact(nn.Module):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return target_function(inputs)[:, None]


class RegressionTask(Task):
    name = "regression"
    Config = RegressionConfig
    provides = frozenset({Need.TEACHER})

    def load_data(self):
        spec = self.config.data
        generator = torch.Generator().manual_seed(spec.seed)
        inputs = torch.rand(spec.samples + 256, 2, generator=generator) * 2 - 1
        targets = target_function(inputs)
        noisy = targets + spec.noise * torch.randn(len(targets), generator=generator)
        train_targets = noisy[: spec.samples].clone()
        train_targets[spec.labelled :] = NO_LABEL  # most training samples have no label
        splits = type("Splits", (), {})()
        splits.train = CurveSplit(inputs[: spec.samples], train_targets)
        splits.val = CurveSplit(
            inputs[spec.samples : spec.samples + 128], targets[spec.samples : spec.samples + 128]
        )
        splits.test = CurveSplit(inputs[spec.samples + 128 :], targets[spec.samples + 128 :])
        return splits

    def _network(self, spec: Regressor) -> nn.Module:
        if spec.exact:
            return Exact()
        return nn.Sequential(nn.Linear(2, spec.hidden), nn.Tanh(), nn.Linear(spec.hidden, 1))

    def build_student(self, data) -> nn.Module:
        return self._network(self.config.student)

    def build_teachers(self, data, method, accelerator) -> TeacherSet:
        teachers = TeacherSet()
        for name, spec in self.config.teachers.items():
            teacher = ModuleTeacher(self._network(spec))
            teachers.training[name], teachers.sources[name] = teacher, "live"
            for split in ("val", "test"):
                teachers.references.setdefault(split, {})[name] = teacher
        return teachers

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> ModelOutputs:
        return ModelOutputs(logits=model(batch["inputs"]))

    def target_loss(self, student: ModelOutputs, batch: dict[str, Any], **options) -> LossOutput:
        labels = batch["labels"]
        known = labels != NO_LABEL
        error = (student.logits[:, 0] - labels.where(known, 0.0)) ** 2
        mse = (error * known).sum() / known.sum().clamp_min(1)
        return LossOutput.combine({"mse": (1.0, mse)})

    def validator(self, data, teachers, device=None):
        return lambda model, device: self.evaluate(model, data, "val", teachers, device)

    @torch.no_grad()
    def evaluate(self, model, data, split, teachers, device) -> dict[str, float]:
        dataset = getattr(data, split)
        was_training = model.training
        model.eval()
        predictions = model(dataset.inputs)[:, 0]
        model.train(was_training)
        return {"mse": float(F.mse_loss(predictions, dataset.targets))}


@register_method
class RegressionKD(Method):
    """(1 − α)·MSE to the labels + α·MSE to the teacher's prediction, on every sample."""

    class Config(MethodConfig):
        name: Literal["regression_kd"] = "regression_kd"
        alpha: float = 0.5

    name = "regression_kd"
    needs: ClassVar[frozenset[Need]] = frozenset({Need.TEACHER})

    def loss(self, student, teachers: Mapping[str, ModelOutputs], batch) -> LossOutput:
        (teacher,) = teachers.values()
        labels = self.target_loss(student, batch).total
        imitation = F.mse_loss(student.logits, teacher.logits)
        alpha = self.config.alpha
        return LossOutput.combine({"mse": (1 - alpha, labels), "teacher": (alpha, imitation)})


if "regression" not in TASKS:
    register_task(RegressionTask)


def regression_recipe(tmp_path: Path, method: dict, **sections) -> RunConfig:
    return parse_config({
        "task": "regression", "name": "curve", "method": method,
        "teacher": {"exact": True},
        "train": {"epochs": 40, "batch_size": 64, "lr": 0.03, "progress": False,
                  "balance_every": 0, "eval_every": 40},
        "output": {"dir": str(tmp_path / method["name"]), "report": True},
        **sections,
    })  # fmt: skip


def test_a_third_task_trains_with_supervised_and_with_a_kd_style_method(tmp_path):
    """A task defined in this file runs through the ordinary ``run``: supervised learns from
    the 48 noisy labels only; a KD-style method also learns on the 464 unlabelled samples from
    an exact teacher and is clearly better — unlabelled samples carry loss."""
    alone = run(regression_recipe(tmp_path, {"name": "supervised"}))
    distilled = run(regression_recipe(tmp_path, {"name": "regression_kd", "alpha": 0.8}))
    for result in (alone, distilled):
        metrics = json.loads((result.run_dir / "metrics.json").read_text())
        assert metrics["task"] == "regression" and metrics["run"]["task"] == "regression"
        assert (
            metrics["best_val"]["test"]["mse"] >= 0 and (result.run_dir / "report.html").is_file()
        )
    start = float(target_function(torch.rand(4096, 2) * 2 - 1).var())  # predicting the mean
    assert alone.metrics["last"]["test"]["mse"] < start  # it learnt something...
    # seeds 0 and 1 measured: 0.233 / 0.263 alone, 0.015 / 0.011 distilled
    assert distilled.metrics["last"]["test"]["mse"] < 0.25 * alone.metrics["last"]["test"]["mse"]
    rows = {
        row["method"]: row
        for row in summary_rows([load_run(alone.run_dir), load_run(distilled.run_dir)])
    }
    assert rows["regression_kd"]["mse"] == pytest.approx(distilled.metrics["last"]["test"]["mse"])


def test_unlabelled_samples_weigh_in_the_accumulated_step(tmp_path):
    """Micro-batches weigh by the task's target count — samples here, labelled or not — so
    a teacher term on mostly unlabelled data accumulated over two micro-batches equals one
    whole-batch step under plain SGD (AdamW would hide a scale error). Weighing by labels
    (20 of 64 here, split unevenly between the halves) would tilt the step."""
    from distil.train.checkpoint import load_model_state

    def train(accumulate: int) -> dict[str, torch.Tensor]:
        config = regression_recipe(
            tmp_path / f"accumulate-{accumulate}", {"name": "regression_kd", "alpha": 1.0},
            data={"samples": 64, "labelled": 20},
        )  # fmt: skip
        train_config = config.train.model_copy(update={
            "epochs": 1, "batch_size": 64, "grad_accum_steps": accumulate, "optimizer": "sgd",
            "momentum": 0.0, "schedule": "constant", "lr": 0.5})  # fmt: skip
        result = run(config.model_copy(update={"train": train_config}))
        return load_model_state(result.run_dir / "checkpoints", "last")

    whole, halves = train(1), train(2)
    torch.manual_seed(0)  # the run's seed: the student it started from
    start = RegressionTask(None)._network(Regressor()).state_dict()
    for key in whole:
        torch.testing.assert_close(halves[key], whole[key], rtol=1e-5, atol=1e-6)
    assert any((whole[key] - start[key]).abs().max() > 1e-3 for key in whole)  # it moved


# ----------------------------------------------------------------------------- many teachers


@pytest.fixture(scope="module")
def digits():
    return load_data(load_config("kd-digits").data)


def _two_teachers(tiny_recipe: Path, out: Path, weights: str | None = None) -> list[str]:
    teacher = (
        "{model: cnn, options: {channels: [8, 16], hidden: 32}, pretrain: {epochs: 4, lr: 0.005}}"
    )
    overrides = ["teacher=null", f"teachers={{a: {teacher}, b: {teacher}}}", f"output.dir={out}"]
    return overrides + ([f"method.teacher_weights={weights}"] if weights else [])


def test_n_identical_teachers_averaged_teach_what_one_teacher_does(tiny_recipe, digits, tmp_path):
    one = run(load_config(tiny_recipe, [f"output.dir={tmp_path / 'one'}"]), data=digits).metrics
    two = run(
        load_config(tiny_recipe, _two_teachers(tiny_recipe, tmp_path / "two")), data=digits
    ).metrics
    skewed = run(
        load_config(tiny_recipe, _two_teachers(tiny_recipe, tmp_path / "skew", "{a: 3, b: 1}")),
        data=digits,
    ).metrics
    for other in (two, skewed):
        for key, value in one["last"]["test"].items():
            assert other["last"]["test"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert set(two["teachers"]) == {"a", "b"}
    assert (
        two["teachers"]["a"]["test"]
        == two["teachers"]["b"]["test"]
        == one["teachers"]["teacher"]["test"]
    )
    rows = [row["method"] for row in summary_rows([load_run(tmp_path / "two")])]
    assert rows[:2] == ["teacher:a", "teacher:b"]


def _random_logits(seed: int, shape=(6, 5)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "dkd"])
def test_kd_loss_with_n_identical_teachers_equals_one_teacher(divergence):
    kd = build_method({"name": "kd", "divergence": divergence, "alpha": 0.6})
    student = _random_logits(0).requires_grad_()
    teacher = ModelOutputs(_random_logits(1))
    batch = {"labels": torch.tensor([0, 1, 2, 3, 4, 0])}
    one = kd.loss(ModelOutputs(student), {"t": teacher}, batch)
    (grad_one,) = torch.autograd.grad(one.total, student)
    three = kd.loss(ModelOutputs(student), {"a": teacher, "b": teacher, "c": teacher}, batch)
    (grad_three,) = torch.autograd.grad(three.total, student)
    torch.testing.assert_close(three.total, one.total)
    torch.testing.assert_close(grad_three, grad_one)
    assert three.parts.keys() == one.parts.keys() and three.weights == one.weights
    # and two different teachers give the weighted mean of their terms
    other = ModelOutputs(_random_logits(2))
    mixed = kd.loss(ModelOutputs(student), {"t": teacher, "u": other}, batch)
    alone = kd.loss(ModelOutputs(student), {"u": other}, batch)
    torch.testing.assert_close(mixed.parts["kd"], (one.parts["kd"] + alone.parts["kd"]) / 2)


def test_kd_with_n_identical_teachers_on_a_language_model_equals_one_teacher():
    """The fused LM-head path and a sparse top-k teacher average the same way."""
    from distil.losses import TopK

    hidden = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(3)).requires_grad_()
    head = torch.randn(11, 8, generator=torch.Generator().manual_seed(4))
    student = ModelOutputs(logits=None, hidden=hidden, head=head, vocab_size=11)
    logprobs, indices = _random_logits(5, (2, 3, 11)).log_softmax(-1).topk(4)
    teacher = ModelOutputs(TopK(indices=indices, logprobs=logprobs))
    batch = {"labels": torch.tensor([[1, 2, -100], [3, 4, 5]])}
    kd = build_method({"name": "kd", "temperature": 1.0, "alpha": 0.5})
    one = kd.loss(student, {"t": teacher}, batch)
    (grad_one,) = torch.autograd.grad(one.total, hidden)
    two = kd.loss(student, {"a": teacher, "b": teacher}, batch)
    (grad_two,) = torch.autograd.grad(two.total, hidden)
    torch.testing.assert_close(two.total, one.total)
    torch.testing.assert_close(grad_two, grad_one)


# ----------------------------------------------------------------------------- a cohort


@register_method
class TinyCohort(Method):
    """Test method: the student and two peers, each trained on the labels, each also pulled
    towards the cohort's mean prediction (a mutual-learning shape)."""

    class Config(MethodConfig):
        name: Literal["tiny_cohort"] = "tiny_cohort"

    name = "tiny_cohort"
    needs: ClassVar[frozenset[Need]] = frozenset()

    def setup(self, context: SetupContext) -> None:
        self.cohort = nn.ModuleDict(
            {"peer1": context.build_student(), "peer2": context.build_student()}
        )

    def peers(self) -> dict[str, nn.Module]:
        return dict(self.cohort.items())

    def loss(self, student, teachers, batch) -> LossOutput:
        outputs = [student] + [self.context.forward(peer, batch) for peer in self.cohort.values()]
        labels = sum(self.target_loss(out, batch).total for out in outputs)
        mean = torch.stack([out.logits.detach().softmax(-1) for out in outputs]).mean(0)
        mutual = sum(
            F.kl_div(out.logits.log_softmax(-1), mean, reduction="batchmean") for out in outputs
        )
        return LossOutput.combine({"ce": (1.0, labels), "mutual": (0.5, mutual)})


def test_peers_are_evaluated_checkpointed_resumed_and_reported(
    tiny_recipe, digits, tmp_path, monkeypatch
):
    overrides = [
        "method={name: tiny_cohort}",
        "teacher=null",
        "train.epochs=2",
        "train.checkpoint_every=9",
    ]
    straight = run(
        load_config(tiny_recipe, overrides + [f"output.dir={tmp_path / 's'}"]), data=digits
    )
    metrics = straight.metrics
    assert set(metrics["students"]) == {"student", "peer1", "peer2"}
    for name in ("peer1", "peer2"):
        block = metrics["students"][name]
        assert block["last"]["test"]["accuracy"] > 0.5 and block["best_val"]["step"] >= 1
        assert (straight.run_dir / "checkpoints" / f"best-{name}.json").is_file()
        again = evaluate_run(straight.run_dir, checkpoint="best", student=name)
        assert again["accuracy"] == pytest.approx(block["best_val"]["test"]["accuracy"])
    peers_differ = (
        metrics["students"]["peer1"]["last"]["test"] != metrics["students"]["peer2"]["last"]["test"]
    )
    assert peers_differ  # two models, not one twice
    history = [
        json.loads(line) for line in (straight.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    students = {row.get("student") for row in history if row["kind"] == "eval"}
    assert students == {None, "peer1", "peer2"}
    for name in ("peer1", "peer2"):  # each peer's best is picked by its own validation curve
        curve = [(row["accuracy"], -row["step"]) for row in history
                 if row["kind"] == "eval" and row.get("student") == name]  # fmt: skip
        best_accuracy, best_step = max(curve)
        assert metrics["students"][name]["best_val"]["step"] == -best_step
        best_val = metrics["students"][name]["best_val"]["val"]["accuracy"]
        assert best_val == pytest.approx(best_accuracy)
    rows = {row["method"]: row for row in summary_rows([load_run(straight.run_dir)])}
    assert rows["tiny_cohort:peer1"]["accuracy"] == pytest.approx(
        metrics["students"]["peer1"]["last"]["test"]["accuracy"]
    )

    # killed after step 9's checkpoint, then resumed: the same cohort at the end
    from distil.train.trainer import Trainer

    original, calls = Trainer._step, {"n": 0}

    def dies_at_step_12(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    killed = load_config(tiny_recipe, overrides + [f"output.dir={tmp_path / 'k'}"])
    monkeypatch.setattr(Trainer, "_step", dies_at_step_12)
    with pytest.raises(KeyboardInterrupt):
        run(killed, data=digits)
    monkeypatch.setattr(Trainer, "_step", original)
    resumed = run(killed, data=digits, resume=True).metrics
    for name in ("student", "peer1", "peer2"):
        assert resumed["students"][name]["last"] == metrics["students"][name]["last"], name
        assert resumed["students"][name]["best_val"] == metrics["students"][name]["best_val"], name


# ----------------------------------------------------------------------------- the contract


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method={name: gkd}"], "needs a live teacher"),
        (
            [
                "method={name: fitnet, student_layer: net.0, teacher_layer: features.0}",
                "teacher=null",
                "teachers={a: {model: mlp}, b: {model: mlp}}",
            ],
            "listens to 1 teacher",
        ),
        (["method={name: kd}", "teacher=null"], "needs a teacher"),
        (["task=clasification"], "did you mean 'classification'"),
        (["teachers={a: {model: mlp}}"], "either teacher"),
        (["method={name: kd, teacher_weights: {a: 1}}"], "teacher_weights"),
        (
            ["teacher.pretrain.epoch=3"],
            "teachers.teacher.pretrain.epoch: unknown key; did you mean 'epochs'",
        ),
    ],
)
def test_what_a_method_needs_is_refused_in_one_line(
    tiny_recipe, digits, tmp_path, overrides, message
):
    with pytest.raises(ConfigError, match=message) as error:
        run(load_config(tiny_recipe, [*overrides, f"output.dir={tmp_path / 'x'}"]), data=digits)
    assert "\n" not in str(error.value)


def test_the_loop_and_the_run_discover_nothing_with_hasattr():
    """Hooks are declared on Method and Task with their types; the trainer, the run and the
    tasks never probe for one (a probed hook is a contract nobody can see)."""
    import distil

    root = Path(distil.__file__).parent
    sources = [root / "pipeline.py", *sorted((root / "train").glob("*.py")),
               *sorted((root / "tasks").glob("*.py"))]  # fmt: skip
    probing = [str(path) for path in sources if "hasattr(" in path.read_text()]
    assert probing == []
    for name, cls in METHODS.items():
        assert isinstance(cls.needs, frozenset) and cls.needs <= set(Need), name
