"""The declaration machinery of task kinds.

A kind is declared once (its parameters, output values and output files, and a run
function); validation in the reference's error form, defaults, `GET /v2/kinds` and the
README tables are all derived from that one declaration.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Parameter types, as the reference names them in its tables.
STRING = "string"
INTEGER = "integer"
FLOAT = "float"
BOOLEAN = "boolean"
URL = "url"  # an http(s) URL the server downloads before the task runs
URLS = "list of urls"  # several such URLs
COLOR = "color"  # "#RRGGBB"
STRINGS = "list of strings"

REQUIRED = "this field is required"
UNKNOWN = "unknown parameter"
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
MAX_URLS = 100


class TaskError(Exception):
    """A failure a person can act on (bad media, impossible parameters); its message is the task's
    `error`. Anything else raised by a run function is reported as an internal error."""


@dataclass(frozen=True)
class Param:
    """One task parameter: its type, whether it is required, its default, choices and bounds."""

    name: str
    type: str
    help: str = ""
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    secret: bool = False  # removed from `details=true` statuses

    def check(self, value: Any) -> tuple[Any, str | None]:
        """Returns the value as the kind receives it, or an error message."""
        checker = _CHECKERS[self.type]
        value, problem = checker(value)
        if problem:
            return None, problem
        if self.choices is not None and value not in self.choices:
            return None, "must be one of: " + ", ".join(repr(c) for c in self.choices)
        if self.min is not None and value < self.min:
            return None, f"must be at least {_num(self.min)}"
        if self.max is not None and value > self.max:
            return None, f"must be at most {_num(self.max)}"
        return value, None

    def describe(self) -> dict[str, Any]:
        """The JSON form listed by `GET /v2/kinds`."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if self.default is not None:
            out["default"] = self.default
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        out["help"] = self.help
        return out


@dataclass(frozen=True)
class Output:
    """One output value (or output file) of a kind."""

    name: str
    type: str
    help: str = ""

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "help": self.help}


@dataclass
class Job:
    """What a run function gets: checked parameters with defaults, local input files, a work
    folder for its outputs, and a progress callback `progress(percent, partial=None)`."""

    params: dict[str, Any]
    inputs: dict[str, Any]
    workdir: Path
    progress: Callable[..., None] = field(default=lambda pct, partial=None: None)


@dataclass(frozen=True)
class Kind:
    """A task kind: `run(job)` returns the result; for each declared output file, the result
    holds the path of a file written in `job.workdir`, which the server stores and replaces by
    its URL."""

    name: str
    help: str
    params: tuple[Param, ...]
    outputs: tuple[Output, ...]
    run: Callable[[Job], Any]
    output_files: tuple[Output, ...] = ()
    time_limit: float = 600.0

    # Derived once per kind (the dataclass is frozen): every create and every run reads them.
    @cached_property
    def all_params(self) -> tuple[Param, ...]:
        return (*self.params, *COMMON_PARAMS)

    @cached_property
    def _params_by_name(self) -> dict[str, Param]:
        return {p.name: p for p in self.all_params}

    @cached_property
    def uses_files(self) -> bool:
        """Whether the kind reads downloaded inputs or writes output files."""
        return bool(self.url_params or self.output_files)

    @cached_property
    def url_params(self) -> tuple[Param, ...]:
        """Parameters whose URLs the server downloads before the run."""
        return tuple(p for p in self.params if p.type in (URL, URLS))

    def validate(self, definition: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
        """Checks a task definition's parameters (the keys other than the reserved ones) and
        returns (parameters with defaults, errors by parameter name)."""
        declared = self._params_by_name
        params: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        for name in definition:
            if name not in declared and name not in RESERVED_KEYS:
                errors[name] = [UNKNOWN]
        for p in self.all_params:
            if p.name not in definition or definition[p.name] is None:
                if p.required:
                    errors[p.name] = [REQUIRED]
                elif p.default is not None:
                    params[p.name] = p.default
                continue
            value, problem = p.check(definition[p.name])
            if problem:
                errors[p.name] = [problem]
            else:
                params[p.name] = value
        return params, errors

    def public_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters with the secret ones removed, for `details=true`."""
        hidden = {p.name for p in self.all_params if p.secret}
        return {k: v for k, v in params.items() if k not in hidden}

    def describe(self) -> dict[str, Any]:
        """The JSON form listed by `GET /v2/kinds`."""
        return {
            "name": self.name,
            "help": self.help,
            "parameters": [p.describe() for p in self.all_params],
            "outputs": [o.describe() for o in self.outputs],
            "output_files": [o.describe() for o in self.output_files],
            "time_limit": self.time_limit,
        }


# Keys of a task definition that are not parameters of the kind.
RESERVED_KEYS = frozenset({"task_name", "task_store", "task_metas"})

COMMON_PARAMS = (
    Param("url_callback", URL, "URL to POST the final status to when the task succeeds."),
    Param("url_errback", URL, "URL to POST the final status to when the task fails."),
)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _check_string(v: Any) -> tuple[Any, str | None]:
    return (v, None) if isinstance(v, str) else (None, "must be a string")


def _check_integer(v: Any) -> tuple[Any, str | None]:
    if isinstance(v, bool):
        return None, "must be an integer"
    if isinstance(v, int):
        return v, None
    if isinstance(v, float) and v.is_integer():
        return int(v), None
    return None, "must be an integer"


def _check_float(v: Any) -> tuple[Any, str | None]:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None, "must be a number"
    if v != v or v in (float("inf"), float("-inf")):
        return None, "must be a finite number"
    return float(v), None


def _check_boolean(v: Any) -> tuple[Any, str | None]:
    return (v, None) if isinstance(v, bool) else (None, "must be true or false")


def check_url(v: Any) -> tuple[Any, str | None]:
    """An absolute http or https URL with a host."""
    if not isinstance(v, str):
        return None, "must be a string"
    try:
        parts = urlsplit(v)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return None, "must be a valid http or https URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None, "must be an http or https URL"
    return v, None


def _check_urls(v: Any) -> tuple[Any, str | None]:
    if not isinstance(v, list) or not v:
        return None, "must be a non-empty list of URLs"
    if len(v) > MAX_URLS:
        return None, f"must hold at most {MAX_URLS} URLs"
    for i, item in enumerate(v):
        _, problem = check_url(item)
        if problem:
            return None, f"item {i} {problem}"
    return v, None


def _check_strings(v: Any) -> tuple[Any, str | None]:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        return None, "must be a list of strings"
    return v, None


def _check_color(v: Any) -> tuple[Any, str | None]:
    if isinstance(v, str) and _COLOR.match(v):
        return v, None
    return None, "must be a colour of the form #RRGGBB"


_CHECKERS = {
    STRING: _check_string,
    INTEGER: _check_integer,
    FLOAT: _check_float,
    BOOLEAN: _check_boolean,
    URL: check_url,
    URLS: _check_urls,
    STRINGS: _check_strings,
    COLOR: _check_color,
}
