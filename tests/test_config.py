"""Recipes: typed, with one-line errors that name the key and suggest the closest one."""

from __future__ import annotations

import pytest
import yaml

from distil.config import apply_overrides, load_config, parse_config, shipped_recipes
from distil.errors import ConfigError
from distil.methods import METHODS
from distil.methods.kd import KDConfig


def test_every_shipped_recipe_parses():
    names = shipped_recipes()
    assert "demo" in names and "kd-mnist1d" in names
    for name in names:
        config = load_config(name)
        assert config.method.name in METHODS


def test_overrides_are_coerced_to_the_field_types(tiny_recipe):
    config = load_config(
        tiny_recipe,
        [
            "train.lr=3e-4",
            "train.epochs=7",
            "method.temperature=2",
            "student.options.hidden=[8,8]",
            "train.max_grad_norm=null",
        ],
    )
    assert config.train.lr == pytest.approx(3e-4)
    assert config.train.epochs == 7
    assert isinstance(config.method, KDConfig) and config.method.temperature == 2.0
    assert config.student.options["hidden"] == [8, 8]


def test_method_settings_survive_the_round_trip_through_yaml(tiny_recipe):
    config = load_config(
        tiny_recipe, ["method.alpha=0.25", "method.divergence=jsd", "method.beta=0.2"]
    )
    again = parse_config(yaml.safe_load(config.to_yaml()))
    assert again == config
    assert again.method.alpha == 0.25
    assert again.method.divergence_options() == {"beta": 0.2}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "method.temprature=3",
            "method: unknown key 'temprature' for kd with divergence 'forward_kl'; did you mean 'temperature'?",
        ),
        ("trian.lr=0.1", "trian: unknown key; did you mean 'train'?"),
        ("train.lerning_rate=0.1", "train.lerning_rate: unknown key"),
        ("train.lr=fast", "train.lr: Input should be a valid number"),
        ("train.epochs=0", "train.epochs: Input should be greater than or equal to 1"),
        ("method.name=kdd", "method.name: unknown method 'kdd'; did you mean 'kd'"),
        ("data.val_fraktion=0.2", "data.val_fraktion: unknown key; did you mean 'val_fraction'"),
        ("teacher.pretrain.epoch=3", "teacher.pretrain.epoch: unknown key; did you mean 'epochs'?"),
    ],
)
def test_bad_recipes_fail_with_one_line_naming_the_key(tiny_recipe, override, message):
    with pytest.raises(ConfigError) as error:
        load_config(tiny_recipe, [override])
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_recipe_name_suggests_a_shipped_one():
    with pytest.raises(ConfigError, match="kd-mnist1d"):
        load_config("kd-mnist1dd")


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["no-equals-sign"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"name": "x"}, ["name.first=1"])


def test_missing_student_is_named():
    with pytest.raises(ConfigError, match="student: required key is missing"):
        parse_config({"method": {"name": "supervised"}})
