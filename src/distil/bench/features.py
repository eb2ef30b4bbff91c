"""``features``: feature, relation and logit-space methods on a same-family and a
heterogeneous teacher–student pair, against the student alone and plain ``kd``.

Both pairs share the ``kd-mnist`` recipe's CNN teacher and data (real MNIST), 10 epochs, 3
seeds; the live teacher is used everywhere so every method sees the same signal. Rows name
their methods as the recipes do. The expectation from the papers: OFA helps most on the
heterogeneous pair, LELP helps over kd on a few-class task (here digits < 5 vs ≥ 5);
report what happens.
"""

from __future__ import annotations

from pathlib import Path

from distil.bench.harness import SUITES, Row, Suite, plot_grouped_bars
from distil.bench.recipe_runs import recipe_rows

COMMON = ["train.epochs=10", "teacher.precompute=false", "train.balance_every=0"]
#: LELP's few-class setting: digits below 5 vs 5 and above, a 16-unit MLP student.
BINARY = [
    "data.class_groups=[[0,1,2,3,4],[5,6,7,8,9]]",
    "student={model: mlp, options: {hidden: [16]}}",
]
BINARY_VARIANTS = {
    "supervised": ["method={name: supervised}"],
    "kd": [],
    "lelp": ["method={name: lelp, student_layer: layers.2, teacher_layer: head.2, subclasses: 4}"],
}

#: pair label → (student section, {method: recipe overrides})
PAIRS: dict[str, tuple[str, dict[str, list[str]]]] = {
    "cnn→cnn": (
        "student={model: cnn, options: {channels: [8, 16], hidden: 32}}",
        {
            "supervised": ["method={name: supervised}"],
            "kd": [],
            "fitnet": [
                "method={name: fitnet, student_layer: features.7, teacher_layer: features.7}"
            ],
            "at": [
                "method={name: at, student_layers: [features.3, features.7], teacher_layers: [features.3, features.7]}"
            ],
            "rkd": ["method={name: rkd, student_layer: head.2, teacher_layer: head.2}"],
            "crd": [
                "method={name: crd, student_layer: head.2, teacher_layer: head.2, negatives: 1024}"
            ],
            "ofa": ["method={name: ofa, branch_layers: [features.3, features.7]}"],
            "nd": ["method={name: nd, student_layer: head.2, teacher_layer: head.2}"],
            "trg": ["method={name: trg, student_layer: features.7, teacher_layer: features.7}"],
        },
    ),
    "cnn→mlp": (
        "student={model: mlp, options: {hidden: [128]}}",
        {
            "supervised": ["method={name: supervised}"],
            "kd": [],
            "fitnet": ["method={name: fitnet, student_layer: layers.2, teacher_layer: head.2}"],
            "rkd": ["method={name: rkd, student_layer: layers.2, teacher_layer: head.2}"],
            "crd": [
                "method={name: crd, student_layer: layers.2, teacher_layer: head.2, negatives: 1024}"
            ],
            "ofa": ["method={name: ofa, branch_layers: [layers.2]}"],
            "nd": ["method={name: nd, student_layer: layers.2, teacher_layer: head.2}"],
        },
    ),
}


def collect(quick: bool) -> list[Row]:
    """Every method on every pair."""
    rows: list[Row] = []
    for label, (student, variants) in PAIRS.items():
        chosen = dict(list(variants.items())[:3]) if quick else variants
        rows += recipe_rows("features", ("mnist",), chosen, quick=quick,
                            extra_overrides=[*COMMON, student], label=label)  # fmt: skip
    rows += binary_rows(quick)
    return rows


def binary_rows(quick: bool) -> list[Row]:
    """LELP against kd and the student alone on the binary digits task."""
    return recipe_rows("features", ("digits",), BINARY_VARIANTS, quick=quick,
                       extra_overrides=[*COMMON, *BINARY], label="digits binary (cnn→mlp)")  # fmt: skip


def plot(rows: list[Row], path: Path) -> None:
    """Test accuracy per pair and method."""
    plot_grouped_bars(rows, "accuracy", path, "features: test accuracy per teacher–student pair")


SUITES.register("features")(Suite("features", collect, plot))
