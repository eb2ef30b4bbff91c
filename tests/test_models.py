"""The model zoo: every model builds, maps a batch to logits and backpropagates; the KD
families match their published parameter counts; bad options and shapes fail clearly."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a hub

import pytest
import torch

from conftest import assert_logits_train_every_parameter
from distil.errors import ConfigError, ShapeError, UnknownNameError
from distil.models import MODELS, build_model

BATCH = 2
NUM_CLASSES = 5

# A small input each model can take; big nets get small images to keep the file fast.
FITTING_SHAPES: dict[str, list[tuple[int, ...]]] = {
    "mlp": [(1, 8, 8), (1, 40), (7,)],
    "cnn": [(1, 8, 8), (1, 28, 28), (1, 40)],
    **{name: [(1, 8, 8)] for name in MODELS.names() if name.startswith(("resnet", "wrn"))},
    **{name: [(1, 28, 28)] for name in ("vit_tiny", "mixer_tiny", "mobilenet_tiny")},
}
LOCAL_ONLY_MODELS = {"hf_sequence_classifier"}  # needs a saved checkpoint; tested below


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_every_registered_model_has_a_fitting_shape_here():
    assert set(MODELS.names()) == set(FITTING_SHAPES) | LOCAL_ONLY_MODELS


@pytest.mark.parametrize(
    ("name", "input_shape"),
    [(name, shape) for name, shapes in FITTING_SHAPES.items() for shape in shapes],
)
def test_model_gives_logits_and_backpropagates(name, input_shape):
    torch.manual_seed(0)
    model = build_model(name, input_shape=input_shape, num_classes=NUM_CLASSES)
    inputs = torch.randn(BATCH, *input_shape)

    logits = model(inputs)

    assert_logits_train_every_parameter(model, logits, (BATCH, NUM_CLASSES))


def test_the_kd_families_take_thirty_two_pixel_images():
    model = build_model("resnet8", input_shape=(3, 32, 32), num_classes=NUM_CLASSES)
    assert model(torch.randn(BATCH, 3, 32, 32)).shape == (BATCH, NUM_CLASSES)


@pytest.mark.parametrize(
    ("name", "published_millions"),
    [
        ("resnet8x4", 1.23),
        ("resnet32x4", 7.43),
        ("resnet56", 0.86),
        ("resnet20", 0.28),
        ("wrn_40_2", 2.26),
        ("wrn_16_2", 0.70),
    ],
)
def test_parameter_counts_match_the_kd_literature(name, published_millions):
    # Counts for 100 classes on CIFAR-100 images, as tabulated by CRD (Tian et al., 2020).
    model = build_model(name, input_shape=(3, 32, 32), num_classes=100)
    assert count_parameters(model) / 1e6 == pytest.approx(published_millions, rel=0.02)


def test_mlp_options_shape_the_network():
    model = build_model(
        "mlp", input_shape=(10,), num_classes=3, hidden=[4], dropout=0.1, activation="tanh"
    )
    # 10 → 4 → 3, with biases.
    assert count_parameters(model) == 10 * 4 + 4 + 4 * 3 + 3


def test_cnn_picks_the_convolution_to_fit_the_input():
    signal_model = build_model("cnn", input_shape=(1, 40), num_classes=3)
    image_model = build_model("cnn", input_shape=(1, 8, 8), num_classes=3)
    assert any(isinstance(module, torch.nn.Conv1d) for module in signal_model.modules())
    assert any(isinstance(module, torch.nn.Conv2d) for module in image_model.modules())


def test_unknown_option_names_the_model_the_option_and_the_valid_ones():
    with pytest.raises(ConfigError) as caught:
        build_model("mlp", input_shape=(4,), num_classes=2, hiden=[8])
    message = str(caught.value)
    assert "'mlp'" in message and "'hiden'" in message
    assert "hidden" in message and "activation" in message and "dropout" in message


def test_option_for_a_model_without_options_is_rejected():
    with pytest.raises(ConfigError, match="resnet20.*'dropout'"):
        build_model("resnet20", input_shape=(3, 8, 8), num_classes=2, dropout=0.1)


def test_bad_option_values_are_config_errors():
    with pytest.raises(ConfigError, match="activation"):
        build_model("mlp", input_shape=(4,), num_classes=2, activation="swish")
    with pytest.raises(ConfigError, match="dropout"):
        build_model("wrn_16_1", input_shape=(3, 8, 8), num_classes=2, dropout=1.5)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("mlp", input_shape=(4,), num_classes=0)


def test_unknown_model_suggests_a_close_name():
    with pytest.raises(UnknownNameError, match="resnet32x4"):
        build_model("resnet32x5", input_shape=(3, 8, 8), num_classes=2)


def test_resnet_rejects_signals_naming_model_shape_and_expectation():
    with pytest.raises(ShapeError) as caught:
        build_model("resnet20", input_shape=(1, 40), num_classes=10)
    message = str(caught.value)
    assert "'resnet20'" in message and "(1, 40)" in message
    assert "(channels, height, width)" in message


def test_cnn_rejects_flat_features():
    with pytest.raises(ShapeError, match="cnn.*\\(7,\\)"):
        build_model("cnn", input_shape=(7,), num_classes=10)


def save_tiny_bert_classifier(folder, num_labels: int) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    BertForSequenceClassification(config).save_pretrained(folder)


def token_batch(length: int = 16) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.randint(0, 100, (BATCH, length)),
        "attention_mask": torch.ones(BATCH, length, dtype=torch.long),
    }


def test_hf_wrapper_loads_a_local_checkpoint_and_returns_logits(tmp_path):
    save_tiny_bert_classifier(tmp_path, num_labels=3)

    model = build_model(
        "hf_sequence_classifier", input_shape=(16,), num_classes=3, path=str(tmp_path)
    )

    assert model(token_batch()).shape == (BATCH, 3)


def test_hf_wrapper_refuses_a_head_of_another_size_unless_asked(tmp_path):
    save_tiny_bert_classifier(tmp_path, num_labels=2)

    with pytest.raises(ConfigError, match="2 labels.*num_classes is 3.*new_head"):
        build_model("hf_sequence_classifier", input_shape=(16,), num_classes=3, path=str(tmp_path))
    model = build_model(
        "hf_sequence_classifier",
        input_shape=(16,),
        num_classes=3,
        path=str(tmp_path),
        new_head=True,
    )
    assert model(token_batch()).shape == (BATCH, 3)


def test_hf_wrapper_names_a_missing_folder(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match="no-such-model"):
        build_model("hf_sequence_classifier", input_shape=(16,), num_classes=3, path=str(missing))


def test_hf_wrapper_requires_a_path():
    with pytest.raises(ConfigError, match="'path'"):
        build_model("hf_sequence_classifier", input_shape=(16,), num_classes=3)
