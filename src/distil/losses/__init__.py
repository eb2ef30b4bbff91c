"""Pure loss functions for distillation, registered by name.

``distil.losses.get("forward_kl")`` returns the function; ``LOSSES.names()`` lists them all.
Nothing in this package holds state, builds modules or does I/O.
"""

from distil.losses import divergences  # noqa: F401  (registers the divergences)
from distil.losses.divergences import forward_kl, reverse_kl
from distil.losses.registry import LOSSES, get, register_loss

__all__ = ["LOSSES", "get", "register_loss", "forward_kl", "reverse_kl"]
