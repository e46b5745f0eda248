"""The typed application slots (`web.AppKey`) through which handlers reach the long-lived
parts of the server."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from server.bus import Bus
from server.callbacks import Deliverer
from server.config import Config
from server.limits import RateLimiter, StreamLimiter
from server.pool import WorkerPool
from server.runner import Runner
from server.sealing import Sealer
from server.statusview import StatusView
from server.storage import ManagedStorage
from server.store import SqliteStore
from storage_backends.local import Storage as LocalStorage

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", SqliteStore)
BUS = web.AppKey("bus", Bus)
POOL = web.AppKey("pool", WorkerPool)
RUNNER = web.AppKey("runner", Runner)
DELIVERER = web.AppKey("deliverer", Deliverer)
VIEW = web.AppKey("view", StatusView)
LOCAL_FILES = web.AppKey("local_files", LocalStorage)
RATES = web.AppKey("rates", RateLimiter)
STREAM_SLOTS = web.AppKey("stream_slots", StreamLimiter)
STORAGE = web.AppKey("storage", ManagedStorage)  # the persistent and volatile systems
SEALER = web.AppKey("sealer", Sealer)  # seals task credentials at rest
STREAMS = web.AppKey("streams", set[asyncio.Task[Any]])  # open stream handlers
