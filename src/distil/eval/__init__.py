"""Evaluation: metrics over logits and their summaries over seeds."""

from distil.eval.aggregate import format_mean_std, mean_std
from distil.eval.metrics import (
    accuracy,
    agreement,
    classification_metrics,
    expected_calibration_error,
    nll,
    reliability_bins,
    teacher_student_kl,
)

__all__ = [
    "accuracy",
    "agreement",
    "classification_metrics",
    "expected_calibration_error",
    "format_mean_std",
    "mean_std",
    "nll",
    "reliability_bins",
    "teacher_student_kl",
]
