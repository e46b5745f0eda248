"""Stopping the server's waiting loops at the moment they are woken up.

On Python 3.11, `asyncio.wait_for` returns normally when the awaited event is set in the same
step as the cancel arrives, and the cancel is lost: the callbacks loop then slept another hour
and held the server's shutdown (seen as a test teardown hanging under load). Each test wakes a
loop and cancels it right after, and requires it to end.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
import pytest

from server.bus import Bus
from server.callbacks import Deliverer
from server.config import Config
from server.statuses import Status, Task, new_key, now_iso
from server.statusview import StatusView
from server.storage import ManagedStorage
from server.store import SqliteStore
from storage_backends.local import Storage as LocalStorage


@pytest.fixture
async def store(tmp_path: Path):
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    yield store
    await store.close()


async def ends_when_cancelled(task: asyncio.Task) -> None:
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done, "the cancel was lost: the task still runs"
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_the_callbacks_loop_stops_right_after_a_wake_up(store: SqliteStore) -> None:
    async with aiohttp.ClientSession() as session:
        deliverer = Deliverer(Config(), store, session)
        await deliverer.start()
        await asyncio.sleep(0.05)  # idle, waiting for news
        deliverer.wake()
        await asyncio.sleep(0)
        assert deliverer._loop_task is not None
        await ends_when_cancelled(deliverer._loop_task)


async def test_the_storage_sweep_stops_right_after_a_wake_up(
    store: SqliteStore, tmp_path: Path
) -> None:
    local = LocalStorage(tmp_path / "files", "http://127.0.0.1:1")
    managed = ManagedStorage(store, {"local": local}, "local")
    sweeper = asyncio.create_task(managed.sweep_forever(3600))
    await asyncio.wait_for(managed.swept.wait(), 5)  # the first sweep is done; it waits
    await asyncio.sleep(0.05)
    managed.wake_sweep()
    await asyncio.sleep(0)
    await ends_when_cancelled(sweeper)


async def test_a_stream_closed_as_a_change_arrives_stops(store: SqliteStore) -> None:
    account = await store.create_account("secret")
    task = Task(
        key=new_key(),
        account_id=account.id,
        task_name="hello",
        params={"name": "x"},
        task_store={"type": "persistent"},
        task_metas=None,
        status=Status.QUEUED,
        queued_at=now_iso(),
    )
    await store.insert_batch([task], [])
    bus = Bus()
    bus.publish(task)
    view = StatusView(store, bus)
    first = asyncio.Event()

    async def follow() -> None:
        async for _ in view.watch(account.id, [task.key], "querystring", idle=3600):
            first.set()

    stream = asyncio.create_task(follow())
    await asyncio.wait_for(first.wait(), 5)  # the snapshot is out; the stream waits
    task.status, task.started_at = Status.EXECUTING, now_iso()
    bus.publish(task)
    await asyncio.sleep(0)
    await ends_when_cancelled(stream)
