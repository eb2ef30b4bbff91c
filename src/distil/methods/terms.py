"""The two terms almost every logit method is made of — cross-entropy on the labels and a
catalogue divergence to the teacher — for classifiers and language models alike.

A classifier's student gives logits; a language model's gives hidden states and its head,
and both terms then run through the fused LM-head loss (:mod:`distil.losses.fused_lm`) so the
``(tokens, vocab)`` logits are never held at once. Labels equal to −100 are ignored either
way; LM terms are means over the labelled tokens.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from distil import losses
from distil.losses.fused_lm import fused_lm_loss
from distil.losses.logits import upcast
from distil.methods.base import LossOutput
from distil.outputs import ModelOutputs


def label_and_teacher_terms(
    student: ModelOutputs,
    teacher: Tensor | losses.TopK | None,
    labels: Tensor,
    *,
    alpha: float,
    divergence: str = "forward_kl",
    temperature: float = 1.0,
    term: str = "kd",
    label_smoothing: float = 0.0,
    **options: Any,
) -> LossOutput:
    """``(1 − α) · CE(labels) + α · divergence(student, teacher)`` as a :class:`LossOutput`.

    ``teacher`` None (or α = 0) gives cross-entropy alone. The divergence term is logged
    under ``term``.
    """
    return weighted_label_and_teacher_terms(
        student, teacher, labels, ce_weight=1.0 - alpha, kd_weight=alpha, divergence=divergence,
        temperature=temperature, term=term, label_smoothing=label_smoothing, **options,
    )  # fmt: skip


def weighted_label_and_teacher_terms(
    student: ModelOutputs,
    teacher: Tensor | losses.TopK | None,
    labels: Tensor,
    *,
    ce_weight: float,
    kd_weight: float,
    divergence: str = "forward_kl",
    temperature: float = 1.0,
    term: str = "kd",
    label_smoothing: float = 0.0,
    **options: Any,
) -> LossOutput:
    """``ce_weight · CE(labels) + kd_weight · divergence(student, teacher)``: the weighting
    the papers of DKD, DIST and logit standardisation use (CE at weight 1 plus the term at its
    own weight) as well as KD's α-mixing. ``teacher`` None (or ``kd_weight`` 0) gives
    cross-entropy alone, at weight 1."""
    if student.hidden is not None:
        if label_smoothing:
            raise ValueError("label smoothing is not supported with a language-model student")
        fused = fused_lm_loss(
            student.hidden, student.head, labels=labels,
            teacher=teacher if kd_weight > 0 else None, divergence=divergence,
            ce_weight=ce_weight if teacher is not None else 1.0,
            kd_weight=kd_weight if teacher is not None else 0.0,
            temperature=temperature, vocab_size=student.vocab_size, **options,
        )  # fmt: skip
        if teacher is None or kd_weight == 0:
            return LossOutput(fused.total, {"ce": fused.ce}, {"ce": 1.0})
        return LossOutput(
            fused.total, {"ce": fused.ce, term: fused.kd}, {"ce": ce_weight, term: kd_weight}
        )
    logits = upcast(student.logits)
    ce = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
        ignore_index=-100, label_smoothing=label_smoothing,
    )  # fmt: skip
    if teacher is None:
        return LossOutput.combine({"ce": (1.0, ce)})
    if labels.dim() > 1:  # token labels: padding and prompts (−100) carry no teacher term
        options = {**options, "mask": labels >= 0}
    if "labels" in losses.options_of(divergence):
        options = {**options, "labels": labels}
    value = losses.get(divergence)(student.logits, teacher, temperature=temperature, **options)
    return LossOutput.combine({"ce": (ce_weight, ce), term: (kd_weight, value)})


def mean_over_teachers(terms: list[tuple[float, LossOutput]]) -> LossOutput:
    """``Σ_t w_t · L_t`` for per-teacher losses that share their label term (Σ w_t = 1): the
    parts are the weighted means of the per-teacher parts, the weights those of one teacher.
    One teacher is returned as it is."""
    if len(terms) == 1:
        return terms[0][1]
    first = terms[0][1]
    total = sum(weight * loss.total for weight, loss in terms)
    parts = {name: sum(weight * loss.parts[name] for weight, loss in terms) for name in first.parts}
    return LossOutput(total=total, parts=parts, weights=dict(first.weights))
