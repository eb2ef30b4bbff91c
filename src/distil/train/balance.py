"""Loss-balance diagnostic: how much of the gradient each weighted loss part carries.

The weight between, say, cross-entropy and the distillation term is the setting users most
often get wrong: one term can silently carry nearly all of the gradient. Every N steps the
trainer asks for ``‖∇ w_k L_k‖ / Σ_j ‖∇ w_j L_j‖`` over the student's parameters and warns
once when a single part's share passes a threshold.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distil.methods.base import LossOutput


def gradient_shares(loss: LossOutput, parameters: list[nn.Parameter]) -> dict[str, float]:
    """Each weighted part's share of the summed per-part gradient norms.

    Parts with zero weight or no path to ``parameters`` are skipped; returns an empty dict
    when fewer than two parts remain (a single term trivially carries everything). The
    autograd graph is kept for the real backward pass that follows.
    """
    terms = {
        name: loss.weights[name] * value
        for name, value in loss.parts.items()
        if loss.weights[name] != 0.0 and value.requires_grad
    }
    if len(terms) < 2:
        return {}
    norms: dict[str, float] = {}
    for name, term in terms.items():
        grads = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
        squares = [g.float().pow(2).sum() for g in grads if g is not None]
        norms[name] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    total = sum(norms.values())
    if total == 0.0:
        return {}
    return {name: norm / total for name, norm in norms.items()}


def dominant_part(shares: dict[str, float], threshold: float) -> str | None:
    """The name of the part whose share is at least ``threshold``, if any."""
    for name, share in shares.items():
        if share >= threshold:
            return name
    return None


def parameters_of(module: nn.Module) -> list[Tensor]:
    """Trainable parameters of ``module`` (what the shares are measured on)."""
    return [p for p in module.parameters() if p.requires_grad]
