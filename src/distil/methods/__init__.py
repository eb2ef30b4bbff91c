"""Distillation methods, one file each; importing this package registers them all."""

from distil.methods import (  # noqa: F401  (registration)
    attention,
    crd,
    ddk,
    fitnet,
    gkd,
    kd,
    lelp,
    logit_kd,
    miniplm,
    nd,
    ofa_kd,
    pseudo_label,
    rkd,
    seq_kd,
    supervised,
    swing,
    taid,
    tgeo,
    trg,
)
from distil.methods.base import (
    METHODS,
    LossOutput,
    Method,
    MethodConfig,
    build_method,
    register_method,
)

__all__ = ["METHODS", "LossOutput", "Method", "MethodConfig", "build_method", "register_method"]
