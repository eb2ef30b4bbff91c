"""DisWOT student search: its rank correlation, its similarity scores, and the ranking."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import kendalltau

from distil.config import load_config
from distil.data import load_data
from distil.models import build_model
from distil.search import diswot_score, kendall_tau, rank_candidates, signature


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=2, max_size=12))
def test_kendall_tau_matches_scipy(pairs):
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    expected = kendalltau(a, b).statistic
    if expected != expected:  # scipy gives NaN when one side is constant
        assert kendall_tau(a, b) == 0.0
    else:
        assert kendall_tau(a, b) == pytest.approx(expected, abs=1e-12)


def test_identical_networks_score_zero_and_others_below():
    inputs, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 4, (16,))
    torch.manual_seed(0)
    teacher = build_model("cnn", input_shape=(1, 8, 8), num_classes=4, channels=[8, 16])
    reference = signature(teacher, inputs, labels)
    assert diswot_score(signature(teacher, inputs, labels), reference) == pytest.approx(
        0.0, abs=1e-12
    )
    assert reference.samples.shape == (16, 16) and reference.classes.shape == (4, 4)
    torch.manual_seed(1)
    other = build_model("mlp", input_shape=(1, 8, 8), num_classes=4, hidden=[8])
    assert diswot_score(signature(other, inputs, labels), reference) < 0
    assert all(p.grad is None for p in teacher.parameters())  # scoring leaves no gradients


def test_rank_candidates_orders_every_candidate_without_training():
    config = load_config("search-mnist", ["search.repeats=1", "search.batches=1"])
    data = load_data(config.data)
    ranked = rank_candidates(config, data)
    assert len(ranked) == len(config.search.candidates)
    scores = [candidate.score for candidate in ranked]
    assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)


def test_search_needs_candidates():
    from typer.testing import CliRunner

    from distil.cli import app

    result = CliRunner().invoke(app, ["search", "kd-mnist"])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert "search.candidates" in result.output + getattr(result, "stderr", "")
