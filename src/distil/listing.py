"""What ``distil list`` prints: registered parts and shipped recipes, one line each."""

from __future__ import annotations

import yaml

from distil.errors import UnknownNameError
from distil.registry import did_you_mean

KINDS = ("methods", "losses", "recipes", "models", "datasets", "tasks")


def _first_line(obj: object) -> str:
    return ((obj.__doc__ or "").strip().splitlines() or [""])[0]


def listing(kind: str) -> list[tuple[str, str]]:
    """(name, one-line description) pairs for one kind of thing."""
    if kind == "methods":
        from distil.methods import METHODS

        return [(name, _first_line(cls)) for name, cls in METHODS.items()]
    if kind == "losses":
        from distil.losses import LOSSES, kind_of

        return [(name, f"[{kind_of(name)}] {_first_line(fn)}") for name, fn in LOSSES.items()]
    if kind == "models":
        from distil.models import MODELS

        return [(name, _first_line(fn)) for name, fn in MODELS.items()]
    if kind == "datasets":
        from distil.data import DATASETS

        return [(name, _first_line(fn)) for name, fn in DATASETS.items()]
    if kind == "tasks":
        from distil.tasks import TASKS

        return [(name, _first_line(cls)) for name, cls in TASKS.items()]
    if kind == "recipes":
        from distil.config import RECIPES_DIR, shipped_recipes

        return [(name, _recipe_summary(RECIPES_DIR / f"{name}.yaml")) for name in shipped_recipes()]
    raise UnknownNameError(f"nothing to list called {kind!r}{did_you_mean(kind, list(KINDS))}")


def _recipe_summary(path) -> str:
    """The recipe's leading comment, else its method and data."""
    text = path.read_text()
    comment = next(
        (line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), ""
    )
    if comment:
        return comment
    raw = yaml.safe_load(text) or {}
    return f"{raw.get('method', {}).get('name', '?')} on {raw.get('data', {}).get('dataset', '?')}"
