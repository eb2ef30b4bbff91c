"""The recipe: typed settings of a whole run, loaded from YAML with ``key=value`` overrides.

A recipe names its task, the teachers, the student, the data, the method and the training,
with flat values. Validation errors become one-line :class:`~distil.errors.ConfigError`
messages that name the key path and suggest the closest valid key. Each section's model lives
next to the code it configures (``data/config.py``, ``train/config.py``, each method's file,
each task's module); this module holds the envelope every task shares and the loading.
"""

from __future__ import annotations

import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, model_validator

from distil.errors import ConfigError
from distil.methods import METHODS, MethodConfig
from distil.registry import did_you_mean
from distil.train.config import TrainConfig

RECIPES_DIR = Path(__file__).parent / "recipes"


class OutputConfig(BaseModel):
    """Where results go."""

    model_config = ConfigDict(extra="forbid")

    dir: str = Field("runs/{name}", description="run folder; {name} and {seed} are filled in")
    report: bool = Field(True, description="write report.html")


class RunConfig(BaseModel):
    """The envelope every task's recipe shares: which task, the method, the training and the
    outputs. Each task's recipe model (``distil.tasks``) adds its own sections — data,
    student, teachers, eval — and ``task`` picks that model when a recipe is parsed.

    A recipe may name several teachers (``teachers:`` name → section); ``teacher:`` is the
    short form of one teacher named ``teacher`` and means the same.
    """

    model_config = ConfigDict(extra="forbid")

    task: str
    name: str = "run"
    method: SerializeAsAny[MethodConfig]
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="before")
    @classmethod
    def _one_teacher_is_short_for_teachers(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or "teacher" not in raw:
            return raw
        raw = dict(raw)
        teacher = raw.pop("teacher")
        if teacher is None:  # `teacher=null` removes the one-teacher form (`teachers={}`: all)
            raw.setdefault("teachers", {})
            return raw
        if raw.get("teachers"):
            raise ValueError(
                "teachers: give either teacher (one teacher) or teachers (name: section), not both"
            )
        raw["teachers"] = {DEFAULT_TEACHER: teacher}
        return raw

    @property
    def teacher(self) -> Any:
        """The recipe's first teacher section (None without teachers)."""
        teachers = getattr(self, "teachers", None) or {}
        return next(iter(teachers.values()), None)

    def run_dir(self) -> Path:
        """The output folder with ``{name}`` and ``{seed}`` filled in."""
        return Path(self.output.dir.format(name=self.name, seed=self.train.seed))

    def to_yaml(self) -> str:
        """The resolved recipe as YAML (what ``config.yaml`` in a run folder holds)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


#: The name a recipe's single ``teacher:`` section gets.
DEFAULT_TEACHER = "teacher"

#: Validation context of a recipe being read: validators that look names up in registries
#: (datasets, models) refuse unknown ones then; a config built in Python is checked later,
#: when it is used (a plug-in may be registered after the config is made).
RECIPE = {"recipe": True}


# ----------------------------------------------------------------------------- loading


def parse_config(raw: dict[str, Any]) -> RunConfig:
    """Validate a recipe dict: ``task`` picks the recipe model (classification by default)
    from the task registry, the method section is validated by the named method's model."""
    from distil.tasks import TASKS

    if not isinstance(raw, dict):
        raise ConfigError(f"a recipe must be a mapping of sections, got {type(raw).__name__}")
    task = raw.get("task", "classification")
    if not isinstance(task, str):
        raise ConfigError(f"task: expected a task name, got {_shown(task)}; one of {TASKS.names()}")
    if task not in TASKS:
        raise ConfigError(f"task: unknown task {task!r}{did_you_mean(str(task), TASKS.names())}")
    run_model = TASKS.get(task).Config
    raw = {**raw, "task": task}
    method_raw = raw.get("method")
    if not isinstance(method_raw, dict) or "name" not in method_raw:
        raise ConfigError(
            "method.name: missing; name a registered method, one of " + ", ".join(METHODS.names())
        )
    name = method_raw["name"]
    if not isinstance(name, str):
        raise ConfigError(
            f"method.name: expected a method name, got {_shown(name)}; one of "
            + ", ".join(METHODS.names())
        )
    if name not in METHODS:
        raise ConfigError(
            f"method.name: unknown method {name!r}{did_you_mean(str(name), METHODS.names())}"
        )
    method_cls = METHODS.get(name).Config
    try:
        method = method_cls.model_validate(method_raw, context=RECIPE)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, method_cls, prefix=("method",))) from None
    try:
        config = run_model.model_validate({**raw, "method": method}, context=RECIPE)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, run_model)) from None
    refuse_non_finite(config.model_dump())
    return config


def refuse_non_finite(values: Any, path: str = "") -> None:
    """ConfigError naming the first key whose number is inf or nan, anywhere in a recipe.

    Pydantic accepts ``inf`` for ``lr: float = Field(gt=0)`` (and YAML's ``.inf`` or an
    override's ``inf`` reach every model option untyped); no setting of a run means anything
    at infinity, and each would otherwise surface as a NaN loss at step 1 or a torch error.
    """
    if isinstance(values, float) and not math.isfinite(values):
        raise ConfigError(f"{path or 'recipe'}: {values} is not a finite number")
    if isinstance(values, dict):
        for key, value in values.items():
            refuse_non_finite(value, f"{path}.{key}" if path else str(key))
    elif isinstance(values, list | tuple):
        for index, value in enumerate(values):
            refuse_non_finite(value, f"{path}.{index}")


def _shown(value: Any) -> str:
    """A short description of a bad value for a one-line error."""
    return f"{type(value).__name__} {_short(value)}"


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (a pasted 10 MB string stays one line)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def load_config(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a recipe from a YAML path (or a shipped recipe's name) and apply overrides."""
    path = resolve_recipe(source)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    except yaml.MarkedYAMLError as error:
        line = f":{error.problem_mark.line + 1}" if error.problem_mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({error.problem})") from None
    except (yaml.YAMLError, RecursionError) as error:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    return parse_config(apply_overrides(raw, overrides))


def resolve_recipe(source: str | Path) -> Path:
    """A path to a YAML file, or the name of a recipe shipped in ``distil/recipes``."""
    path = Path(source)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{source}.yaml"
    if shipped.is_file():
        return shipped
    names = shipped_recipes()
    raise ConfigError(
        f"recipe {str(source)!r} is neither a file nor a shipped recipe{did_you_mean(str(source), names)}"
    )


def shipped_recipes() -> list[str]:
    """Names of the recipes that ship with distil."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides; values are parsed as YAML scalars/lists.

    ``train.lr=3e-4`` sets a number, ``student.options.hidden=[64,64]`` a list and
    ``teacher=null`` removes a section. Types are then checked by the recipe's models.
    """
    result = _deep_copy(raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r} must look like section.key=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node = result
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"override {override!r}: {'.'.join(parts[: depth + 1])} is a value, not a section"
                )
            node = child
        node[parts[-1]] = value
    return result


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


# ----------------------------------------------------------------------------- errors


def format_validation_error(
    error: ValidationError, model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> str:
    """One line per problem: the key path, what is wrong, and the closest valid key."""
    lines = []
    for item in error.errors():
        loc = tuple(str(part) for part in item["loc"])
        key = ".".join(prefix + loc)
        if item["type"] == "extra_forbidden":
            valid = _field_names_at(model, loc[:-1])
            lines.append(f"{key}: unknown key{did_you_mean(loc[-1], valid)}")
        elif item["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            given = item.get("input")
            shown = "" if isinstance(given, dict | BaseModel) else f" (got {_short(given)})"
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {message}{shown}" if key else f"{message}{shown}")
    return "; ".join(lines)


def _field_names_at(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    """Names of the fields of the sub-model at ``loc`` inside ``model`` (best effort)."""
    current: Any = model
    for part in loc:
        if typing.get_origin(current) is dict:  # a name -> section mapping: step over the name
            current = _model_in(typing.get_args(current)[1])
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The BaseModel class inside ``X`` or ``X | None``, else the annotation itself."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation
