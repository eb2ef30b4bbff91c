"""Methods: the loss each one returns, checked against independent formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, rel_entr, softmax

from distil.methods import METHODS, LossOutput, build_method
from distil.methods.base import Need
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
    out = build_method({"name": "supervised"}).loss(ModelOutputs(student), {}, {"labels": labels})
    expected = -log_softmax(student.numpy(), -1)[range(8), labels.numpy()].mean()
    assert float(out.total) == pytest.approx(expected, rel=1e-10)
    assert Need.TEACHER not in METHODS.get("supervised").needs


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 0.5), (4.0, 0.9), (2.0, 0.0)])
def test_kd_is_hinton_loss(temperature, alpha):
    """(1 − α)·CE + α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)), computed with scipy."""
    student, teacher = logits(1), logits(2)
    labels = torch.tensor([4, 3, 2, 1, 0, 4, 3, 2])
    method = build_method({"name": "kd", "temperature": temperature, "alpha": alpha})
    out = method.loss(ModelOutputs(student), {"teacher": ModelOutputs(teacher)}, {"labels": labels})
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
        return method.loss(
            ModelOutputs(student), {"teacher": ModelOutputs(teacher)}, {"labels": labels}
        ).total

    student = logits(4, (4, 6)).requires_grad_()
    assert torch.autograd.gradcheck(total, (student,), eps=1e-6, atol=1e-7)


def test_kd_takes_any_registered_divergence():
    student, teacher = logits(5), logits(6)
    labels = torch.zeros(8, dtype=torch.long)
    reverse = build_method(
        {"name": "kd", "divergence": "reverse_kl", "alpha": 1.0, "temperature": 1.0}
    )
    out = reverse.loss(
        ModelOutputs(student), {"teacher": ModelOutputs(teacher)}, {"labels": labels}
    )
    expected = rel_entr(softmax(student.numpy(), -1), softmax(teacher.numpy(), -1)).sum(-1).mean()
    assert float(out.total) == pytest.approx(expected, rel=1e-9)


def test_kd_passes_divergence_options_and_labels():
    student, teacher = logits(7), logits(8)
    labels = torch.tensor([4, 3, 2, 1, 0, 4, 3, 2])
    jsd = build_method(
        {"name": "kd", "divergence": "jsd", "beta": 0.2, "alpha": 1.0, "temperature": 2.0}
    )
    out = jsd.loss(ModelOutputs(student), {"teacher": ModelOutputs(teacher)}, {"labels": labels})
    p, q = softmax(teacher.numpy() / 2, -1), softmax(student.numpy() / 2, -1)
    m = 0.2 * p + 0.8 * q
    expected = 4 * (0.2 * rel_entr(p, m).sum(-1) + 0.8 * rel_entr(q, m).sum(-1)).mean()
    assert float(out.total) == pytest.approx(expected, rel=1e-9)
    dkd = build_method(
        {"name": "kd", "divergence": "dkd", "beta": 2.0, "alpha": 1.0, "temperature": 1.0}
    )
    got = dkd.loss(
        ModelOutputs(student), {"teacher": ModelOutputs(teacher)}, {"labels": labels}
    ).total
    from distil import losses

    assert float(got) == pytest.approx(float(losses.dkd(student, teacher, labels=labels, beta=2.0)))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "kd", "divergence": "jsd", "bta": 0.1}, "did you mean 'beta'"),
        ({"name": "kd", "divergence": "jsd", "beta": 3.0}, "beta must be in [0, 1]"),
        ({"name": "kd", "divergence": "jsdd"}, "did you mean 'jsd'"),
    ],
)
def test_kd_rejects_bad_divergence_settings(config, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_method(config)


def test_pseudo_label_is_cross_entropy_on_the_teacher_argmax():
    student, teacher = logits(9), logits(10)
    labels = torch.zeros(8, dtype=torch.long)
    out = build_method({"name": "pseudo_label", "alpha": 1.0}).loss(
        ModelOutputs(student), {"teacher": ModelOutputs(teacher)}, {"labels": labels})  # fmt: skip
    hard = teacher.argmax(-1).numpy()
    expected = -log_softmax(student.numpy(), -1)[range(8), hard].mean()
    assert float(out.total) == pytest.approx(expected, rel=1e-10)


def test_taid_target_moves_from_student_to_teacher():
    student, teacher = logits(11), logits(12)
    batch = {"labels": torch.zeros(8, dtype=torch.long)}
    method = build_method({"name": "taid", "t_start": 0.0, "temperature": 1.0})
    at_start = method.loss(ModelOutputs(student), {"teacher": ModelOutputs(teacher)}, batch).total
    assert float(at_start) == pytest.approx(0.0, abs=1e-12)  # target = the student itself
    method.schedule.t.fill_(1.0)
    at_end = method.loss(ModelOutputs(student), {"teacher": ModelOutputs(teacher)}, batch).total
    expected = rel_entr(softmax(teacher.numpy(), -1), softmax(student.numpy(), -1)).sum(-1).mean()
    assert float(at_end) == pytest.approx(expected, rel=1e-9)
    # the interpolation is in logit space and the student side is detached
    method.schedule.t.fill_(0.5)
    s = student.clone().requires_grad_()
    method.loss(ModelOutputs(s), {"teacher": ModelOutputs(teacher)}, batch).total.backward()
    target = torch.softmax(0.5 * student + 0.5 * teacher, -1)
    torch.testing.assert_close(s.grad, (torch.softmax(student, -1) - target) / 8)


def test_taid_schedule_follows_the_paper_rule():
    config = {"name": "taid", "t_start": 0.4, "t_end": 1.0, "adaptive_rate": 0.1, "momentum": 0.5}
    schedule = build_method(config).schedule
    schedule.update(1, 100, loss=2.0)  # first call only remembers the loss
    assert float(schedule.t) == pytest.approx(0.406)  # the linear floor at step 1
    schedule.update(2, 100, loss=1.0)  # δ = 0.5, m = 0.25, Δt = 0.1·σ(0.25)·(1 − t)
    sigmoid = 1 / (1 + np.exp(-0.25))
    assert float(schedule.t) == pytest.approx(0.406 + 0.1 * sigmoid * (1 - 0.406))
    for step in range(3, 101):
        schedule.update(step, 100, loss=1.0)
    assert float(schedule.t) == pytest.approx(1.0)
    assert {"schedule.t", "schedule.momentum", "schedule.previous_loss"} <= set(
        build_method(config).state_dict())  # fmt: skip
    linear = build_method({**config, "adaptive": False}).schedule
    linear.update(50, 100, loss=1.0)
    assert float(linear.t) == pytest.approx(0.7)
