"""The Storage API handlers: list and delete an account's persistent files, and set how long
they live.

Paths are relative to the account: a task's files are `TASKKEY/name`. An account sees and
deletes only its own files, since every query is by account. Handlers parse, authenticate and
raise; errors are rendered by `server.errors`.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from server import components
from server.api import parse_bool, read_json
from server.auth import authenticate
from server.errors import BadRequest, ServiceUnavailable
from server.storage import DAY
from storage_backends import StorageError

MAX_EXPIRATION_DAYS = 100 * 365


def _json(value: Any) -> web.Response:
    return web.Response(body=orjson.dumps(value), content_type="application/json")


async def _options(request: web.Request) -> tuple[dict[str, Any], str]:
    """The JSON body of a DELETE or POST, or else its query string (some clients send no body
    with DELETE), with where it came from."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("body", "body", "the body must be a JSON object")
    if body:
        return body, "body"
    options: dict[str, Any] = dict(request.query)
    if "urls" in request.query:
        options["urls"] = request.query.getall("urls")
    return options, "querystring"


def _date(value: Any, name: str, where: str) -> float | None:
    """An ISO 8601 date time as a Unix time; without a timezone, UTC."""
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(
            name, where, f"{name} must be an ISO 8601 date time such as 2013-10-28T20:22:21Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _number(value: Any, name: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise BadRequest(name, where, f"{name} must be a number of days, 0 or more")
    return float(value)


async def list_files(request: web.Request) -> web.Response:
    """GET /v2/storage/files/{path}: files and directories at `path`, and their usage."""
    app = request.app
    account = await authenticate(request, app[components.STORE])
    recursive = parse_bool(request.query.get("recursive"), "recursive", "querystring")
    listing = await app[components.STORAGE].listing(
        account.id, request.match_info.get("path", ""), recursive
    )
    return _json(listing.to_json())


async def delete_files(request: web.Request) -> web.Response:
    """DELETE /v2/storage/files/{path}: a file, a folder, or every file; or the files at
    `urls`; narrowed by `from`, `to` and `max_age`; only listed with `dry_run`."""
    app = request.app
    options, where = await _options(request)
    account = await authenticate(request, app[components.STORE], options)
    storage = app[components.STORAGE]
    dry_run = parse_bool(options.get("dry_run"), "dry_run", where)
    urls = options.get("urls")
    if urls is not None:
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise BadRequest("urls", where, "urls must be a list of absolute URLs")
        records = await storage.by_urls(account.id, urls)
    else:
        created_from = _date(options.get("from"), "from", where)
        created_to = _date(options.get("to"), "to", where)
        max_age = _number(options.get("max_age"), "max_age", where)
        if max_age is not None:
            cutoff = time.time() - max_age * DAY
            created_to = cutoff if created_to is None else min(created_to, cutoff)
        records = await storage.select(
            account.id, request.match_info.get("path", ""), created_from, created_to
        )
    if not dry_run:
        try:
            records = await storage.remove(records)
        except StorageError as e:
            raise ServiceUnavailable(
                "path", "path", f"the storage system failed, retry later: {e}", Retry_After="5"
            ) from None
    body = {
        "deleted": [r.name for r in records],
        "freed": sum(r.size for r in records),
        "usage": await storage.usage(account.id),
    }
    return _json(body)


async def set_expiration(request: web.Request) -> web.Response:
    """POST /v2/storage/expiration: `days` after which persistent files are deleted (0:
    never). It applies to the files already stored too; the sweep runs at once."""
    app = request.app
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("body", "body", "the body must be a JSON object")
    account = await authenticate(request, app[components.STORE], body)
    days = body.get("days")
    if days is None:
        raise BadRequest("days", "body", "days is missing")
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= MAX_EXPIRATION_DAYS:
        raise BadRequest(
            "days", "body", f"days must be a whole number from 0 (never) to {MAX_EXPIRATION_DAYS}"
        )
    await app[components.STORE].set_expiration(account.id, days)
    app[components.STORAGE].wake_sweep()
    return _json(days)


async def get_expiration(request: web.Request) -> web.Response:
    """GET /v2/storage/expiration: the lifetime of persistent files in days (0: never)."""
    app = request.app
    account = await authenticate(request, app[components.STORE])
    return _json(await app[components.STORE].expiration(account.id))
