"""The Tasks API v2 handlers: create, create_stream, status, status_stream, and the kinds list.

Handlers parse, authenticate and raise; errors are rendered by `server.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from aiohttp import web

from server import components
from server.auth import authenticate
from server.errors import BadRequest, ServiceUnavailable
from server.outputs import validate_task_store
from server.runner import deliveries_for
from server.sealing import Sealer
from server.statuses import Status, Task, new_key, now_iso
from tasks import get as get_kind
from tasks import registry

NDJSON = "application/x-ndjson"
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")


async def read_json(request: web.Request) -> Any:
    """The JSON body, whatever its Content-Type says (browsers send text/plain)."""
    try:
        raw = await request.read()
    except web.RequestPayloadError as e:  # a body that does not match its Content-Encoding
        raise BadRequest("body", "body", f"the body could not be read: {e}") from None
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest("body", "body", f"the body is not valid JSON: {e}") from None


def parse_bool(value: Any, name: str, where: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise BadRequest(name, where, f"{name} must be a boolean")


async def _body_object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("body", "body", "the body must be a JSON object")
    return body


# -- create ------------------------------------------------------------------------------------

# task_metas is stored and sent back as it came; orjson reads 1024 levels but writes only 254,
# so a deeper value would be accepted, then break every status that carries it.
MAX_METAS_DEPTH = 32


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether objects and arrays in `value` nest more than `limit` levels (iteratively, so a
    deep value cannot exhaust the stack)."""
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        todo += [(c, depth + 1) for c in children if isinstance(c, dict | list)]
    return False


def _build_task(account_id: int, definition: Any, index: int, sealer: Sealer) -> Task:
    """A new task from its definition; parameter errors make it a task already in error."""
    where = f"tasks.{index}"
    if not isinstance(definition, dict):
        raise BadRequest(where, "body", f"{where} must be an object with a task_name")
    name = definition.get("task_name")
    if name is None:
        raise BadRequest(f"{where}.task_name", "body", "task_name is missing")
    kind = get_kind(name) if isinstance(name, str) else None
    if kind is None:
        raise BadRequest(f"{where}.task_name", "body", f"unknown task_name {str(name)[:64]!r}")
    params, errors = kind.validate(definition)
    task_store, store_errors = validate_task_store(definition.get("task_store"), sealer)
    errors.update(store_errors)
    metas = definition.get("task_metas")
    if metas is not None and not isinstance(metas, dict):
        errors["task_metas"] = ["must be an object"]
        metas = None
    elif metas is not None and _nested_deeper(metas, MAX_METAS_DEPTH):
        errors["task_metas"] = [f"must not nest deeper than {MAX_METAS_DEPTH} levels"]
        metas = None
    now = now_iso()
    task = Task(
        key=new_key(),
        account_id=account_id,
        task_name=kind.name,
        params=params,
        task_store=task_store,
        task_metas=metas,
        status=Status.QUEUED,
        queued_at=now,
    )
    if errors:
        task.status, task.completed_at = Status.ERROR, now
        task.error = {"parameters": errors}
    return task


async def _create(request: web.Request, stream: bool = False) -> tuple[int, list[Task], bool]:
    """Creates the tasks of a create or create_stream request. For a stream, the account's
    stream slot is taken before any task is created, so a refused stream creates nothing."""
    app = request.app
    config = app[components.CONFIG]
    body = await _body_object(request)
    account = await authenticate(request, app[components.STORE], body)
    definitions = body.get("tasks")
    if definitions is None:
        raise BadRequest("tasks", "body", "tasks is missing")
    if isinstance(definitions, dict):
        definitions = [definitions]
    if not isinstance(definitions, list):
        raise BadRequest("tasks", "body", "tasks must be a list of task definitions")
    if not definitions:
        raise BadRequest("tasks", "body", "tasks is empty")
    if len(definitions) > config.max_batch:
        raise BadRequest(
            "tasks", "body", f"too many tasks: at most {config.max_batch} in one request"
        )
    block = parse_bool(body.get("block"), "block", "body")
    runner = app[components.RUNNER]
    if runner.queued + len(definitions) > config.max_queued:
        raise ServiceUnavailable("tasks", "body", "the queue is full, retry later", Retry_After="5")
    sealer = app[components.SEALER]
    tasks = [_build_task(account.id, d, i, sealer) for i, d in enumerate(definitions)]
    app[components.RATES].take(account.id, len(tasks))
    errored = [t for t in tasks if t.status is Status.ERROR]
    deliveries = [d for t in errored for d in deliveries_for(t)]
    slots = app[components.STREAM_SLOTS]
    if stream:
        slots.acquire(account.id)
    try:
        await app[components.STORE].insert_batch(tasks, deliveries)
    except BaseException:
        if stream:
            slots.release(account.id)
        raise
    runner.enqueue([t for t in tasks if t.status is Status.QUEUED])
    if deliveries:
        app[components.DELIVERER].wake()
    return account.id, tasks, block


async def create(request: web.Request) -> web.Response:
    """POST /v2/create"""
    account_id, tasks, block = await _create(request)
    statuses = [t.to_status() for t in tasks]
    if block:
        view = request.app[components.VIEW]
        keys = [t.key for t in tasks]
        await view.wait_ended(account_id, keys, "body")
        statuses = await view.lookup(account_id, keys, "body")
    return web.Response(body=orjson.dumps(statuses), content_type="application/json")


async def create_stream(request: web.Request) -> web.StreamResponse:
    """POST /v2/create_stream"""
    account_id, tasks, _ = await _create(request, stream=True)
    return await _stream(request, account_id, [t.key for t in tasks], "body", slot_taken=True)


# -- status ------------------------------------------------------------------------------------


async def _status_request(request: web.Request) -> tuple[int, list[str], dict[str, Any], str]:
    """(account, keys, options, where the keys came from) of a status or status_stream call."""
    store = request.app[components.STORE]
    if request.method == "GET":
        account = await authenticate(request, store)
        keys: Any = request.query.getall("tasks", [])
        options: dict[str, Any] = dict(request.query)
        where = "querystring"
    else:
        options = await _body_object(request)
        account = await authenticate(request, store, options)
        keys = options.get("tasks", [])
        where = "body"
    if isinstance(keys, str):
        keys = [keys]
    if not keys:
        raise BadRequest("tasks", where, "tasks is missing")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise BadRequest("tasks", where, "tasks must be a list of task keys")
    limit = request.app[components.CONFIG].max_batch
    if len(keys) > limit:
        raise BadRequest("tasks", where, f"too many task keys: at most {limit} in one request")
    return account.id, keys, options, where


async def status(request: web.Request) -> web.Response:
    """GET and POST /v2/status"""
    account_id, keys, options, where = await _status_request(request)
    block = parse_bool(options.get("block"), "block", where)
    details = parse_bool(options.get("details"), "details", where)
    view = request.app[components.VIEW]
    if block:
        await view.wait_ended(account_id, keys, where)
    statuses = await view.lookup(account_id, keys, where)
    if details:
        statuses = await view.with_details(account_id, statuses)
    return web.Response(body=orjson.dumps(statuses), content_type="application/json")


async def status_stream(request: web.Request) -> web.StreamResponse:
    """GET and POST /v2/status_stream (and GET /v2/stream)"""
    account_id, keys, _, where = await _status_request(request)
    return await _stream(request, account_id, keys, where)


async def _stream(
    request: web.Request, account_id: int, keys: list[str], where: str, slot_taken: bool = False
) -> web.StreamResponse:
    """Newline-delimited statuses: the list in request order, then one status per change, each
    line written as soon as it exists; closes once every task has ended."""
    app = request.app
    slots = app[components.STREAM_SLOTS]
    if not slot_taken:
        slots.acquire(account_id)
    view = app[components.VIEW]
    response = web.StreamResponse(
        headers={
            "Content-Type": NDJSON,
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    streams = app[components.STREAMS]
    handler = asyncio.current_task()
    assert handler is not None
    streams.add(handler)
    try:
        async with contextlib.aclosing(
            view.watch(account_id, keys, where, idle=app[components.CONFIG].stream_keepalive)
        ) as changes:
            first = True
            async for batch in changes:
                if first:
                    await response.prepare(request)
                    await response.write(orjson.dumps(batch) + b"\n")
                    first = False
                elif batch is None:
                    await response.write(b"\n")  # keep-alive for proxies
                else:
                    await response.write(b"".join(orjson.dumps(s) + b"\n" for s in batch))
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass  # the client left; its tasks go on
    finally:
        streams.discard(handler)
        slots.release(account_id)
    return response


# -- kinds and health --------------------------------------------------------------------------


async def kinds(request: web.Request) -> web.Response:
    """GET /v2/kinds: every task kind with its parameters and output values."""
    body = [kind.describe() for kind in registry().values()]
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 once the store, the pool and the scheduler are up."""
    app = request.app
    body = {
        "status": "ok",
        "workers": app[components.POOL].size,
        "queued": app[components.RUNNER].queued,
        "streams": len(app[components.STREAMS]),
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")
