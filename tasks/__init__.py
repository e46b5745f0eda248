"""Task kinds: one module per kind, each exporting `KIND` (a `tasks.declare.Kind`); a module
outside this package may export several as `KINDS`.

The registry finds them by scanning this package, so adding a kind is adding a module. Kinds
kept outside this package are added by naming their modules, comma-separated, in the
`TASKSTREAM_EXTRA_KINDS` environment variable (read here because worker processes need it
too, before any configuration reaches them).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from functools import cache

from tasks.declare import Kind

_MACHINERY = {"audio", "declare", "docs", "geometry", "imaging", "media", "pictures"}


@cache
def registry() -> dict[str, Kind]:
    """Every kind by its name (`video.thumb` lives in `tasks/video_thumb.py`)."""
    names = [
        f"{__name__}.{info.name}"
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_") and info.name not in _MACHINERY
    ]
    names += [n.strip() for n in os.environ.get("TASKSTREAM_EXTRA_KINDS", "").split(",") if n]
    kinds: dict[str, Kind] = {}
    for name in names:
        module = importlib.import_module(name)
        for kind in getattr(module, "KINDS", [getattr(module, "KIND", None)]):
            if isinstance(kind, Kind):
                kinds[kind.name] = kind
    return dict(sorted(kinds.items()))


def get(name: str) -> Kind | None:
    """The kind called `name`, or None."""
    return registry().get(name)
