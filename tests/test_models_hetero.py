"""The heterogeneous families (ViT, MLP-Mixer, MobileNetV2): each builds on small images, maps a
batch to logits and backpropagates; the feature taps its docstring promises exist and have the
promised shapes; patch sizes that do not divide the image fail clearly; sizes stay tiny."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_logits_train_every_parameter
from distil.errors import ConfigError, ShapeError
from distil.models import build_model

BATCH = 2
NUM_CLASSES = 10

# (model, input shape, options): every family on MNIST-size, digits-size and CIFAR-size images.
BUILDS: list[tuple[str, tuple[int, int, int], dict[str, object]]] = [
    ("vit_tiny", (1, 28, 28), {}),
    ("vit_tiny", (1, 28, 28), {"patch_size": 7}),
    ("vit_tiny", (1, 8, 8), {"patch_size": 2}),
    ("vit_tiny", (1, 8, 8), {"patch_size": 4}),
    ("vit_tiny", (3, 32, 32), {}),
    ("mixer_tiny", (1, 28, 28), {}),
    ("mixer_tiny", (1, 8, 8), {"patch_size": 2}),
    ("mixer_tiny", (3, 32, 32), {}),
    ("mobilenet_tiny", (1, 28, 28), {}),
    ("mobilenet_tiny", (1, 8, 8), {}),
    ("mobilenet_tiny", (3, 32, 32), {}),
    ("mobilenet_tiny", (3, 32, 32), {"width_mult": 0.5, "dropout": 0.1}),
]

# The taps each class docstring documents, with their shapes on a (BATCH, 1, 28, 28) batch at
# the defaults: patch 4 → a 7×7 grid of 49 tokens of width 64; MobileNet halves 28 → 14 → 7 → 4.
TAPS_ON_MNIST: dict[str, dict[str, tuple[int, ...]]] = {
    "vit_tiny": {
        "patch_embed": (BATCH, 49, 64),
        **{f"blocks.{index}": (BATCH, 49, 64) for index in range(4)},
        "norm": (BATCH, 64),
        "head": (BATCH, NUM_CLASSES),
    },
    "mixer_tiny": {
        "patch_embed": (BATCH, 49, 64),
        **{f"blocks.{index}": (BATCH, 49, 64) for index in range(4)},
        "norm": (BATCH, 49, 64),
        "head": (BATCH, NUM_CLASSES),
    },
    "mobilenet_tiny": {
        "stem": (BATCH, 16, 28, 28),
        "stages.0": (BATCH, 16, 28, 28),
        "stages.1": (BATCH, 24, 14, 14),
        "stages.2": (BATCH, 32, 7, 7),
        "stages.3": (BATCH, 64, 4, 4),
        "final_conv": (BATCH, 256, 4, 4),
        "head": (BATCH, NUM_CLASSES),
    },
}

# Parameter counts at the defaults for (1, 28, 28) and 10 classes, kept in a student's range.
PARAMETER_RANGES: dict[str, tuple[int, int]] = {
    "vit_tiny": (100_000, 1_000_000),
    "mixer_tiny": (50_000, 500_000),
    "mobilenet_tiny": (50_000, 500_000),
}


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def build_id(build: tuple[str, tuple[int, ...], dict[str, object]]) -> str:
    name, input_shape, options = build
    described_options = ",".join(f"{key}={value}" for key, value in options.items())
    return f"{name}-{'x'.join(map(str, input_shape))}" + (
        f"-{described_options}" if described_options else ""
    )


@pytest.mark.parametrize("build", BUILDS, ids=build_id)
def test_model_gives_logits_and_backpropagates(build):
    name, input_shape, options = build
    torch.manual_seed(0)
    model = build_model(name, input_shape=input_shape, num_classes=NUM_CLASSES, **options)
    images = torch.randn(BATCH, *input_shape)

    logits = model(images)

    assert_logits_train_every_parameter(model, logits, (BATCH, NUM_CLASSES))


@pytest.mark.parametrize("name", sorted(TAPS_ON_MNIST))
def test_documented_feature_taps_exist_and_have_the_documented_shapes(name):
    model = build_model(name, input_shape=(1, 28, 28), num_classes=NUM_CLASSES).eval()
    modules = dict(model.named_modules())
    expected_shapes = TAPS_ON_MNIST[name]
    assert [path for path in expected_shapes if path not in modules] == []

    captured: dict[str, tuple[int, ...]] = {}
    handles = [
        modules[path].register_forward_hook(
            lambda _module, _inputs, output, path=path: captured.__setitem__(
                path, tuple(output.shape)
            )
        )
        for path in expected_shapes
    ]
    with torch.no_grad():
        model(torch.randn(BATCH, 1, 28, 28))
    for handle in handles:
        handle.remove()

    assert captured == expected_shapes


@pytest.mark.parametrize("name", ["vit_tiny", "mixer_tiny"])
def test_tokens_are_the_patches_in_row_major_order(name):
    # No CLS token and row-major order: token r * columns + c is patch (r, c), so a spatial
    # teacher's feature map can be matched by a reshape alone. Light up one patch and look.
    model = build_model(name, input_shape=(3, 32, 32), num_classes=NUM_CLASSES, patch_size=4)
    images = torch.zeros(1, 3, 32, 32)
    row, column = 2, 5
    images[:, :, 4 * row : 4 * (row + 1), 4 * column : 4 * (column + 1)] = 1.0

    with torch.no_grad():
        tokens = model.get_submodule("patch_embed")(images)  # (1, 64, dim)

    blank_patch_token = model.get_submodule("patch_embed.projection").bias
    changed = (tokens[0] - blank_patch_token).abs().sum(dim=1) > 1e-6
    assert tokens.shape[1] == 8 * 8
    assert changed.nonzero().flatten().tolist() == [row * 8 + column]


@pytest.mark.parametrize("name", sorted(PARAMETER_RANGES))
def test_parameter_count_at_the_defaults_suits_a_student(name):
    model = build_model(name, input_shape=(1, 28, 28), num_classes=NUM_CLASSES)
    low, high = PARAMETER_RANGES[name]
    assert low <= count_parameters(model) <= high


def test_width_mult_scales_mobilenet():
    def mobilenet_parameters(width_mult: float) -> int:
        model = build_model(
            "mobilenet_tiny", input_shape=(3, 32, 32), num_classes=10, width_mult=width_mult
        )
        return count_parameters(model)

    assert mobilenet_parameters(0.5) < mobilenet_parameters(1.0) < mobilenet_parameters(2.0)


@pytest.mark.parametrize("name", ["vit_tiny", "mixer_tiny"])
def test_patch_size_that_does_not_divide_the_image_names_both(name):
    with pytest.raises(ShapeError) as caught:
        build_model(name, input_shape=(1, 28, 28), num_classes=NUM_CLASSES, patch_size=5)
    message = str(caught.value)
    assert repr(name) in message and "patch_size 5" in message and "28×28" in message


@pytest.mark.parametrize("name", ["vit_tiny", "mixer_tiny", "mobilenet_tiny"])
def test_images_only(name):
    with pytest.raises(ShapeError, match=f"{name}.*\\(1, 40\\).*\\(channels, height, width\\)"):
        build_model(name, input_shape=(1, 40), num_classes=NUM_CLASSES)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="heads \\(3\\) must divide dim \\(64\\)"):
        build_model("vit_tiny", input_shape=(1, 28, 28), num_classes=NUM_CLASSES, heads=3)
    with pytest.raises(ConfigError, match="patch_size"):
        build_model("mixer_tiny", input_shape=(1, 28, 28), num_classes=NUM_CLASSES, patch_size=0)
    with pytest.raises(ConfigError, match="width_mult"):
        build_model("mobilenet_tiny", input_shape=(1, 28, 28), num_classes=2, width_mult=0)
    with pytest.raises(ConfigError, match="dropout"):
        build_model("vit_tiny", input_shape=(1, 28, 28), num_classes=NUM_CLASSES, dropout=1.0)
