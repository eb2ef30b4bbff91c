"""TGeo-KD: its geometry features, its meta-gradient, and a tiny bilevel training run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distil.config import load_config
from distil.data import ArrayDataset, load_data
from distil.methods import build_method
from distil.methods.tgeo import alignment, geometry
from distil.outputs import ModelOutputs
from distil.pipeline import run
from distil.train.sampling import split_holdout


def test_geometry_edges_by_hand():
    student = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.2, 0.6]])
    teacher = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 0])  # both class 0: t̄_0 = (0.5, 0, 0.5)
    edges = geometry(student, teacher, labels)
    expected = torch.tensor([
        [1.0, 0.0, 1.0, 1.0, 1.0],  # |s−t|, |t−g|, |g−s|, |t̄−s|, |t̄−t|
        [0.8, 2.0, 1.6, 0.6, 1.0],
    ])  # fmt: skip
    torch.testing.assert_close(edges, expected)


def test_alignment_equals_per_sample_gradient_dot_products():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    params = list(model.parameters())
    x, h = torch.randn(5, 4, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64)
    gap = model(x).pow(2).sum(-1) - model(x)[:, 0]  # any per-sample differentiable quantity
    holdout_loss = model(h).logsumexp(-1).mean()
    g_h = torch.autograd.grad(holdout_loss, params, retain_graph=True)
    got = alignment(gap, holdout_loss, params)
    for i in range(5):
        g_i = torch.autograd.grad(gap[i], params, retain_graph=True)
        expected = sum((a * b).sum() for a, b in zip(g_h, g_i, strict=True))
        assert float(got[i]) == pytest.approx(float(expected), rel=1e-10)


def test_fusion_network_learns_to_favour_the_helpful_term():
    """Samples whose KD gradient helps the held-out loss get a larger α after a step."""
    torch.manual_seed(0)
    method = build_method({"name": "tgeo"})
    alpha = torch.full((4,), 0.5, requires_grad=True)
    c = torch.tensor([1.0, -1.0, 2.0, -2.0])
    objective = -(alpha * c / c.abs().mean()).mean()
    (grad,) = torch.autograd.grad(objective, alpha)
    assert (grad[c > 0] < 0).all() and (grad[c < 0] > 0).all()  # descent raises α where c > 0
    assert method.holdout_fraction == 0.1


def test_holdout_split_is_deterministic_disjoint_and_keeps_indices():
    data = ArrayDataset(torch.arange(20.0)[:, None], torch.zeros(20, dtype=torch.long))
    train, holdout = split_holdout(data, 0.25, seed=3)
    again, _ = split_holdout(data, 0.25, seed=3)
    assert len(holdout) == 5 and len(train) == 15
    train_idx = {train[i]["index"] for i in range(len(train))}
    holdout_idx = {holdout[i]["index"] for i in range(len(holdout))}
    assert not train_idx & holdout_idx and len(train_idx | holdout_idx) == 20
    assert [again[i]["index"] for i in range(15)] == [train[i]["index"] for i in range(15)]
    assert split_holdout(data, 0.0, seed=3) == (data, None)


def test_tgeo_trains_a_student_with_a_learned_balance(tiny_recipe, tmp_path):
    digits = load_data(load_config("kd-digits").data)
    config = load_config(tiny_recipe, ["method={name: tgeo, temperature: 4.0}", "train.epochs=4"])
    result = run(config, data=digits)
    assert result.metrics["last"]["test"]["accuracy"] > 0.8
    import json

    rows = [
        json.loads(line) for line in (config.run_dir() / "metrics.jsonl").read_text().splitlines()
    ]
    alphas = [r["loss/alpha"] for r in rows if r["kind"] == "train"]
    assert all(0.0 < a < 1.0 for a in alphas)
    assert "loss/fusion" in rows[-1] or any("loss/fusion" in r for r in rows)


def test_tgeo_loss_without_holdout_is_the_fused_term_only():
    method = build_method({"name": "tgeo"})
    student, teacher = torch.randn(6, 4), torch.randn(6, 4)
    out = method.loss(
        ModelOutputs(student),
        {"teacher": ModelOutputs(teacher)},
        {"labels": torch.zeros(6, dtype=torch.long)},
    )
    assert "fusion" not in out.parts
    assert float(out.total) == pytest.approx(float(out.parts["fused"]))


def test_tgeo_fusion_starts_from_its_own_seed_whatever_ran_before():
    """A run builds the method before seeding the student, after a cached or a fresh teacher:
    the fusion network must not depend on (nor move) the global random stream."""
    torch.manual_seed(1)
    first = build_method({"name": "tgeo"}).state_dict()
    torch.manual_seed(2)
    before = torch.random.get_rng_state()
    second = build_method({"name": "tgeo"}).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    for name, value in first.items():
        assert torch.equal(value, second[name]), name
    other = build_method({"name": "tgeo", "seed": 1}).state_dict()
    assert not torch.equal(other["fusion.0.weight"], first["fusion.0.weight"])
