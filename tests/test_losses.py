"""Losses against independent references: scipy, closed forms, finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import rel_entr, softmax

from distil import losses
from distil.errors import ShapeError, UnknownNameError

ALL_LOSSES = losses.LOSSES.names()


def random_logits(*shape: int, scale: float = 3.0, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale


@pytest.mark.parametrize("name", ALL_LOSSES)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), temperature=st.floats(0.5, 8.0))
def test_every_loss_is_nonnegative_and_zero_at_equality(name, seed, temperature):
    loss = losses.get(name)
    student = random_logits(6, 7, seed=seed)
    teacher = random_logits(6, 7, seed=seed + 1)
    assert float(loss(student, teacher, temperature=temperature)) >= -1e-9
    assert float(loss(student, student.clone(), temperature=temperature)) == pytest.approx(
        0.0, abs=1e-9
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_forward_and_reverse_kl_match_scipy(temperature):
    student = random_logits(5, 9, seed=1)
    teacher = random_logits(5, 9, seed=2)
    p = softmax(teacher.numpy() / temperature, axis=-1)
    q = softmax(student.numpy() / temperature, axis=-1)
    expected_forward = rel_entr(p, q).sum(-1).mean() * temperature**2
    expected_reverse = rel_entr(q, p).sum(-1).mean() * temperature**2
    got_forward = losses.forward_kl(student, teacher, temperature=temperature)
    got_reverse = losses.reverse_kl(student, teacher, temperature=temperature)
    assert float(got_forward) == pytest.approx(expected_forward, rel=1e-10)
    assert float(got_reverse) == pytest.approx(expected_reverse, rel=1e-10)


def test_reductions_and_mask_on_sequences():
    student = random_logits(2, 3, 11, seed=3)  # (batch, seq, vocab)
    teacher = random_logits(2, 3, 11, seed=4)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    per_token = losses.forward_kl(student, teacher, reduction="none")
    assert per_token.shape == (2, 3)
    p = softmax(teacher.numpy(), -1)
    q = softmax(student.numpy(), -1)
    reference = rel_entr(p, q).sum(-1)  # (2, 3)
    np.testing.assert_allclose(per_token.numpy(), reference, rtol=1e-10)
    masked_mean = losses.forward_kl(student, teacher, mask=mask)
    assert float(masked_mean) == pytest.approx(reference[mask.numpy()].mean(), rel=1e-10)
    masked_sum = losses.forward_kl(student, teacher, mask=mask, reduction="sum")
    assert float(masked_sum) == pytest.approx(reference[mask.numpy()].sum(), rel=1e-10)


def test_kl_gradient_is_temperature_times_probability_gap():
    """d/dz_s [T² KL(p_T ‖ q_T)] = T (q_T − p_T) / N: the closed form behind the T² rule."""
    temperature = 3.0
    student = random_logits(4, 6, seed=5).requires_grad_()
    teacher = random_logits(4, 6, seed=6)
    losses.forward_kl(student, teacher, temperature=temperature).backward()
    q = torch.softmax(student.detach() / temperature, -1)
    p = torch.softmax(teacher / temperature, -1)
    torch.testing.assert_close(student.grad, temperature * (q - p) / 4)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_gradcheck_float64(name):
    loss = losses.get(name)
    student = random_logits(3, 5, seed=7).requires_grad_()
    teacher = random_logits(3, 5, seed=8)
    assert torch.autograd.gradcheck(lambda s: loss(s, teacher, temperature=2.0), (student,))


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_stable_for_huge_logits_and_low_precision(name):
    loss = losses.get(name)
    student = random_logits(4, 8, scale=1e4, seed=9).float()
    teacher = random_logits(4, 8, scale=1e4, seed=10).float()
    assert torch.isfinite(loss(student, teacher))
    for dtype in (torch.bfloat16, torch.float16):
        low = loss(student[:, :].div(1e4).to(dtype), teacher.div(1e4).to(dtype))
        full = loss(student.div(1e4).to(dtype).float(), teacher.div(1e4).to(dtype).float())
        assert low.dtype == torch.float32
        torch.testing.assert_close(low, full)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ShapeError, match=r"\(2, 10\).*\(2, 12\)"):
        losses.forward_kl(torch.zeros(2, 10), torch.zeros(2, 12))


def test_unknown_loss_suggests_closest():
    with pytest.raises(UnknownNameError, match="forward_kl"):
        losses.get("forward_kll")
