"""The model registry and ``build_model``, the one door through which models are built.

Each model file registers factories here with ``@MODELS.register(name)``. A factory is a plain
function ``factory(*, input_shape, num_classes, **options) -> nn.Module``; its keyword
parameters *are* its options, so ``build_model`` can check a recipe's options against the
signature and name the culprit before any layer is made. Also here: the small checks that
factories share (input rank, dropout). The architectures live in the sibling files.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable

from pydantic import TypeAdapter, ValidationError
from torch import nn

from distil.errors import ConfigError, DistilError, ShapeError
from distil.registry import Registry, did_you_mean

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")

# Every factory receives these two; they are not "options" a recipe may set freely.
_BUILD_ARGUMENTS = ("input_shape", "num_classes")


def model_options(name: str) -> dict[str, inspect.Parameter]:
    """The options a registered model accepts, by name, read from its factory's signature."""
    signature = inspect.signature(MODELS.get(name))
    return {
        option: parameter
        for option, parameter in signature.parameters.items()
        if option not in _BUILD_ARGUMENTS
        and parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    }


def _describe_options(options: dict[str, inspect.Parameter]) -> str:
    if not options:
        return "(none)"
    described = []
    for option, parameter in options.items():
        if parameter.default is inspect.Parameter.empty:
            described.append(f"{option} (required)")
        else:
            described.append(f"{option}={parameter.default!r}")
    return ", ".join(described)


def build_model(
    name: str, *, input_shape: tuple[int, ...], num_classes: int, **options: object
) -> nn.Module:
    """Build the registered model ``name`` for inputs ``(batch, *input_shape)``.

    The result maps a batch to logits of shape ``(batch, num_classes)``. Raises
    ``UnknownNameError`` for an unknown model, ``ConfigError`` for an unknown or missing
    option or a bad ``num_classes``, and ``ShapeError`` when the model cannot take
    ``input_shape`` (each naming the model, the culprit and what was expected).
    """
    factory = MODELS.get(name)
    valid_options = model_options(name)

    unknown = [option for option in options if option not in valid_options]
    if unknown:
        option = unknown[0]
        hint = did_you_mean(option, list(valid_options)) if valid_options else ""
        raise ConfigError(
            f"model {name!r} has no option {option!r}{hint}; "
            f"valid options: {_describe_options(valid_options)}"
        )
    missing = [
        option
        for option, parameter in valid_options.items()
        if parameter.default is inspect.Parameter.empty and option not in options
    ]
    if missing:
        raise ConfigError(
            f"model {name!r} needs option {missing[0]!r}; "
            f"valid options: {_describe_options(valid_options)}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(
            f"model {name!r}: num_classes must be a positive integer, got {num_classes!r}"
        )

    input_shape = tuple(input_shape)
    if not all(isinstance(size, int) and size > 0 for size in input_shape):
        raise ShapeError(
            f"model {name!r} was given input shape {input_shape}; "
            "every size must be a positive integer"
        )
    options = _typed_options(name, factory, options)
    try:
        return factory(input_shape=input_shape, num_classes=num_classes, **options)
    except DistilError:
        raise
    # Sizes the types allow but torch cannot make: a kernel of 10⁶ pixels (no memory), 10²⁰
    # channels (an integer overflow inside torch, a TypeError), a negative width.
    except (TypeError, ValueError, RuntimeError, MemoryError, OverflowError) as error:
        first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise ConfigError(
            f"model {name!r} cannot be built with options {options}: {first}"
        ) from None


def _typed_options(name: str, factory: ModelFactory, options: dict[str, object]) -> dict:
    """Options checked (and coerced, ``"3"`` → 3) against the factory's type hints, so a
    string for ``hidden`` or a list for ``dropout`` is refused here, naming the option, and
    never reaches a layer constructor as a TypeError from inside torch."""
    hints = typing.get_type_hints(factory)
    checked = dict(options)
    for option, value in options.items():
        if option not in hints:
            continue
        try:
            checked[option] = TypeAdapter(hints[option]).validate_python(value)
        except ValidationError as error:
            problem = error.errors()[0]["msg"]
            raise ConfigError(
                f"model {name!r}: option {option!r} is {value!r} ({problem}); expected "
                f"{_type_name(hints[option])}"
            ) from None
        if isinstance(checked[option], float) and not math.isfinite(checked[option]):
            raise ConfigError(f"model {name!r}: option {option!r} is {value!r}, not finite")
    return checked


def _type_name(hint: object) -> str:
    if typing.get_args(hint):  # Sequence[int], int | None: the whole expression
        return str(hint).replace("typing.", "").replace("collections.abc.", "")
    return getattr(hint, "__name__", str(hint))


def require_input_rank(name: str, input_shape: tuple[int, ...], expected: dict[int, str]) -> None:
    """Raise ``ShapeError`` unless ``input_shape`` has one of the ranks in ``expected``.

    ``expected`` maps each accepted rank to a human description, e.g.
    ``{3: "(channels, height, width)"}``; the error names the model, the shape it was
    given and those descriptions. Factories call this first, so a wrong shape fails at
    build time instead of as a cryptic conv error in the first forward pass.
    """
    if len(input_shape) not in expected:
        accepted = " or ".join(expected.values())
        raise ShapeError(
            f"model {name!r} cannot take input shape {tuple(input_shape)}: "
            f"it expects {accepted} per example"
        )


def check_dropout(name: str, dropout: float) -> None:
    """Raise ``ConfigError`` unless ``dropout`` is a probability in [0, 1)."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model {name!r}: dropout must be in [0, 1), got {dropout!r}")
