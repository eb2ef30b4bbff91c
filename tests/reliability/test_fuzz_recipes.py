"""Recipes fuzzed as a hostile new user would write them: every shipped recipe mutated.

Each example takes a real recipe from ``configs/`` (or a registered method's section) and
breaks one thing — a wrong type, a missing or unknown key, an absurd number (0, −1, 10²⁰,
inf, nan, a temperature of 0), a list where a mapping belongs, a value nested too deep — and
feeds it through the real entry points. The contract: the recipe parses to a config that is
finite, re-parses from its own YAML and builds its method and models; or it is refused with
one ``ConfigError`` line that names the key — never a pydantic dump, a KeyError/TypeError or
a traceback from inside torch. A sample goes through ``distil train`` itself (exit 2, one
``error:`` line naming the key).

Examples per run (derandomized, so CI sees the same ones): mutated recipes 300, method
options 250, model options 200, CLI overrides 25 — 775 fuzzed recipes in all.
"""

from __future__ import annotations

import copy
import math
import re
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from distil.config import RECIPES_DIR, parse_config
from distil.errors import ConfigError, DistilError
from distil.methods import METHODS
from distil.methods.base import TEMPERATURE_RANGE
from distil.models.registry import model_options
from distil.tasks.classifier_models import build_network

RECIPES: dict[str, dict[str, Any]] = {
    path.stem: yaml.safe_load(path.read_text()) for path in sorted(RECIPES_DIR.glob("*.yaml"))
}
EXAMPLES = {"recipes": 300, "methods": 250, "models": 200, "cli": 25}
FUZZ = settings(
    deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)  # fmt: skip


def fuzz(family: str) -> settings:
    return settings(FUZZ, max_examples=EXAMPLES[family])


# What a hostile recipe holds instead of the right value.
HOSTILE = st.one_of(
    st.sampled_from([math.inf, -math.inf, math.nan, "inf", "-inf", "nan", ".inf", ".nan"]),
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, 1, 2, 10**9, 10**20, -(10**20), 0.0, -0.5, 1e-300, 1e308]),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", " ", "inf", "nan", "-inf", "1e999", "abc", "kdd", "null", "[1, 2]"]),
    st.text(max_size=12),
    st.lists(st.integers(min_value=-3, max_value=3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.recursive(  # nested too deep
        st.integers(min_value=-2, max_value=2),
        lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
        max_leaves=6,
    ),
)  # fmt: skip

# Per-sample input shapes of the built-in datasets, for building models without data.
INPUT_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "mnist1d": (1, 40)}


def key_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a recipe (list items by index)."""
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    paths = []
    for key, value in items:
        paths.append((*prefix, key))
        paths.extend(key_paths(value, (*prefix, key)))
    return paths  # fmt: skip


def mutate(raw: dict, path: tuple, action: str, value: Any) -> dict:
    """A copy of ``raw`` with one thing broken at ``path``."""
    raw = copy.deepcopy(raw)
    parent = raw
    for part in path[:-1]:
        parent = parent[part]
    leaf = path[-1]
    if action == "delete" and isinstance(parent, dict):
        del parent[leaf]
    elif action == "unknown key" and isinstance(parent, dict):
        parent[f"{leaf}_x"] = value
    elif action == "wrap in a list":
        parent[leaf] = [parent[leaf]]
    elif action == "nest deeper":
        parent[leaf] = {"value": {"value": parent[leaf]}}
    else:
        parent[leaf] = value
    return raw


def refused_in_one_line(error: ConfigError, section: str | None) -> str:
    """The error is one line, no validation dump, and names key paths (``key: problem``),
    ``section`` among them unless the change was of the task itself."""
    message = str(error)
    assert "\n" not in message, message
    assert "validation error" not in message.lower() and "errors.pydantic.dev" not in message
    assert ": " in message or message.startswith("a recipe must"), message
    if section is not None:
        assert section.rstrip("s") in message, (section, message)
    return message


def non_finite_numbers(values: Any, path: str = "") -> list[str]:
    """Independent walk: every inf/nan in a dumped config."""
    if isinstance(values, float):
        return [] if math.isfinite(values) else [path]
    children = (
        values.items()
        if isinstance(values, dict)
        else enumerate(values)
        if isinstance(values, list | tuple)
        else ()
    )
    return [bad for key, value in children for bad in non_finite_numbers(value, f"{path}.{key}")]  # fmt: skip


def check_parsed(config: Any) -> None:
    """A recipe that parses is finite, has sane temperatures, re-parses from its own
    ``config.yaml`` and builds its method and (classification) models."""
    dumped = config.model_dump()
    assert non_finite_numbers(dumped) == []
    low, high = TEMPERATURE_RANGE
    for key, value in dumped["method"].items():
        if key.endswith("temperature") and isinstance(value, float):
            assert low <= value <= high, (key, value)
    assert parse_config(yaml.safe_load(config.to_yaml())) == config
    try:
        METHODS.get(config.method.name)(config.method)
        if config.task == "classification" and config.data.dataset in INPUT_SHAPES:
            groups = config.data.class_groups
            data = SimpleNamespace(
                input_shape=INPUT_SHAPES[config.data.dataset],
                num_classes=len(groups) if groups else 10,
            )
            for spec in [config.student, *config.teachers.values()]:
                if not _allocates_much(spec.options):
                    build_network(spec.model_copy(update={"weights": None}), data)
    except DistilError:
        pass  # one clear error is an accepted outcome of building, too


def _allocates_much(options: Any) -> bool:
    """Sizes between 10⁴ and 10¹² build models that really allocate gigabytes (beyond them
    the allocation fails at once, and is checked); the fuzz leaves that band alone."""
    if isinstance(options, bool):
        return False
    if isinstance(options, int | float):
        return 1e4 < abs(options) < 1e12
    children = (
        options.values()
        if isinstance(options, dict)
        else options
        if isinstance(options, list)
        else ()
    )
    return any(_allocates_much(child) for child in children)  # fmt: skip


def section_of(path: tuple) -> str | None:
    """The top-level section an error must name (None for ``task``: another task makes every
    other section the wrong shape, and the error names those)."""
    return None if path[0] == "task" else str(path[0])


# ----------------------------------------------------------------------------- recipes

ACTIONS = [
    "replace",
    "replace",
    "replace",
    "delete",
    "unknown key",
    "wrap in a list",
    "nest deeper",
]


@st.composite
def mutated_recipes(draw) -> tuple[dict, tuple]:
    name = draw(st.sampled_from(sorted(RECIPES)))
    raw = RECIPES[name]
    path = draw(st.sampled_from(key_paths(raw)))
    action = draw(st.sampled_from(ACTIONS))
    return mutate(raw, path, action, draw(HOSTILE)), path


@fuzz("recipes")
@given(case=mutated_recipes())
def test_a_mutated_shipped_recipe_parses_or_is_refused_in_one_line(case):
    raw, path = case
    try:
        config = parse_config(raw)
    except ConfigError as error:
        event("refused")
        refused_in_one_line(error, section_of(path))
    else:
        event("parsed")
        check_parsed(config)


def test_the_fuzz_starts_from_every_shipped_recipe_and_every_method():
    assert len(RECIPES) >= 20 and all(parse_config(raw) for raw in RECIPES.values())
    assert set(METHOD_BASES) == set(SHIPPED_METHODS) and "kd" in SHIPPED_METHODS


# ----------------------------------------------------------------------------- methods


def _method_base(name: str) -> dict:
    """A shipped recipe using the method, else the digits KD recipe with its bare section."""
    for raw in RECIPES.values():
        if raw["method"]["name"] == name:
            return raw
    return {**RECIPES["kd-digits"], "method": {"name": name}}


#: the package's methods (test files register methods of their own, in whatever order
#: pytest imports them; the fuzz must not depend on that)
SHIPPED_METHODS = sorted(
    n for n in METHODS.names() if METHODS.get(n).__module__.startswith("distil.methods.")
)
METHOD_BASES = {name: _method_base(name) for name in SHIPPED_METHODS}


@st.composite
def method_options(draw) -> tuple[dict, str]:
    name = draw(st.sampled_from(sorted(METHOD_BASES)))
    raw = copy.deepcopy(METHOD_BASES[name])
    fields = [f for f in METHODS.get(name).Config.model_fields if f != "name"]
    key = draw(st.sampled_from([*fields, "temprature", "alpha_x"]))
    value = draw(st.one_of(HOSTILE, st.sampled_from([0, 0.0, -1.0, 1.5, 1e-9, 1e9])))
    raw["method"] = {**raw["method"], key: value}
    return raw, key


@fuzz("methods")
@given(case=method_options())
def test_every_method_option_fuzzed_parses_or_is_refused_naming_the_method_key(case):
    raw, key = case
    try:
        config = parse_config(raw)
    except ConfigError as error:
        event("refused")
        message = refused_in_one_line(error, "method")
        assert message.startswith("method"), message
    else:
        event("parsed")
        check_parsed(config)


@pytest.mark.parametrize("temperature", [0, 0.0, -1.0, 1e-9, float("inf"), float("nan"), 1e308])
def test_an_absurd_temperature_is_refused_at_the_config_for_every_method(temperature):
    """Temperature 0 used to be refused for KD only by its own field; 1e-9 or 1e308 passed
    every method's ``gt=0`` and became a NaN loss at step 1."""
    for name, base in METHOD_BASES.items():
        fields = METHODS.get(name).Config.model_fields
        for key in [f for f in fields if f.endswith("temperature")]:
            raw = {**base, "method": {**base["method"], key: temperature}}
            with pytest.raises(ConfigError) as refused:
                parse_config(raw)
            assert re.match(rf"^method(\.{key})?: ", str(refused.value)), str(refused.value)
            assert key in str(refused.value)


@pytest.mark.parametrize(
    ("recipe", "override", "key"),
    [
        ("kd-digits", "train.batch_size=0", "train.batch_size"),
        ("kd-digits", "train.batch_size=-1", "train.batch_size"),
        ("kd-digits", "train.lr=inf", "train.lr"),
        ("kd-digits", "train.lr=nan", "train.lr"),
        ("kd-digits", "train.lr=0", "train.lr"),
        ("kd-digits", "train.epochs=ten", "train.epochs"),
        ("kd-digits", "method.temperature=0", "method.temperature"),
        ("kd-digits", "method.name=[kd]", "method.name"),
        ("kd-digits", "method.name=kdd", "method.name"),
        ("kd-digits", "task=[lm]", "task"),
        ("kd-digits", "task=vision", "task"),
        ("kd-digits", "student.model=mpl", "student.model"),
        ("kd-digits", "data.dataset=digitz", "data.dataset"),
        ("kd-digits", "data=[1, 2]", "data"),
        ("kd-digits", "teacher={}", "teachers.teacher.model"),
        ("kd-digits", "student.options.hidden=.inf", "student.options.hidden"),
        ("kd-digits", "train={a: {b: {c: [1]}}}", "train.a"),
        ("kd-brown", "data.block_size=0", "data.block_size"),
        ("kd-brown", "cache.k=0", "cache.k"),
        ("kd-brown", "student.tiny=[64]", "student.tiny"),
    ],
)
def test_each_absurd_value_of_the_brief_is_refused_naming_its_key(recipe, override, key):
    from distil.config import load_config

    with pytest.raises(ConfigError) as refused:
        load_config(recipe, [override])
    assert str(refused.value).startswith(f"{key}:"), str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_huge_bad_value_is_shown_cut_short():
    """The error used to repeat the whole value: a pasted 100 kB string made a 100 kB line."""
    from distil.config import load_config

    with pytest.raises(ConfigError, match=r"^train\.lr: Input should be a valid number") as refused:
        load_config("kd-digits", ["train.lr=" + "x" * 100_000])
    assert len(str(refused.value)) < 200


# ----------------------------------------------------------------------------- models

CLASSIFIERS = {name: raw for name, raw in RECIPES.items() if raw.get("task", "classification") == "classification"}  # fmt: skip
# Sizes in the band that really allocates are replaced by 10¹⁵, whose allocation fails at once.
SIZES = st.one_of(
    HOSTILE.map(lambda value: 10**15 if _allocates_much(value) else value),
    st.integers(min_value=1, max_value=64),
    st.lists(st.integers(min_value=1, max_value=32), min_size=1, max_size=3),
    st.floats(min_value=0.0, max_value=0.99),
    st.sampled_from(["relu", "gelu", "tanh", "swish", 0, -1, 10**15, [0], [-4], [10**15]]),
)


@st.composite
def model_option_cases(draw) -> tuple[dict, str]:
    raw = copy.deepcopy(CLASSIFIERS[draw(st.sampled_from(sorted(CLASSIFIERS)))])
    section = draw(st.sampled_from(["student", "teacher"] if "teacher" in raw else ["student"]))
    spec = raw[section]
    option = draw(st.sampled_from([*model_options(spec["model"]), "hiden"]))
    spec["options"] = {**spec.get("options", {}), option: draw(SIZES)}
    return raw, section


@fuzz("models")
@given(case=model_option_cases())
def test_model_options_fuzzed_build_or_are_refused_by_the_model_door(case):
    """A string for ``hidden``, a list for ``dropout``, a size of 10¹⁵: the model is built
    and runs a batch, or ``build_model`` refuses it naming the option — never a TypeError
    or an allocation failure from inside torch."""
    raw, section = case
    try:
        config = parse_config(raw)
    except ConfigError as error:
        event("refused by the recipe")
        refused_in_one_line(error, section)
        return
    spec = config.student if section == "student" else config.teacher
    shape = INPUT_SHAPES[config.data.dataset]
    try:
        model = build_network(spec.model_copy(update={"weights": None}), SimpleNamespace(input_shape=shape, num_classes=10))  # fmt: skip
    except DistilError as error:
        event("refused by build_model")
        assert "\n" not in str(error) and spec.model in str(error)
        return
    event("built and ran")
    import torch

    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_a_model_option_of_the_wrong_type_is_named_with_the_type_it_expects():
    """Every option of every model given a mapping: refused by the model door naming the
    option and its type (``hidden`` as a string used to reach ``nn.Linear`` and fail there
    as "'<' not supported between instances of 'str' and 'int'")."""
    from distil.models import MODELS, build_model

    checked = 0
    for name in MODELS.names():
        options = model_options(name)
        if any(p.default is p.empty for p in options.values()):
            continue  # needs a local folder (hf_sequence_classifier)
        for option in options:
            with pytest.raises(ConfigError) as refused:
                build_model(name, input_shape=(1, 8, 8), num_classes=3, **{option: {"a": 1}})
            message = str(refused.value)
            assert message.startswith(f"model {name!r}: option {option!r} is {{'a': 1}}"), message
            assert "; expected " in message
            checked += 1
    assert checked >= 20  # 26 options over the built-in models today


# ----------------------------------------------------------------------------- the CLI

CLI_KEYS = [
    "train.lr", "train.batch_size", "train.epochs", "method.temperature", "method.alpha",
    "method.name", "task", "student.model", "student.options.hidden", "data.dataset",
    "data.val_fraction", "teacher", "eval.ece_bins",
]  # fmt: skip


def override_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


@fuzz("cli")
@given(key=st.sampled_from(CLI_KEYS), value=HOSTILE)
def test_distil_train_refuses_a_bad_override_with_one_error_line_and_exit_2(
    key, value, tmp_path_factory, monkeypatch
):
    """Only overrides the library refuses go to the CLI (a valid one would train)."""
    from typer.testing import CliRunner

    from distil.cli import app
    from distil.config import load_config

    override = f"{key}={override_text(value)}"
    try:
        load_config("kd-digits", [override])
    except ConfigError:
        event("refused: run through the CLI")
    else:
        event("valid: not trained")
        return  # a valid recipe: the library accepted it; nothing to refuse
    folder = tmp_path_factory.mktemp("cli")
    monkeypatch.chdir(folder)
    result = CliRunner().invoke(app, ["train", "kd-digits", override, f"output.dir={folder}/run"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    top = key.split(".")[0]
    assert top.rstrip("s") in lines[0] or top == "task", (override, lines[0])
    assert not (folder / "run").exists()  # refused before the run folder was made


def test_a_recipe_file_that_is_not_utf8_or_not_yaml_is_named_with_its_line(tmp_path):
    """A latin-1 recipe used to raise UnicodeDecodeError; a YAML error was several lines."""
    from distil.config import load_config

    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.yaml: not UTF-8 text"):
        load_config(latin)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nmethod: {name: kd\ntrain:\n  lr: 1\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: not valid YAML \(") as refused:
        load_config(broken)
    assert "\n" not in str(refused.value)
