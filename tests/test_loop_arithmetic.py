"""The training loop's arithmetic against hand-computed SGD updates.

AdamW is invariant to the gradient's scale, so a loop that sums micro-batch gradients instead
of averaging them, forgets to clip, or warms up at the wrong rate still trains. Plain SGD
(no momentum, no weight decay) on a tiny float64 linear model makes every such slip visible:
the weights after a step are ``w − lr · g`` with ``g`` computed here, independently, by autograd
on the whole batch.

Every Trainer is built by :func:`train_once` (one place to adapt when its constructor changes).
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from distil.methods import build_method
from distil.tasks.classification import ClassificationTask
from distil.tasks.lm import LMTask
from distil.train import TrainConfig, Trainer
from distil.train.accelerator import make_accelerator
from distil.train.sampling import ShardedBatches, epoch_permutation

FEATURES, CLASSES, TOKENS = 3, 4, 6
#: Labelled tokens per sample of the LM-like set (the rest of its ``TOKENS`` labels are −100).
#: With seed 0 the micro-batches of one step, and the two ranks of a 2-process run, hold
#: different numbers of labelled tokens (asserted where it matters).
LABELLED = [6, 1, 2, 1, 5, 1, 3, 1]

#: A loop that stops stepping (a micro-batch group lost) spins forever; fail fast instead.
pytestmark = pytest.mark.timeout(120)


# ----------------------------------------------------------------------------- helpers


def train_once(model: nn.Module, method_name: str, dataset: Dataset, config: TrainConfig,
               out: Path) -> Path:  # fmt: skip
    """Train ``model`` in place with ``method_name`` on ``dataset``; returns the run folder.

    The only place that builds a Trainer in this file.
    """
    Trainer(
        model,
        build_method({"name": method_name}),
        task=TokenLogits(),
        train_data=dataset,
        data=dataset,
        config=config,
        output_dir=out,
        accelerator=make_accelerator(),
        validator=lambda student, device: {"accuracy": 0.0},
        select_metric="accuracy",
    ).fit()
    return Path(out)


class TokenLogits(ClassificationTask):
    """The loop's view of these tests' models: logits out, and — as for an LM — a batch
    counts its labelled tokens (labels ≠ −100)."""

    count_targets = LMTask.count_targets

    def num_classes(self, data: Dataset) -> None:
        return None  # these tests' datasets carry no class list; no method here sizes by it


def sgd_config(**overrides) -> TrainConfig:
    """Plain SGD, constant LR, a metrics row every step, no diagnostics."""
    settings = dict(optimizer="sgd", momentum=0.0, weight_decay=0.0, lr=0.5, schedule="constant",
                    log_every=1, balance_every=0, progress=False, seed=0)  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


class TokenData(Dataset):
    """Samples ``{"inputs": (TOKENS, FEATURES) float64, "labels": (TOKENS,)}``; labels beyond
    each sample's labelled count are −100, as in an LM batch with padding or prompts."""

    def __init__(self, labelled: list[int], seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.inputs = torch.randn(len(labelled), TOKENS, FEATURES, generator=generator,
                                  dtype=torch.float64)  # fmt: skip
        self.labels = torch.randint(CLASSES, (len(labelled), TOKENS), generator=generator)
        for i, count in enumerate(labelled):
            self.labels[i, count:] = -100

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"inputs": self.inputs[index], "labels": self.labels[index], "index": int(index)}


class ClassData(TokenData):
    """One label per sample: ``{"inputs": (FEATURES,), "labels": ()}``."""

    def __init__(self, size: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.inputs = torch.randn(size, FEATURES, generator=generator, dtype=torch.float64)
        self.labels = torch.randint(CLASSES, (size,), generator=generator)


def linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(FEATURES, CLASSES).double()


def full_batch_gradient(model: nn.Module, dataset: TokenData, indices) -> list[torch.Tensor]:
    """∇ of the mean cross-entropy over every labelled target of ``indices``, by autograd."""
    indices = torch.as_tensor(list(indices))
    x, y = dataset.inputs[indices], dataset.labels[indices]
    logits = model(x).reshape(-1, CLASSES)
    y = y.reshape(-1)
    mask = y != -100
    loss = F.cross_entropy(logits[mask], y[mask], reduction="sum") / mask.sum()
    return list(torch.autograd.grad(loss, list(model.parameters())))


def reference_sgd(model: nn.Module, dataset: TokenData, steps: list[tuple[list[int], float]],
                  max_grad_norm: float | None = None) -> nn.Module:  # fmt: skip
    """A copy of ``model`` after plain SGD steps, each ``(sample indices, lr)``."""
    model = copy.deepcopy(model)
    for indices, lr in steps:
        grads = full_batch_gradient(model, dataset, indices)
        if max_grad_norm is not None:
            norm = torch.sqrt(sum((g**2).sum() for g in grads))
            grads = [g * min(1.0, max_grad_norm / (float(norm) + 1e-6)) for g in grads]
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads, strict=True):
                p -= lr * g
    return model


def assert_same_weights(actual: nn.Module, expected: nn.Module) -> None:
    for a, b in zip(actual.parameters(), expected.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)  # shares are float32


def micro_batch_counts(dataset: TokenData, micro: int, epoch: int = 0, rank: int = 0,
                       world: int = 1) -> list[int]:  # fmt: skip
    batches = ShardedBatches(len(dataset), micro, seed=0, rank=rank, world_size=world)
    return [int((dataset.labels[b] != -100).sum()) for b in batches.epoch(epoch)]


def read_rows(folder: Path, kind: str = "train") -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if row["kind"] == kind]


# ----------------------------------------------------------------------------- accumulation


@pytest.mark.parametrize("accum", [1, 4])
def test_accumulated_step_equals_hand_computed_full_batch_step(tmp_path, accum):
    """Bug caught: micro-batch gradients summed instead of averaged (``shares`` all 1.0),
    or any other scale slip in ``_micro_batch_shares``. 16 samples, one label each, one
    step per epoch, two epochs; equal micro-batches."""
    data = ClassData(16)
    model = linear_model()
    expected = reference_sgd(model, data, [(range(16), 0.5)] * 2)
    config = sgd_config(epochs=2, batch_size=16, grad_accum_steps=accum)
    train_once(model, "supervised", data, config, tmp_path / "run")
    assert_same_weights(model, expected)


def test_uneven_token_counts_weigh_micro_batches_by_labelled_tokens(tmp_path):
    """Bugs caught: summed micro-batch gradients (shares 1.0), and micro-batches weighted
    equally (shares 1/k: the mean of per-micro-batch means) instead of by their labelled
    tokens. The step's gradient must be that of the mean over all labelled tokens."""
    data = TokenData(LABELLED)
    counts = micro_batch_counts(data, micro=2)
    assert len(set(counts)) > 1, counts  # the micro-batches really are uneven
    model = linear_model()
    expected = reference_sgd(model, data, [(range(8), 0.5)] * 2)
    config = sgd_config(epochs=2, batch_size=8, grad_accum_steps=4)
    train_once(model, "supervised", data, config, tmp_path / "run")
    assert_same_weights(model, expected)


def test_partial_last_group_is_a_full_weight_step_on_its_own_samples(tmp_path):
    """Bugs caught: the epoch's short last group dropped (``step_groups``), or weighted as a
    fraction of a full group. 10 samples, micro-batches of 2, 4 per step: step 1 is the
    permutation's first 8 samples, step 2 its last 2, each a full SGD step."""
    data = TokenData(LABELLED + [2, 4])
    order = epoch_permutation(10, seed=0, epoch=0).tolist()
    model = linear_model()
    expected = reference_sgd(model, data, [(order[:8], 0.5), (order[8:], 0.5)])
    config = sgd_config(epochs=1, batch_size=8, grad_accum_steps=4)
    train_once(model, "supervised", data, config, tmp_path / "run")
    assert_same_weights(model, expected)


# ----------------------------------------------------------------------------- clipping


@pytest.mark.parametrize("max_grad_norm", [None, 0.01, 1e3])
def test_one_sgd_step_moves_by_lr_times_the_clipped_gradient(tmp_path, max_grad_norm):
    """Bug caught: gradient clipping removed (or applied with the wrong norm). With a small
    ``max_grad_norm`` the update's norm is exactly lr · max_grad_norm; with none, or a bound
    above the raw norm, it is lr · the raw gradient."""
    data = ClassData(8)
    model = linear_model()
    raw = full_batch_gradient(model, data, range(8))
    raw_norm = float(torch.sqrt(sum((g**2).sum() for g in raw)))
    assert 0.01 < raw_norm < 1e3
    before = [p.detach().clone() for p in model.parameters()]
    lr = 0.5
    config = sgd_config(max_steps=1, batch_size=8, lr=lr, max_grad_norm=max_grad_norm)
    train_once(model, "supervised", data, config, tmp_path / "run")
    update = [b - p.detach() for b, p in zip(before, model.parameters(), strict=True)]
    scale = 1.0 if max_grad_norm is None else min(1.0, max_grad_norm / (raw_norm + 1e-6))
    for u, g in zip(update, raw, strict=True):
        torch.testing.assert_close(u, lr * scale * g, rtol=1e-9, atol=1e-12)
    update_norm = float(torch.sqrt(sum((u**2).sum() for u in update)))
    expected_norm = lr * (raw_norm if max_grad_norm in (None, 1e3) else max_grad_norm)
    assert update_norm == pytest.approx(expected_norm, rel=1e-5)


def test_clipping_applies_to_the_accumulated_gradient(tmp_path):
    """Bug caught: clipping each micro-batch's gradient (or the summed one) instead of the
    step's averaged gradient; also summed micro-batches and a missing clip. Uneven tokens,
    4 micro-batches, ``max_grad_norm`` below the step's gradient norm."""
    data = TokenData(LABELLED)
    model = linear_model()
    expected = reference_sgd(model, data, [(range(8), 0.5)] * 2, max_grad_norm=0.05)
    config = sgd_config(epochs=2, batch_size=8, grad_accum_steps=4, max_grad_norm=0.05)
    train_once(model, "supervised", data, config, tmp_path / "run")
    assert_same_weights(model, expected)


# ----------------------------------------------------------------------------- LR schedule


def closed_form_lr(peak: float, step: int, total: int, warmup: int, kind: str) -> float:
    """The LR of 0-based optimizer step ``step``: linear warm-up to ``peak`` over ``warmup``
    steps ((step+1)/warmup), then constant, or cosine / linear decay to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / (total - warmup)
    return (
        peak * {"constant": 1.0, "cosine": (1 + math.cos(math.pi * t)) / 2, "linear": 1 - t}[kind]
    )


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_training_applies_and_logs_the_scheduled_lr(tmp_path, kind):
    """Bugs caught: a warm-up 10× (or otherwise off) the peak LR, a wrong decay shape —
    both in the LR the optimizer really applies (the weights after 6 steps equal 6
    hand-computed SGD steps at the closed-form LRs) and in the ``lr`` logged per row.

    The row of step s (1-based) logs the LR the *next* step will use, i.e. the closed form
    at 0-based step s (the scheduler has already stepped)."""
    data = ClassData(8)
    total, warmup, peak = 6, 2, 0.5
    lrs = [closed_form_lr(peak, s, total, warmup, kind) for s in range(total)]
    model = linear_model()
    expected = reference_sgd(model, data, [(range(8), lr) for lr in lrs])
    config = sgd_config(epochs=total, batch_size=8, lr=peak, warmup_steps=warmup, schedule=kind)
    out = train_once(model, "supervised", data, config, tmp_path / "run")
    assert_same_weights(model, expected)
    rows = read_rows(out)
    assert [row["step"] for row in rows] == list(range(1, total + 1))
    for row in rows:
        step = row["step"]
        logged = closed_form_lr(peak, step, total, warmup, kind) if step < total else 0.0
        assert row["lr"] == pytest.approx(logged, rel=1e-12, abs=1e-15), row


# ----------------------------------------------------------------------------- processes


class FakeAccelerator:
    """Rank ``rank`` of 2: ``reduce(sum)`` adds the other rank's number."""

    num_processes = 2
    device = torch.device("cpu")

    def __init__(self, other_total: float) -> None:
        self.other_total = other_total

    def reduce(self, tensor, reduction):
        assert reduction == "sum"
        return tensor + self.other_total


def test_shares_over_two_processes_give_the_single_process_gradient():
    """Bugs caught: a share ignoring the other rank's tokens (no sum-reduce), or missing the
    ×world factor that undoes DDP's averaging. Unit level: the real ``_micro_batch_shares``
    with a fake 2-process accelerator; DDP's mean over ranks of Σ share·∇(micro-batch mean)
    must equal the full batch's gradient over all labelled tokens."""
    data = TokenData(LABELLED)
    model = linear_model()
    ranks = [list(ShardedBatches(8, 2, seed=0, rank=r, world_size=2).epoch(0)) for r in (0, 1)]
    totals = [sum(int((data.labels[b] != -100).sum()) for b in rank) for rank in ranks]
    assert totals[0] != totals[1], totals
    rank_gradients = []
    for r, micro_batches in enumerate(ranks):
        trainer = SimpleNamespace(
            accelerator=FakeAccelerator(other_total=totals[1 - r]), task=TokenLogits()
        )
        batches = [{"labels": data.labels[b]} for b in micro_batches]
        shares = Trainer._micro_batch_shares(trainer, batches)
        gradient = [torch.zeros_like(p) for p in model.parameters()]
        for share, b in zip(shares, micro_batches, strict=True):
            for acc, g in zip(gradient, full_batch_gradient(model, data, b), strict=True):
                acc += share * g
        rank_gradients.append(gradient)
    ddp = [(a + b) / 2 for a, b in zip(*rank_gradients, strict=True)]
    for got, want in zip(ddp, full_batch_gradient(model, data, range(8)), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)  # shares are float32


TWO_PROCESS_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import torch
from pathlib import Path
from test_loop_arithmetic import LABELLED, TokenData, linear_model, sgd_config, train_once
model = linear_model()
train_once(model, "supervised", TokenData(LABELLED), sgd_config(**{config!r}), Path({out!r}))
from accelerate import PartialState
if PartialState().is_main_process:
    torch.save([p.detach() for p in model.parameters()], {weights!r})
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_with_uneven_tokens_per_rank_match_the_full_batch(tmp_path):
    """Bugs caught: per-rank token totals not summed over processes, the ×world factor
    missing (DDP averages), summed micro-batches. A real ``accelerate launch`` of 2 CPU
    processes (gloo), ranks holding 9 and 11 labelled tokens, 2 micro-batches each, 2 steps:
    the weights equal two hand-computed full-batch SGD steps (what one process gives)."""
    data = TokenData(LABELLED)
    totals = [sum(micro_batch_counts(data, 2, rank=r, world=2)) for r in (0, 1)]
    assert totals[0] != totals[1], totals
    config = dict(epochs=2, batch_size=8, grad_accum_steps=2)
    script = tmp_path / "two.py"
    weights = tmp_path / "weights.pt"
    script.write_text(TWO_PROCESS_SCRIPT.format(
        tests=str(Path(__file__).parent), config=config, out=str(tmp_path / "run"),
        weights=str(weights),
    ))  # fmt: skip
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", str(script)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    two = torch.load(weights)
    expected = reference_sgd(linear_model(), data, [(range(8), 0.5)] * 2)
    for got, want in zip(two, expected.parameters(), strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=1e-6, atol=1e-9)
    one = linear_model()
    train_once(one, "supervised", data, sgd_config(**config), tmp_path / "one")
    for got, want in zip(two, one.parameters(), strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- logged loss


@pytest.mark.xfail(strict=True, reason="the logged train loss is the unweighted mean of "
                   "micro-batch means, not the mean over the step's labelled tokens")  # fmt: skip
def test_logged_loss_is_the_mean_over_the_steps_labelled_tokens(tmp_path):
    """Finding, not an inserted bug: with uneven micro-batches the gradient follows the
    token-mean loss, but ``LossWindow`` logs the plain mean of the micro-batch means, so the
    logged loss of one step depends on ``grad_accum_steps`` (and on the process count)."""
    data = TokenData(LABELLED)
    model = linear_model()
    with torch.no_grad():
        logits = model(data.inputs).reshape(-1, CLASSES)
        token_mean = float(F.cross_entropy(logits, data.labels.reshape(-1), ignore_index=-100))
    config = sgd_config(max_steps=1, batch_size=8, grad_accum_steps=4)
    out = train_once(model, "supervised", data, config, tmp_path / "run")
    assert read_rows(out)[0]["loss"] == pytest.approx(token_mean, rel=1e-9)
