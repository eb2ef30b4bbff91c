"""Classification metrics against hand-computed cases and independent numpy/scipy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import log_softmax as scipy_log_softmax
from scipy.special import rel_entr, softmax

from distil.errors import DataError, ShapeError
from distil.eval import (
    accuracy,
    agreement,
    classification_metrics,
    expected_calibration_error,
    format_mean_std,
    mean_std,
    nll,
    reliability_bins,
    teacher_student_kl,
)


def two_class_logits(top_probs: list[float]) -> torch.Tensor:
    """Logits whose softmax is ``[p, 1 - p]`` for each ``p``, so class 0 has confidence p."""
    probs = torch.tensor(top_probs, dtype=torch.float64)
    return torch.stack([probs.log(), (1 - probs).log()], dim=1)


def reference_ece(logits: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """ECE written as the plain loop of Guo et al. (2017), independent of distil's code."""
    probs = softmax(logits.astype(np.float64), axis=1)
    confidences = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lower, upper in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidences > lower) & (confidences <= upper)
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - confidences[in_bin].mean())
            ece += in_bin.mean() * gap
    return ece


@pytest.fixture
def random_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    student_logits = 3 * torch.randn(400, 7, generator=generator)
    teacher_logits = student_logits + 2 * torch.randn(400, 7, generator=generator)
    labels = torch.randint(0, 7, (400,), generator=generator)
    return student_logits, teacher_logits, labels


# ---- calibration ---------------------------------------------------------------------------


def test_ece_hand_computed_case() -> None:
    # confidences 0.9 ✓, 0.85 ✗ in (0.8, 1]; 0.7 ✓ in (0.6, 0.8]; 0.55 ✗ in (0.4, 0.6]
    # ECE = 2/4·|0.5 − 0.875| + 1/4·|1 − 0.7| + 1/4·|0 − 0.55| = 0.1875 + 0.075 + 0.1375
    logits = two_class_logits([0.9, 0.85, 0.7, 0.55])
    labels = torch.tensor([0, 1, 0, 1])
    assert expected_calibration_error(logits, labels, n_bins=5) == pytest.approx(0.4, abs=1e-12)


def test_reliability_bins_hand_computed_case() -> None:
    logits = two_class_logits([0.9, 0.85, 0.7, 0.55])
    labels = torch.tensor([0, 1, 0, 1])
    bins = reliability_bins(logits, labels, n_bins=5)
    assert bins["bin_lower"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert bins["bin_upper"] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert bins["count"] == [0, 0, 1, 1, 2]
    assert bins["confidence"][:2] == [None, None]
    assert bins["accuracy"][:2] == [None, None]
    assert bins["confidence"][2:] == pytest.approx([0.55, 0.7, 0.875])
    assert bins["accuracy"][2:] == pytest.approx([0.0, 1.0, 0.5])


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_matches_numpy_loop(random_batch, n_bins: int) -> None:
    student_logits, _, labels = random_batch
    expected = reference_ece(student_logits.numpy(), labels.numpy(), n_bins)
    assert expected_calibration_error(student_logits, labels, n_bins=n_bins) == pytest.approx(
        expected, abs=1e-12
    )


def test_ece_of_perfectly_calibrated_predictions_is_zero() -> None:
    # Each confidence level is right exactly as often as it claims: 60% of the 0.6s, 90% of
    # the 0.9s, all of the 1.0s.
    top_probs = [0.6] * 5 + [0.9] * 10 + [1.0 - 1e-15] * 4
    labels = [0, 0, 0, 1, 1] + [0] * 9 + [1] + [0] * 4
    ece = expected_calibration_error(two_class_logits(top_probs), torch.tensor(labels))
    assert ece == pytest.approx(0.0, abs=1e-12)


def test_confidence_of_one_falls_in_last_bin() -> None:
    logits = torch.tensor([[50.0, -50.0]])
    bins = reliability_bins(logits, torch.tensor([0]), n_bins=4)
    assert bins["count"] == [0, 0, 0, 1]


# ---- accuracy, nll, agreement, KL ----------------------------------------------------------


def test_accuracy_and_nll_match_reference(random_batch) -> None:
    student_logits, _, labels = random_batch
    logits_np, labels_np = student_logits.numpy().astype(np.float64), labels.numpy()
    expected_accuracy = float((logits_np.argmax(axis=1) == labels_np).mean())
    logprobs = scipy_log_softmax(logits_np, axis=1)
    expected_nll = float(-logprobs[np.arange(len(labels_np)), labels_np].mean())
    assert accuracy(student_logits, labels) == pytest.approx(expected_accuracy, abs=1e-15)
    assert nll(student_logits, labels) == pytest.approx(expected_nll, rel=1e-12)


def test_nll_manual_small_case() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # probs [.5, .5] and [.75, .25]
    labels = torch.tensor([1, 0])
    assert nll(logits, labels) == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2)
    assert accuracy(logits, labels) == pytest.approx(0.5)  # argmax of a tie is class 0


def test_agreement_counts_matching_argmax() -> None:
    student_logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1, 2, 3.0]])
    teacher_logits = torch.tensor([[9.0, 1.0, 0.0], [4.0, 3.0, 1.0], [0.0, 0.0, 6.0], [3, 2, 1.0]])
    assert agreement(student_logits, teacher_logits) == pytest.approx(0.5)
    assert agreement(student_logits, student_logits) == 1.0


def test_teacher_student_kl_matches_scipy_rel_entr(random_batch) -> None:
    student_logits, teacher_logits, _ = random_batch
    teacher_probs = softmax(teacher_logits.numpy().astype(np.float64), axis=1)
    student_probs = softmax(student_logits.numpy().astype(np.float64), axis=1)
    expected = float(rel_entr(teacher_probs, student_probs).sum(axis=1).mean())
    assert teacher_student_kl(student_logits, teacher_logits) == pytest.approx(expected, rel=1e-9)
    assert teacher_student_kl(teacher_logits, teacher_logits) == pytest.approx(0.0, abs=1e-12)


def test_classification_metrics_keys_and_values(random_batch) -> None:
    student_logits, teacher_logits, labels = random_batch
    without_teacher = classification_metrics(student_logits, labels)
    assert set(without_teacher) == {"accuracy", "nll", "ece"}
    with_teacher = classification_metrics(student_logits, labels, teacher_logits, n_bins=10)
    assert set(with_teacher) == {"accuracy", "nll", "ece", "agreement", "teacher_kl"}
    assert all(isinstance(value, float) for value in with_teacher.values())
    assert with_teacher["ece"] == expected_calibration_error(student_logits, labels, n_bins=10)
    assert with_teacher["teacher_kl"] == teacher_student_kl(student_logits, teacher_logits)


# ---- numerics and dtypes -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_metrics_stay_finite_for_huge_logits(dtype: torch.dtype) -> None:
    student_logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], dtype=dtype)
    teacher_logits = torch.tensor([[-1e4, 1e4, 0.0], [-1e4, 1e4, 0.0]], dtype=dtype)
    labels = torch.tensor([0, 0])
    metrics = classification_metrics(student_logits, labels, teacher_logits)
    assert all(math.isfinite(value) for value in metrics.values())
    # 2e4 as the dtype stores it (bfloat16 rounds 1e4 to 9984)
    logit_gap = float(student_logits[0, 0].double() - student_logits[0, 1].double())
    # sample 1: −log p_S(0) ≈ 0; sample 2: −log p_S(0) ≈ logit_gap
    assert metrics["nll"] == pytest.approx(logit_gap / 2, rel=1e-9)
    # sample 1: the teacher puts all mass on class 1, where log p_S ≈ −logit_gap;
    # sample 2: student and teacher agree exactly
    assert metrics["teacher_kl"] == pytest.approx(logit_gap / 2, rel=1e-9)
    assert metrics["accuracy"] == 0.5
    assert metrics["agreement"] == 0.5


def test_teacher_kl_ignores_classes_the_teacher_rules_out() -> None:
    teacher_logits = torch.tensor([[0.0, 0.0, float("-inf")]])
    student_logits = torch.tensor([[0.0, 0.0, 0.0]])
    # KL = Σ over the two live classes of 0.5·(log 0.5 − log 1/3)
    expected = math.log(0.5) - math.log(1 / 3)
    assert teacher_student_kl(student_logits, teacher_logits) == pytest.approx(expected)


def test_gradients_do_not_leak_into_metrics() -> None:
    logits = torch.randn(5, 3, requires_grad=True)
    assert isinstance(nll(logits, torch.zeros(5, dtype=torch.long)), float)


# ---- errors at the boundary ----------------------------------------------------------------


def test_label_count_mismatch_names_both_shapes() -> None:
    with pytest.raises(ShapeError) as raised:
        accuracy(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))
    assert "(4, 3)" in str(raised.value)
    assert "(5,)" in str(raised.value)


def test_student_teacher_mismatch_names_both_shapes() -> None:
    with pytest.raises(ShapeError) as raised:
        teacher_student_kl(torch.zeros(4, 3), torch.zeros(4, 5))
    assert "(4, 3)" in str(raised.value)
    assert "(4, 5)" in str(raised.value)
    with pytest.raises(ShapeError):
        agreement(torch.zeros(4, 3), torch.zeros(2, 3))


def test_logits_must_be_two_dimensional() -> None:
    with pytest.raises(ShapeError, match=r"\(3,\)"):
        nll(torch.zeros(3), torch.zeros(3, dtype=torch.long))


def test_out_of_range_labels_raise_data_error() -> None:
    with pytest.raises(DataError, match=r"\[0, 3\)"):
        accuracy(torch.zeros(2, 3), torch.tensor([0, 3]))


# ---- aggregation over seeds ----------------------------------------------------------------


def test_mean_std_uses_sample_std() -> None:
    values = [0.91, 0.93, 0.92, 0.95]
    mean, std = mean_std(values)
    assert mean == pytest.approx(np.mean(values))
    assert std == pytest.approx(np.std(values, ddof=1))
    assert mean_std([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_format_mean_std() -> None:
    assert format_mean_std(0.9123, 0.0041) == "0.912 ± 0.004"
    assert format_mean_std(12.345, 1.0, digits=1) == "12.3 ± 1.0"
