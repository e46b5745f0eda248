"""Reading statuses for the API: a lookup, the details view, and a watch that yields a
snapshot and then every change, which streams and blocking calls share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from server.bus import Bus
from server.errors import NotFound
from server.outputs import public_task_store
from server.store import SqliteStore
from tasks import get as get_kind

StatusDict = dict[str, Any]
ENDED = ("success", "error")


class StatusView:
    """Statuses of an account's tasks: live ones from the bus, the others from the store."""

    def __init__(self, store: SqliteStore, bus: Bus) -> None:
        self.store = store
        self.bus = bus

    async def _snapshot(
        self, account_id: int, keys: Sequence[str], where: str
    ) -> tuple[list[StatusDict], dict[str, int]]:
        versions: dict[str, int] = {}
        by_key: dict[str, StatusDict] = {}
        missing = []
        for key in keys:
            live = self.bus.live(key, account_id)
            if live is None:
                missing.append(key)
            else:
                versions[key], by_key[key] = live
        if missing:
            stored = await self.store.tasks(account_id, missing)
            for key in missing:
                # The bus may have published while the store was read; take the newer one.
                live = self.bus.live(key, account_id)
                if live is not None:
                    versions[key], by_key[key] = live
                elif key in stored:
                    by_key[key] = stored[key].to_status()
        for i, key in enumerate(keys):
            if key not in by_key:
                raise NotFound(f"tasks.{i}", where, f"unknown task key {key[:64]!r}")
        return [by_key[k] for k in keys], versions

    async def lookup(self, account_id: int, keys: Sequence[str], where: str) -> list[StatusDict]:
        """Current statuses in request order; NotFound names the first unknown key."""
        statuses, _ = await self._snapshot(account_id, keys, where)
        return statuses

    async def watch(
        self, account_id: int, keys: Sequence[str], where: str, idle: float | None = None
    ) -> AsyncIterator[list[StatusDict] | None]:
        """Yields the statuses in request order, then each batch of changes until every task
        has ended; yields None after `idle` seconds without a change."""
        sub = self.bus.subscribe(keys)
        try:
            statuses, versions = await self._snapshot(account_id, keys, where)
            sub.seen.update(versions)
            yield statuses
            last = {s["key"]: s for s in statuses}
            running = {k for k, s in last.items() if s["status"] not in ENDED}
            while running:
                try:
                    # Not wait_for, which on Python 3.11 can swallow the cancel of a stream
                    # closed at shutdown if a change arrives at the same moment.
                    async with asyncio.timeout(idle):
                        await sub.changed.wait()
                except TimeoutError:
                    yield None
                    continue
                changes = []
                for status in sub.take():
                    key = status["key"]
                    if status == last.get(key):
                        continue
                    last[key] = status
                    changes.append(status)
                    if status["status"] in ENDED:
                        running.discard(key)
                if changes:
                    yield changes
        finally:
            self.bus.unsubscribe(sub)

    async def wait_ended(self, account_id: int, keys: Sequence[str], where: str) -> None:
        """Returns once every task has ended; costs one bus subscription, no polling."""
        async with contextlib.aclosing(self.watch(account_id, keys, where)) as changes:
            async for _ in changes:
                pass

    async def with_details(self, account_id: int, statuses: list[StatusDict]) -> list[StatusDict]:
        """The statuses plus each task's parameters (secrets removed), storage, labels,
        attempts and callback outcomes."""
        keys = [s["key"] for s in statuses]
        tasks = await self.store.tasks(account_id, keys)
        deliveries = await self.store.deliveries_of(keys)
        out = []
        for status in statuses:
            task = tasks[status["key"]]
            kind = get_kind(task.task_name)
            out.append(
                {
                    **status,
                    "task_name": task.task_name,
                    "parameters": kind.public_params(task.params) if kind else {},
                    "task_store": public_task_store(task.task_store),
                    "task_metas": task.task_metas,
                    "attempts": task.attempts,
                    "callbacks": [d.describe() for d in deliveries.get(task.key, [])],
                }
            )
        return out
