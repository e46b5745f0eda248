"""`create_app(config)`: the aiohttp application, composed of long-lived parts each set up and
torn down by one cleanup context, in order: store, worker pool, storage (backends, credential
sealing, expiration sweep), then the HTTP client, bus, status view, callbacks and scheduler that
use them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from server import api, api_storage, components
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
from server.sealing import Sealer
from server.statusview import StatusView
from server.storage import ManagedStorage, open_backends
from server.store import SqliteStore


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


async def _storage(app: web.Application) -> AsyncIterator[None]:
    config = app[components.CONFIG]
    backends, current = open_backends(config)
    managed = ManagedStorage(app[components.STORE], backends, current)
    app[components.STORAGE] = managed
    app[components.LOCAL_FILES] = managed.local
    app[components.SEALER] = await asyncio.to_thread(Sealer.from_file, config.key_path)
    sweeper = asyncio.create_task(
        managed.sweep_forever(config.storage_sweep_interval), name="storage-sweep"
    )
    yield
    sweeper.cancel()
    await asyncio.gather(sweeper, return_exceptions=True)
    await managed.close()


async def _services(app: web.Application) -> AsyncIterator[None]:
    config = app[components.CONFIG]
    store = app[components.STORE]
    session = client_session(config)
    bus = Bus()
    outputs = Outputs(config, app[components.STORAGE], session, app[components.SEALER])
    deliverer = Deliverer(config, store, session)
    runner = Runner(config, store, bus, app[components.POOL], session, outputs, deliverer.wake)
    app[components.BUS] = bus
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
    app.cleanup_ctx.extend([_store, _pool, _storage, _services])
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
    for path in ("/v2/storage/files", "/v2/storage/files/{path:.*}"):
        app.router.add_get(path, api_storage.list_files)
        app.router.add_delete(path, api_storage.delete_files)
    app.router.add_get("/v2/storage/expiration", api_storage.get_expiration)
    app.router.add_post("/v2/storage/expiration", api_storage.set_expiration)
    app.router.add_route("OPTIONS", "/{tail:.*}", _options)
    return app
