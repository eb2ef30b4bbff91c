"""Feature taps, projectors, feature/relation losses and the methods that use them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from distil.config import load_config
from distil.data import load_data
from distil.errors import ConfigError, ShapeError
from distil.losses.features import (
    attention_map,
    attention_transfer_loss,
    hint_loss,
    rkd_angle_loss,
    rkd_distance_loss,
)
from distil.models import build_model
from distil.models.projectors import build_projector
from distil.models.taps import FeatureTaps, discover_shapes
from distil.pipeline import run


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return build_model("cnn", input_shape=(1, 8, 8), num_classes=3, channels=[4, 6], hidden=8)


def test_taps_capture_shapes_and_detach_cleanly():
    model = small_cnn()
    inputs = torch.randn(5, 1, 8, 8)
    before = model(inputs)
    taps = FeatureTaps(model, ["features.3", "head.1"])
    after = model(inputs)
    captured = taps.pop()
    assert captured["features.3"].shape == (5, 4, 4, 4) and captured["head.1"].shape == (5, 8)
    torch.testing.assert_close(before, after)  # tapping changes nothing
    taps.remove()
    model(inputs)
    assert taps.latest == {} and not any(m._forward_hooks for m in model.modules())
    assert discover_shapes(model, inputs, ["features.7", "head.4"]) == {
        "features.7": (6, 2, 2),
        "head.4": (3,),
    }


def test_tap_keeps_the_value_before_an_in_place_relu():
    model = small_cnn()  # BatchNorm (features.1) is followed by ReLU(inplace=True)
    with FeatureTaps(model, ["features.1"]) as taps:
        model(torch.randn(4, 1, 8, 8))
        bn_output = taps.pop()["features.1"]
    assert (bn_output < 0).any()  # not overwritten by the ReLU


def test_a_wrong_layer_name_lists_the_valid_ones():
    with pytest.raises(
        ConfigError,
        match=r"no layer 'featurs.3'.*did you mean 'features.3'.*valid layers: features, features.0",
    ):
        FeatureTaps(small_cnn(), ["featurs.3"], owner="student")


@pytest.mark.parametrize(
    ("student", "teacher", "layouts"),
    [
        ((64,), (128,), ("auto", "auto")),
        ((32, 7, 7), (64, 14, 14), ("auto", "auto")),
        ((64, 14, 14), (32, 7, 7), ("auto", "auto")),
        ((49, 96), (64, 7, 7), ("auto", "auto")),  # ViT tokens → CNN map
        ((64, 7, 7), (16, 96), ("auto", "auto")),  # CNN map → ViT tokens
        ((16, 96), (49, 32), ("auto", "auto")),
        ((32, 7, 7), (10,), ("auto", "auto")),
        ((32, 40), (64, 10), ("map", "map")),  # 1-D conv maps
    ],
)
def test_projectors_are_sized_automatically(student, teacher, layouts):
    projector = build_projector(
        student, teacher, student_layout=layouts[0], teacher_layout=layouts[1]
    )
    out = projector(torch.randn(3, *student))
    assert tuple(out.shape[1:]) == teacher
    out.sum().backward()  # trainable end to end


@pytest.mark.parametrize(
    ("student", "teacher"), [((64,), (32, 7, 7)), ((50, 8), (8, 7, 7)), ((8, 7, 7), (8, 12))]
)
def test_projector_mismatch_names_both_shapes(student, teacher):
    with pytest.raises(ShapeError, match=rf"{student[0]}.*{teacher[0]}"):
        layouts = {"teacher_layout": "map"} if len(teacher) == 2 else {}
        build_projector(student, teacher, **layouts)


def test_hint_and_attention_losses_by_hand():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[1.0, 0.0], [3.0, 6.0]])
    assert float(hint_loss(s, t)) == pytest.approx((0 + 4 + 0 + 4) / 4)
    # a (1, 2, 1, 2) map: channels [[3, 4]] and [[0, 0]] → energy mean over channels (4.5, 8)
    feature = torch.tensor([[[[3.0, 4.0]], [[0.0, 0.0]]]])
    expected = np.array([4.5, 8.0]) / np.linalg.norm([4.5, 8.0])
    np.testing.assert_allclose(attention_map(feature).numpy()[0], expected, rtol=1e-6)
    a, b = torch.tensor([[0.6, 0.8]]), torch.tensor([[1.0, 0.0]])
    assert float(attention_transfer_loss(a, b)) == pytest.approx((0.4**2 + 0.8**2) / 2)


def test_rkd_losses_by_hand_and_invariances():
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    # scaling and rotating the teacher changes no relation: zero loss
    rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    teacher = 3.0 * square @ rotation.T
    assert float(rkd_distance_loss(square, teacher)) == pytest.approx(0.0, abs=1e-6)
    assert float(rkd_angle_loss(square, teacher)) == pytest.approx(0.0, abs=1e-6)
    # distance-wise by hand: pairs of the unit square have lengths 1 (×8) and √2 (×4)
    line = torch.tensor([[0.0], [1.0], [2.0], [3.0]])

    def normalised(x):
        d = torch.cdist(x, x)
        off = ~torch.eye(4, dtype=torch.bool)
        return d[off] / d[off].mean()

    # the authors' code averages over all N² entries, the zero diagonal included: × 12 / 16
    off_diagonal = torch.nn.functional.smooth_l1_loss(normalised(square), normalised(line))
    expected = off_diagonal * 12 / 16
    assert float(rkd_distance_loss(square, line)) == pytest.approx(float(expected), rel=1e-5)


@pytest.fixture(scope="module")
def digits():
    return load_data(load_config("kd-digits").data)


@pytest.mark.parametrize(
    "method",
    [
        # the paper's β = 100 is set for conv maps over 240 epochs; 3 epochs of an MLP
        # student on digits need a lighter hint to pass the bar
        "{name: fitnet, student_layer: layers.2, teacher_layer: head.2, beta: 1}",
        "{name: rkd, student_layer: layers.2, teacher_layer: head.2}",
    ],
)
def test_feature_methods_train_with_an_mlp_student(tiny_recipe, digits, method):
    config = load_config(tiny_recipe, [f"method={method}", "train.epochs=3"])
    result = run(config, data=digits)
    assert result.metrics["last"]["test"]["accuracy"] > 0.7
    rows = [
        json.loads(line) for line in (config.run_dir() / "metrics.jsonl").read_text().splitlines()
    ]
    train = [r for r in rows if r["kind"] == "train"]
    part = "loss/hint" if "fitnet" in method else "loss/distance"
    assert train[-1][part] < train[0][part]  # the feature term is being minimised


def test_attention_transfer_between_different_widths(tiny_recipe, digits):
    config = load_config(tiny_recipe, [
        "student={model: cnn, options: {channels: [4, 8], hidden: 16}}",
        "method={name: at, student_layers: [features.3], teacher_layers: [features.3], beta: 100}",
        "train.epochs=3",
    ])  # fmt: skip
    assert run(config, data=digits).metrics["last"]["test"]["accuracy"] > 0.6


def test_feature_methods_refuse_a_precomputed_teacher(tiny_recipe, digits):
    config = load_config(tiny_recipe, [
        "method={name: fitnet, student_layer: layers.2, teacher_layer: head.2}",
        "teacher.precompute=true",
    ])  # fmt: skip
    with pytest.raises(ConfigError, match="teacher.precompute"):
        run(config, data=digits)


def test_a_wrong_teacher_layer_fails_before_training(tiny_recipe, digits):
    config = load_config(
        tiny_recipe, ["method={name: fitnet, student_layer: layers.2, teacher_layer: head.22}"]
    )
    with pytest.raises(ConfigError, match="teacher: no layer 'head.22'"):
        run(config, data=digits)


def test_ofa_loss_weights_by_hand():
    from scipy.special import log_softmax, softmax

    from distil import losses

    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.2, 0.1]], dtype=torch.float64)
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    p, log_q = softmax(teacher.numpy(), 1), log_softmax(student.numpy(), 1)
    one_hot = np.eye(3)[labels.numpy()]
    for eps in (1.0, 1.5):
        weights = (p + one_hot) ** eps - one_hot
        expected = -(weights * log_q).sum(1).mean()
        assert float(losses.get("ofa")(student, teacher, labels=labels, eps=eps)) == pytest.approx(
            expected, rel=1e-12
        )
    # ε = 1 is the cross-entropy against the teacher's distribution
    ce = -(p * log_q).sum(1).mean()
    assert float(losses.get("ofa")(student, teacher, labels=labels)) == pytest.approx(ce, rel=1e-12)


def test_nd_loss_by_hand():
    from distil.methods.nd import nd_loss

    centres = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    student = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    teacher = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    labels = torch.tensor([0, 1])
    # sample 0: ⟨s, (1, 0)⟩ = 3, max(‖s‖=5, ‖t‖=1) = 5 → 1 − 0.6; sample 1: 2 / max(2, 4) → 0.5
    assert float(nd_loss(student, teacher, centres, labels)) == pytest.approx((0.4 + 0.5) / 2)


@pytest.mark.parametrize(
    "method",
    [
        "{name: ofa, branch_layers: [layers.2], eps: 1.5}",
        "{name: nd, student_layer: layers.2, teacher_layer: head.2}",
    ],
)
def test_logit_space_and_centre_methods_train(tiny_recipe, digits, method):
    config = load_config(tiny_recipe, [f"method={method}", "train.epochs=3"])
    result = run(config, data=digits)
    assert result.metrics["last"]["test"]["accuracy"] > 0.7
    from safetensors.torch import load_file

    checkpoints = config.run_dir() / "checkpoints"
    last = json.loads((checkpoints / "last.json").read_text())["dir"]
    state = load_file(str(checkpoints / last / "method.safetensors"))
    if "ofa" in method:
        assert any(
            key.startswith("heads.layers__2") for key in state
        )  # the branch head is trained and saved
    else:
        assert float(state["centre_counts"].sum()) > 0  # class centres accumulated and saved


def test_crd_nce_loss_by_hand():
    from distil.methods.crd import nce_loss

    scores = torch.tensor([[0.5, 0.1, 0.2]], dtype=torch.float64)  # positive first, K = 2
    noise = 0.25
    expected = -(np.log(0.5 / 0.75) + np.log(0.25 / 0.35) + np.log(0.25 / 0.45))
    assert float(nce_loss(scores, noise)) == pytest.approx(expected, rel=1e-6)


def test_crd_trains_and_keeps_its_memory_banks(tiny_recipe, digits):
    config = load_config(tiny_recipe, [
        "method={name: crd, student_layer: layers.2, teacher_layer: head.2, negatives: 64}",
        "train.epochs=3",
    ])  # fmt: skip
    # 3 epochs on digits reach about 0.71-0.75 depending on K (chance is 0.1)
    assert run(config, data=digits).metrics["last"]["test"]["accuracy"] > 0.5
    from safetensors.torch import load_file

    checkpoints = config.run_dir() / "checkpoints"
    state = load_file(
        str(
            checkpoints
            / json.loads((checkpoints / "last.json").read_text())["dir"]
            / "method.safetensors"
        )
    )
    assert state["student_bank"].shape == (len(digits.train), 128)
    norms = state["teacher_bank"].norm(dim=1)
    assert torch.allclose(norms[norms > 0.99], torch.ones_like(norms[norms > 0.99]), atol=1e-5)
    assert (state["normalisers"] > 0).all()


def test_lelp_null_space_and_subclass_targets():
    from distil.methods.lelp import null_space_projection, subclass_directions

    torch.manual_seed(0)
    embeddings = torch.randn(200, 6, dtype=torch.float64)
    weight = torch.randn(2, 6, dtype=torch.float64)
    logits = embeddings @ weight.t() + 0.3
    projection = null_space_projection(embeddings, logits)
    torch.testing.assert_close(
        weight @ projection, torch.zeros(2, 6, dtype=torch.float64), atol=1e-8, rtol=0
    )
    torch.testing.assert_close(projection @ projection, projection)  # a projection
    labels = (logits[:, 0] > logits[:, 1]).long()
    means, directions = subclass_directions(embeddings @ projection.t(), labels, 2, 3, seed=0)
    assert means.shape == (2, 6) and directions.shape == (2, 6, 3)
    # rotated principal directions stay orthonormal
    gram = directions[0].t() @ directions[0]
    torch.testing.assert_close(gram, torch.eye(3, dtype=torch.float64), atol=1e-8, rtol=0)


def test_lelp_trains_on_a_binary_task(tiny_recipe):
    binary = load_data(
        load_config("kd-digits", ["data.class_groups=[[0,1,2,3,4],[5,6,7,8,9]]"]).data
    )
    assert binary.num_classes == 2
    config = load_config(tiny_recipe, [
        "data.class_groups=[[0,1,2,3,4],[5,6,7,8,9]]",
        "method={name: lelp, student_layer: layers.2, teacher_layer: head.2, subclasses: 4}",
        "train.epochs=3",
    ])  # fmt: skip
    result = run(config, data=binary)
    assert result.metrics["last"]["test"]["accuracy"] > 0.7
    from distil.methods import build_method

    method = build_method(config.method)
    assert method.config.subclasses == 4
    rows = [
        json.loads(line) for line in (config.run_dir() / "metrics.jsonl").read_text().splitlines()
    ]
    subclass = [r["loss/subclass"] for r in rows if r["kind"] == "train"]
    assert subclass[-1] < subclass[0]


def test_trg_token_helpers():
    from distil.methods.trg import as_tokens, pool_tokens, relation_logits

    feature_map = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    tokens = as_tokens(feature_map, "map")
    assert tokens.shape == (2, 16, 3)
    torch.testing.assert_close(tokens[0, 5], feature_map[0, :, 1, 1])  # row-major positions
    pooled = pool_tokens(tokens, 4)
    torch.testing.assert_close(pooled[0, 0], feature_map[0, :, :2, :2].mean((1, 2)))
    logits = relation_logits(torch.eye(3), temperature=0.5)
    assert torch.isinf(logits.diagonal()).all() and float(logits[0, 1]) == 0.0


def test_trg_trains_and_its_graph_terms_fall(tiny_recipe, digits):
    config = load_config(tiny_recipe, [
        "student={model: cnn, options: {channels: [4, 8], hidden: 16}}",
        "method={name: trg, student_layer: features.7, teacher_layer: features.7}",
        "train.epochs=3",
    ])  # fmt: skip
    run(config, data=digits)
    rows = [
        json.loads(line) for line in (config.run_dir() / "metrics.jsonl").read_text().splitlines()
    ]
    train = [r for r in rows if r["kind"] == "train"]
    for part in ("loss/token", "loss/instance", "loss/ce"):
        assert train[-1][part] < train[0][part], part
    assert all(np.isfinite(r["loss"]) for r in train)
