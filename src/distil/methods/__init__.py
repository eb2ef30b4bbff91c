"""Distillation methods, one file each; importing this package registers them all."""

from distil.methods import kd, pseudo_label, supervised, taid, tgeo  # noqa: F401  (registration)
from distil.methods.base import (
    METHODS,
    LossOutput,
    Method,
    MethodConfig,
    build_method,
    register_method,
)

__all__ = ["METHODS", "LossOutput", "Method", "MethodConfig", "build_method", "register_method"]
