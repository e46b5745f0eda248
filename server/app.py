"""`create_app(config)`: the aiohttp application, composed of long-lived parts each set up and
torn down by one cleanup context, in order: store, worker pool, HTTP client, then the bus,
status view, callbacks and scheduler that use them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from server import api, components
from server.auth import add_cors_headers, preflight
from server.bus import Bus
from server.callbacks import Deliverer
from server.config import Config
from server.errors import error_middleware
from server.fetch import client_session
from server.files import serve_file
from server.limits import RateLimiter, StreamLimiter
from server.outputs import Outputs
from server.pool import WorkerPool
from server.runner import Runner
from server.statusview import StatusView
from server.store import SqliteStore
from storage_backends.local import Storage as LocalStorage


async def _store(app: web.Application) -> AsyncIterator[None]:
    store = SqliteStore(app[components.CONFIG].db_path)
    await store.open()
    app[components.STORE] = store
    yield
    await store.close()


async def _pool(app: web.Application) -> AsyncIterator[None]:
    pool = WorkerPool(app[components.CONFIG].workers)
    await pool.start()
    app[components.POOL] = pool
    yield
    await pool.close()


async def _services(app: web.Application) -> AsyncIterator[None]:
    config = app[components.CONFIG]
    store = app[components.STORE]
    session = client_session(config)
    bus = Bus()
    local = LocalStorage(config.files_dir, config.base_url)
    deliverer = Deliverer(config, store, session)
    runner = Runner(
        config, store, bus, app[components.POOL], session, Outputs(local), deliverer.wake
    )
    app[components.BUS] = bus
    app[components.LOCAL_FILES] = local
    app[components.VIEW] = StatusView(store, bus)
    app[components.DELIVERER] = deliverer
    app[components.RUNNER] = runner
    await deliverer.start()
    await runner.start()
    yield
    await runner.stop()
    await deliverer.stop()
    await session.close()


async def _close_streams(app: web.Application) -> None:
    """Open streams would hold graceful shutdown for as long as their tasks run."""
    for handler in list(app[components.STREAMS]):
        handler.cancel()
    await asyncio.sleep(0)


async def _options(request: web.Request) -> web.Response:
    return await preflight(request, request.app[components.STORE])


def create_app(config: Config) -> web.Application:
    """The whole server for `config`."""
    app = web.Application(middlewares=[error_middleware], client_max_size=config.max_body_bytes)
    app[components.CONFIG] = config
    app[components.STREAMS] = set()
    app[components.RATES] = RateLimiter(config.rate_limit, config.rate_burst)
    app[components.STREAM_SLOTS] = StreamLimiter(config.max_streams)
    app.cleanup_ctx.extend([_store, _pool, _services])
    app.on_response_prepare.append(add_cors_headers)
    app.on_shutdown.append(_close_streams)
    app.router.add_post("/v2/create", api.create)
    app.router.add_post("/v2/create_stream", api.create_stream)
    for path in ("/v2/status", "/v2/status_stream"):
        handler = api.status if path == "/v2/status" else api.status_stream
        app.router.add_get(path, handler)
        app.router.add_post(path, handler)
    app.router.add_get("/v2/stream", api.status_stream)
    app.router.add_get("/v2/kinds", api.kinds)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/files/{path:.+}", serve_file)
    app.router.add_route("OPTIONS", "/{tail:.*}", _options)
    return app
