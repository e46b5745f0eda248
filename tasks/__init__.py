"""Task kinds: one module per kind, each exporting `KIND` (a `tasks.declare.Kind`).

The registry finds them by scanning this package, so adding a kind is adding a module.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from tasks.declare import Kind

_MACHINERY = {"audio", "declare", "docs", "geometry", "imaging", "media", "pictures"}


@cache
def registry() -> dict[str, Kind]:
    """Every kind by its name (`video.thumb` lives in `tasks/video_thumb.py`)."""
    kinds: dict[str, Kind] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _MACHINERY:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        kind = getattr(module, "KIND", None)
        if isinstance(kind, Kind):
            kinds[kind.name] = kind
    return dict(sorted(kinds.items()))


def get(name: str) -> Kind | None:
    """The kind called `name`, or None."""
    return registry().get(name)
