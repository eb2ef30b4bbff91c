"""Classification metrics over logits: pure functions from tensors to Python floats.

Everything here takes logits of shape ``(N, C)`` in any floating dtype, computes in float64
(a half-precision softmax loses the calibration signal we want to measure) and returns plain
floats or lists, ready for ``metrics.json``. No modules, no data loaders, no I/O: the
evaluation loop that runs a model over a split lives elsewhere and calls these.

Shapes are checked where tensors enter and a mismatch raises
:class:`distil.errors.ShapeError` naming both tensors and their shapes.
"""

from __future__ import annotations

import torch

from distil.errors import DataError, ShapeError

__all__ = [
    "accuracy",
    "agreement",
    "classification_metrics",
    "expected_calibration_error",
    "nll",
    "reliability_bins",
    "teacher_student_kl",
]


def _as_float64_logits(logits: torch.Tensor, name: str) -> torch.Tensor:
    """Detach ``logits``, check they are ``(N, C)`` with N ≥ 1, and return them as float64."""
    if logits.dim() != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ShapeError(
            f"{name} must have shape (N, C) with N, C ≥ 1, got {name} {tuple(logits.shape)}"
        )
    return logits.detach().to(torch.float64)


def _check_labels(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Check ``labels`` is ``(N,)`` with class indices in ``[0, C)``; return them as int64."""
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ShapeError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not fit: "
            "expected logits (N, C) and labels (N,)"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise DataError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.detach().to(torch.int64)
    n_classes = logits.shape[1]
    if bool(((labels < 0) | (labels >= n_classes)).any()):
        raise DataError(
            f"labels must lie in [0, {n_classes}) for logits {tuple(logits.shape)}, "
            f"found values from {int(labels.min())} to {int(labels.max())}"
        )
    return labels


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    """Student and teacher logits must describe the same samples over the same classes."""
    if student_logits.shape != teacher_logits.shape:
        raise ShapeError(
            f"student_logits {tuple(student_logits.shape)} and teacher_logits "
            f"{tuple(teacher_logits.shape)} must have the same shape (N, C)"
        )


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy: the fraction of samples whose argmax class equals the label.

    Shapes: ``logits (N, C)``, ``labels (N,)``.
    """
    logits64 = _as_float64_logits(logits, "logits")
    labels64 = _check_labels(logits64, labels)
    return float((logits64.argmax(dim=1) == labels64).to(torch.float64).mean())


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood of the labels, natural log.

    ``NLL = -(1/N) Σ_i log softmax(z_i)[y_i]``, computed with ``log_softmax`` so that large
    logits do not overflow. Shapes: ``logits (N, C)``, ``labels (N,)``.
    """
    logits64 = _as_float64_logits(logits, "logits")
    labels64 = _check_labels(logits64, labels)
    label_logprobs = torch.log_softmax(logits64, dim=1).gather(1, labels64[:, None])  # (N, 1)
    return float(-label_logprobs.mean())


def _bin_statistics(
    logits: torch.Tensor, labels: torch.Tensor, n_bins: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-bin sample counts, summed confidences and summed correctness, plus bin edges.

    Bins split the confidence range (0, 1] into ``n_bins`` equal-width, right-closed
    intervals ``(b/n, (b+1)/n]``; a confidence of exactly 1 falls in the last bin.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    logits64 = _as_float64_logits(logits, "logits")
    labels64 = _check_labels(logits64, labels)
    probs = torch.softmax(logits64, dim=1)
    confidences, predictions = probs.max(dim=1)  # (N,), (N,)
    correct = (predictions == labels64).to(torch.float64)
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    # right=False gives edges[i-1] < x <= edges[i], i.e. right-closed bins as in Guo et al.
    bin_index = torch.bucketize(confidences, edges[1:-1], right=False)  # (N,)
    counts = torch.zeros(n_bins, dtype=torch.float64).index_add_(
        0, bin_index, torch.ones_like(confidences)
    )
    confidence_sums = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bin_index, confidences)
    correct_sums = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bin_index, correct)
    return counts, confidence_sums, correct_sums, edges


def expected_calibration_error(
    logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15
) -> float:
    """Expected calibration error with equal-width confidence bins (Guo et al., 2017).

    With confidence ``conf_i = max_c softmax(z_i)_c`` and bins ``B_b`` splitting (0, 1]
    into ``n_bins`` right-closed intervals of equal width:

        ECE = Σ_b (|B_b| / N) · |acc(B_b) − conf(B_b)|

    where ``acc(B_b)`` is the fraction of correct predictions in the bin and ``conf(B_b)``
    the mean confidence in it. Empty bins contribute nothing. Shapes: ``logits (N, C)``,
    ``labels (N,)``.
    """
    counts, confidence_sums, correct_sums, _ = _bin_statistics(logits, labels, n_bins)
    # |Σ correct − Σ conf| / N equals (|B_b|/N)·|acc − conf| and needs no division by |B_b|.
    return float((correct_sums - confidence_sums).abs().sum() / counts.sum())


def reliability_bins(
    logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15
) -> dict[str, list]:
    """The per-bin numbers a reliability diagram plots.

    Returns a dict of equal-length lists, one entry per bin over (0, 1]:
    ``bin_lower``, ``bin_upper`` (the edges), ``confidence`` (mean confidence in the bin),
    ``accuracy`` (fraction correct in the bin) and ``count`` (samples in the bin). Empty bins
    have count 0 and ``None`` for confidence and accuracy, so they plot as gaps rather than
    as zeros. The bins are those of :func:`expected_calibration_error`.
    """
    counts, confidence_sums, correct_sums, edges = _bin_statistics(logits, labels, n_bins)
    count_list = [int(c) for c in counts.tolist()]
    return {
        "bin_lower": edges[:-1].tolist(),
        "bin_upper": edges[1:].tolist(),
        "confidence": [
            s / c if c else None for s, c in zip(confidence_sums.tolist(), count_list, strict=True)
        ],
        "accuracy": [
            s / c if c else None for s, c in zip(correct_sums.tolist(), count_list, strict=True)
        ],
        "count": count_list,
    }


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Top-1 agreement (fidelity): the fraction of samples where student and teacher argmax match.

    Shapes: both ``(N, C)``.
    """
    student64 = _as_float64_logits(student_logits, "student_logits")
    teacher64 = _as_float64_logits(teacher_logits, "teacher_logits")
    _check_pair(student64, teacher64)
    same = student64.argmax(dim=1) == teacher64.argmax(dim=1)
    return float(same.to(torch.float64).mean())


def teacher_student_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Mean forward KL divergence from teacher to student at temperature 1, in nats.

        KL(p_T ‖ p_S) = (1/N) Σ_i Σ_c p_T(c|x_i) · (log p_T(c|x_i) − log p_S(c|x_i))

    Both log-distributions come from ``log_softmax``, so logits of ±1e4 stay finite. Classes
    the teacher gives zero probability (for example a logit of −inf) contribute zero, by the
    convention 0 · log 0 = 0. Shapes: both ``(N, C)``.
    """
    student64 = _as_float64_logits(student_logits, "student_logits")
    teacher64 = _as_float64_logits(teacher_logits, "teacher_logits")
    _check_pair(student64, teacher64)
    teacher_logprobs = torch.log_softmax(teacher64, dim=1)  # (N, C)
    student_logprobs = torch.log_softmax(student64, dim=1)  # (N, C)
    teacher_probs = teacher_logprobs.exp()
    pointwise = torch.where(
        teacher_probs > 0,
        teacher_probs * (teacher_logprobs - student_logprobs),
        torch.zeros_like(teacher_probs),
    )
    return float(pointwise.sum(dim=1).mean())


def classification_metrics(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    n_bins: int = 15,
) -> dict[str, float]:
    """All classification metrics of one split, as the dict ``metrics.json`` stores.

    Keys: ``accuracy``, ``nll``, ``ece`` and, when ``teacher_logits`` are given,
    ``agreement`` and ``teacher_kl`` (student vs teacher, see :func:`agreement` and
    :func:`teacher_student_kl`). Shapes: ``logits (N, C)``, ``labels (N,)``,
    ``teacher_logits (N, C)``.
    """
    metrics = {
        "accuracy": accuracy(logits, labels),
        "nll": nll(logits, labels),
        "ece": expected_calibration_error(logits, labels, n_bins=n_bins),
    }
    if teacher_logits is not None:
        metrics["agreement"] = agreement(logits, teacher_logits)
        metrics["teacher_kl"] = teacher_student_kl(logits, teacher_logits)
    return metrics
