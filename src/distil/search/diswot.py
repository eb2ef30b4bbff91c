"""DisWOT: rank candidate students for a teacher without training anything
(Dong et al., "DisWOT: Student Architecture Search for Distillation WithOut Training",
CVPR 2023).

The observation: how well a student will distil from a teacher is already visible in the
two *randomly initialised* networks, in how similarly they organise a batch. Two
similarities, both independent of widths, so any architecture pair can be compared:

* **relation** — the batch's sample-relation matrix G = normalise_rows(f fᵀ) from the
  features entering the classifier; d_rel = ‖G_s − G_t‖²_F / B²;
* **semantic** — the class-relation matrix of the classifier's weight gradient under the
  labels (Grad-CAM-like class maps): rows g_k of ∂CE/∂W, S = normalise_rows(g) normalise_rows(g)ᵀ
  (K × K); d_sem = ‖S_s − S_t‖²_F / K².

The score is −(d_sem + d_rel) (higher is better), averaged over a few batches and random
initialisations. The paper compares per-class channel Gram matrices (ICKD), which needs
related channel counts; our class-relation form is width-free — a deliberate difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from distil.errors import ShapeError
from distil.outputs import call_model


def classifier_of(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` (its classifier), whose input is the feature."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ShapeError(f"{type(model).__name__} has no nn.Linear classifier to score")
    return linears[-1]


def _row_gram(matrix: Tensor) -> Tensor:
    normalised = F.normalize(matrix.flatten(1).double(), dim=1)
    return normalised @ normalised.t()


@dataclass
class Signature:
    """What DisWOT compares: sample relations and class relations of one network."""

    samples: Tensor  # (B, B)
    classes: Tensor  # (K, K)


def signature(model: nn.Module, inputs: Tensor, labels: Tensor) -> Signature:
    """One forward and backward of ``model`` (in train mode, as the paper) on a batch."""
    classifier = classifier_of(model)
    captured: list[Tensor] = []
    hook = classifier.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        logits = call_model(model, inputs)
        F.cross_entropy(logits, labels).backward()
    finally:
        hook.remove()
    gradient = classifier.weight.grad.detach()  # (K, C): a class-activation direction per class
    model.zero_grad(set_to_none=True)
    return Signature(samples=_row_gram(captured[0]), classes=_row_gram(gradient))


def diswot_score(student: Signature, teacher: Signature) -> float:
    """−(d_sem + d_rel): higher means the student organises the batch more like the teacher."""
    relation = (student.samples - teacher.samples).pow(2).sum() / student.samples.numel()
    semantic = (student.classes - teacher.classes).pow(2).sum() / student.classes.numel()
    return -float(relation + semantic)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's τ-b rank correlation between two equally long sequences."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("kendall_tau needs two sequences of the same length ≥ 2")
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return (concordant - discordant) / denominator if denominator else 0.0
