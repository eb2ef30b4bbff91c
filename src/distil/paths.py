"""Where distil keeps things between runs (pretrained teachers, generated assets)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$DISTIL_CACHE_DIR``, else ``$XDG_CACHE_HOME/distil``, else ``~/.cache/distil``."""
    if os.environ.get("DISTIL_CACHE_DIR"):
        return Path(os.environ["DISTIL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "distil"
