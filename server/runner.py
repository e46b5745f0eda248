"""The scheduler: takes queued tasks, downloads their inputs, runs them in the worker pool,
stores their outputs and records how they ended.

Retry, timeout and the sorting of outcomes are decided in one place, `_run`: the attempt is
counted before the run (a crash counts), a task past `max_attempts` ends in error, and the final
bookkeeping is shielded from cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from server.bus import Bus
from server.config import Config
from server.fetch import FetchError, download
from server.outputs import OutputError, Outputs
from server.pool import TaskTimedOut, WorkerDied, WorkerPool
from server.statuses import Status, Task, now_iso
from server.store import Delivery, SqliteStore, new_delivery_id
from tasks import get as get_kind
from tasks.declare import URLS

log = logging.getLogger(__name__)


def deliveries_for(task: Task) -> list[Delivery]:
    """The callback or errback an ended task owes, if its definition asked for one."""
    event, url = (
        ("callback", task.params.get("url_callback"))
        if task.status is Status.SUCCESS
        else ("errback", task.params.get("url_errback"))
    )
    if not url:
        return []
    body = orjson.dumps(task.to_status())
    return [
        Delivery(
            id=new_delivery_id(),
            task_key=task.key,
            account_id=task.account_id,
            event=event,
            url=url,
            body=body,
            next_attempt=time.time(),
        )
    ]


class Runner:
    """Runs queued tasks, `config.concurrency` at a time, on the worker pool."""

    def __init__(
        self,
        config: Config,
        store: SqliteStore,
        bus: Bus,
        pool: WorkerPool,
        session: aiohttp.ClientSession,
        outputs: Outputs,
        on_delivery: Any,
    ) -> None:
        self.config = config
        self.store = store
        self.bus = bus
        self.pool = pool
        self.session = session
        self.outputs = outputs
        self.on_delivery = on_delivery
        self.queue: asyncio.Queue[Task] = asyncio.Queue()
        self._consumers: list[asyncio.Task[None]] = []
        self.work_root = config.data_dir / "work"

    @property
    def queued(self) -> int:
        return self.queue.qsize()

    async def start(self) -> None:
        """Resumes what the store holds unfinished, then starts taking tasks."""
        await asyncio.to_thread(shutil.rmtree, self.work_root, True)
        self.work_root.mkdir(parents=True, exist_ok=True)
        for task in await self.store.unfinished():
            if task.status is Status.EXECUTING:
                task.status, task.started_at = Status.QUEUED, None
                task.progress, task.result = 0, None
                await self.store.requeue(task)
            self.enqueue([task])
        self._consumers = [
            asyncio.create_task(self._consume(), name=f"runner-{i}")
            for i in range(self.config.concurrency)
        ]

    async def stop(self) -> None:
        for consumer in self._consumers:
            consumer.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)

    def enqueue(self, tasks: Sequence[Task]) -> None:
        """Queues tasks that are committed as queued, and announces them."""
        for task in tasks:
            self.bus.publish(task)
            self.queue.put_nowait(task)

    async def _consume(self) -> None:
        while True:
            task = await self.queue.get()
            try:
                await self._run(task)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task %s could not be run", task.key)

    async def _run(self, task: Task) -> None:
        kind = get_kind(task.task_name)
        if kind is None:
            await self._end(task, Status.ERROR, error=f"unknown task kind {task.task_name!r}")
            return
        if task.attempts >= self.config.max_attempts:
            await self._end(
                task,
                Status.ERROR,
                error=f"the task was interrupted {task.attempts} times (a worker or the server "
                "stopped while it ran) and was not retried again",
            )
            return
        task.status, task.started_at = Status.EXECUTING, now_iso()
        task.attempts += 1
        task.progress, task.result = 0, None
        # Not awaited: a claim lost in a crash leaves the task queued, and it runs on restart.
        self.store.claim(task)
        self.bus.publish(task)

        # Kinds without input or output files (hello) skip the work folder and its disk I/O.
        workdir = (
            Path(await asyncio.to_thread(tempfile.mkdtemp, f"-{task.key}", dir=self.work_root))
            if kind.uses_files
            else self.work_root
        )
        try:
            inputs = await self._fetch_inputs(task, kind, workdir)
            outcome, value = await self.pool.run(
                kind.name,
                task.params,
                inputs,
                str(workdir),
                lambda pct, partial: self._progress(task, pct, partial),
                kind.time_limit,
            )
            if outcome == "done":
                result = await self.outputs.store(task, kind, value, workdir)
                await self._end(task, Status.SUCCESS, result=result)
            else:
                await self._end(task, Status.ERROR, error=value)
        except (FetchError, OutputError) as e:
            await self._end(task, Status.ERROR, error=str(e))
        except TaskTimedOut as e:
            await self._end(task, Status.ERROR, error=str(e))
        except WorkerDied as e:
            if task.attempts >= self.config.max_attempts:
                await self._end(
                    task, Status.ERROR, error=f"{e}, {task.attempts} times; not retried again"
                )
            else:
                log.warning("task %s: %s; retrying", task.key, e)
                task.status, task.started_at, task.progress, task.result = (
                    Status.QUEUED,
                    None,
                    0,
                    None,
                )
                await self.store.requeue(task)
                self.enqueue([task])
        finally:
            if kind.uses_files:
                await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def _fetch_inputs(self, task: Task, kind: Any, workdir: Path) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        for param in kind.url_params:
            value = task.params.get(param.name)
            if value is None:
                continue
            urls = value if param.type == URLS else [value]
            paths = await asyncio.gather(
                *(
                    download(self.session, self.config, url, workdir / f"{param.name}-{i}")
                    for i, url in enumerate(urls)
                )
            )
            inputs[param.name] = [str(p) for p in paths] if param.type == URLS else str(paths[0])
        return inputs

    def _progress(self, task: Task, pct: Any, partial: dict[str, Any] | None) -> None:
        task.progress = pct
        if partial is not None:
            task.result = {**(task.result or {}), **partial}
        self.store.record_progress(task)
        self.bus.publish(task)

    async def _end(self, task: Task, status: Status, result: Any = None, error: Any = None) -> None:
        task.status, task.completed_at = status, now_iso()
        task.result, task.error = (result, None) if status is Status.SUCCESS else (None, error)
        deliveries = deliveries_for(task)
        # On shutdown the write still lands: the store commits what is queued before closing.
        await self.store.finish(task, deliveries)
        self.bus.publish(task)
        if deliveries:
            self.on_delivery()
