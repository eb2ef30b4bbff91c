"""Methods: the loss each one returns, checked against independent formulas."""

from __future__ import annotations

import pytest
import torch
from scipy.special import log_softmax, rel_entr, softmax

from distil.methods import METHODS, LossOutput, build_method
from distil.outputs import ModelOutputs


def logits(seed: int, shape=(8, 5)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_loss_output_combines_weighted_parts():
    out = LossOutput.combine({"a": (0.25, torch.tensor(2.0)), "b": (0.0, torch.tensor(5.0))})
    assert float(out.total) == pytest.approx(0.5)
    assert out.weights == {"a": 0.25, "b": 0.0}
    assert float(out.parts["b"]) == 5.0  # zero-weight parts are still logged


def test_supervised_is_cross_entropy():
    student, labels = logits(0), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    out = build_method({"name": "supervised"}).loss(ModelOutputs(student), None, {"labels": labels})
    expected = -log_softmax(student.numpy(), -1)[range(8), labels.numpy()].mean()
    assert float(out.total) == pytest.approx(expected, rel=1e-10)
    assert not METHODS.get("supervised").needs_teacher


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 0.5), (4.0, 0.9), (2.0, 0.0)])
def test_kd_is_hinton_loss(temperature, alpha):
    """(1 − α)·CE + α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)), computed with scipy."""
    student, teacher = logits(1), logits(2)
    labels = torch.tensor([4, 3, 2, 1, 0, 4, 3, 2])
    method = build_method({"name": "kd", "temperature": temperature, "alpha": alpha})
    out = method.loss(ModelOutputs(student), ModelOutputs(teacher), {"labels": labels})
    ce = -log_softmax(student.numpy(), -1)[range(8), labels.numpy()].mean()
    kl = (
        rel_entr(
            softmax(teacher.numpy() / temperature, -1), softmax(student.numpy() / temperature, -1)
        )
        .sum(-1)
        .mean()
    )
    assert float(out.total) == pytest.approx(
        (1 - alpha) * ce + alpha * temperature**2 * kl, rel=1e-9
    )
    assert set(out.parts) == {"ce", "kd"}


def test_kd_gradient_matches_finite_differences():
    teacher = logits(3, (4, 6))
    labels = torch.tensor([0, 5, 2, 3])
    method = build_method({"name": "kd", "temperature": 3.0, "alpha": 0.7})

    def total(student):
        return method.loss(ModelOutputs(student), ModelOutputs(teacher), {"labels": labels}).total

    student = logits(4, (4, 6)).requires_grad_()
    assert torch.autograd.gradcheck(total, (student,), eps=1e-6, atol=1e-7)


def test_kd_takes_any_registered_divergence():
    student, teacher = logits(5), logits(6)
    labels = torch.zeros(8, dtype=torch.long)
    reverse = build_method(
        {"name": "kd", "divergence": "reverse_kl", "alpha": 1.0, "temperature": 1.0}
    )
    out = reverse.loss(ModelOutputs(student), ModelOutputs(teacher), {"labels": labels})
    expected = rel_entr(softmax(student.numpy(), -1), softmax(teacher.numpy(), -1)).sum(-1).mean()
    assert float(out.total) == pytest.approx(expected, rel=1e-9)
