"""The scheduler: takes queued tasks, downloads their inputs, runs them in the worker pool,
stores their outputs and records how they ended.

A task runs alone (`_run`) or, when its kind is quick and needs no files (hello), in a batch
with the quick tasks queued behind it (`_run_batch`): one commit for all their ends. Both share
the steps that decide: the attempt is counted at the claim, before the run (a crash counts); a
task past `max_attempts` ends in error (`_refusal`, `_died`); every end goes through `_end`,
whose write lands even when the server is stopping.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from server.bus import Bus
from server.config import Config
from server.fetch import FetchError, download
from server.outputs import OutputError, Outputs
from server.pool import MAX_SHARED, TaskTimedOut, Ticket, WorkerDied, WorkerPool
from server.statuses import Status, Task, now_iso
from server.store import Delivery, SqliteStore, new_delivery_id
from tasks import get as get_kind
from tasks.declare import URLS, Kind

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


_STATUS_OF = {"done": Status.SUCCESS, "failed": Status.ERROR}


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
            batch, after = [task], None
            # Quick kinds without files run as a batch, taken from what is queued now.
            if self._runs_in_batch(task):
                while len(batch) < MAX_SHARED and not self.queue.empty():
                    other = self.queue.get_nowait()
                    if not self._runs_in_batch(other):
                        after = other
                        break
                    batch.append(other)
            await self._guarded(
                batch, self._run_batch(batch) if len(batch) > 1 else self._run(task)
            )
            if after is not None:
                await self._guarded([after], self._run(after))

    async def _guarded(self, tasks: list[Task], run: Awaitable[None]) -> None:
        """Runs `run`. A failure it did not expect (a bug, the data dir gone) ends the tasks it
        left executing in error, instead of leaving them executing for good."""
        try:
            await run
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("tasks %s could not be run", ", ".join(t.key for t in tasks))
            error = f"internal error while running the task: {type(e).__name__}: {e}"
            stuck = [(t, Status.ERROR, error) for t in tasks if t.status is Status.EXECUTING]
            try:
                await self._end(stuck)
            except Exception:
                log.exception("could not record the end of tasks %s", [t.key for t, _, _ in stuck])

    def _runs_in_batch(self, task: Task) -> bool:
        kind = get_kind(task.task_name)
        return kind is not None and not kind.uses_files and self.pool.is_quick(kind.name)

    def _refusal(self, task: Task, kind: Kind | None) -> str | None:
        """Why the task cannot run at all, or None."""
        if kind is None:
            return f"unknown task kind {task.task_name!r}"
        if task.attempts >= self.config.max_attempts:
            return (
                f"the task was interrupted {task.attempts} times (a worker or the server "
                "stopped while it ran) and was not retried again"
            )
        return None

    def _claim(self, task: Task) -> None:
        """Marks the task executing: the attempt counts from here (a crash counts)."""
        task.status, task.started_at = Status.EXECUTING, now_iso()
        task.attempts += 1
        task.progress, task.result = 0, None
        # Not awaited: a claim lost in a crash leaves the task queued, and it runs on restart.
        self.store.claim(task)
        self.bus.publish(task)

    def _submit(self, task: Task, kind: Kind, inputs: dict[str, Any], workdir: Path) -> Ticket:
        return self.pool.submit(
            kind.name,
            task.params,
            inputs,
            str(workdir),
            lambda pct, partial: self._progress(task, pct, partial),
            kind.time_limit,
        )

    async def _run(self, task: Task) -> None:
        kind = get_kind(task.task_name)
        refusal = self._refusal(task, kind)
        if refusal is not None or kind is None:
            await self._end([(task, Status.ERROR, refusal)])
            return
        self._claim(task)
        # Kinds without input or output files (hello) skip the work folder and its disk I/O.
        workdir = (
            Path(await asyncio.to_thread(tempfile.mkdtemp, f"-{task.key}", dir=self.work_root))
            if kind.uses_files
            else self.work_root
        )
        try:
            inputs = await self._fetch_inputs(task, kind, workdir)
            outcome, value = await self.pool.wait(self._submit(task, kind, inputs, workdir))
            if outcome == "done":
                value = await self.outputs.store(task, kind, value, workdir)
            await self._end([(task, _STATUS_OF[outcome], value)])
        except (FetchError, OutputError, TaskTimedOut) as e:
            await self._end([(task, Status.ERROR, str(e))])
        except WorkerDied as e:
            await self._died(task, e)
        finally:
            if kind.uses_files:
                await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def _run_batch(self, tasks: list[Task]) -> None:
        """Runs tasks of quick kinds without files together: each still ends on its own
        outcome, and their ends are committed at once."""
        ended: list[tuple[Task, Status, Any]] = []
        started: list[tuple[Task, Ticket]] = []
        for task in tasks:
            kind = get_kind(task.task_name)
            refusal = self._refusal(task, kind)
            if refusal is not None or kind is None:
                ended.append((task, Status.ERROR, refusal))
            else:
                self._claim(task)
                started.append((task, self._submit(task, kind, {}, self.work_root)))
        died: list[tuple[Task, WorkerDied]] = []
        try:
            for task, ticket in started:
                try:
                    outcome, value = await ticket.future
                except TaskTimedOut as e:
                    ended.append((task, Status.ERROR, str(e)))
                except WorkerDied as e:
                    died.append((task, e))
                else:
                    ended.append((task, _STATUS_OF[outcome], value))
        except asyncio.CancelledError:
            for _, ticket in started:
                self.pool.withdraw(ticket)
            raise
        await self._end(ended)
        for task, e in died:
            await self._died(task, e)

    async def _died(self, task: Task, e: WorkerDied) -> None:
        """The worker running the task died: the task runs again, up to max_attempts."""
        if task.attempts >= self.config.max_attempts:
            await self._end(
                [(task, Status.ERROR, f"{e}, {task.attempts} times; not retried again")]
            )
            return
        log.warning("task %s: %s; retrying", task.key, e)
        task.status, task.started_at, task.progress, task.result = Status.QUEUED, None, 0, None
        await self.store.requeue(task)
        self.enqueue([task])

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

    async def _end(self, ends: Sequence[tuple[Task, Status, Any]]) -> None:
        """Records how tasks ended (the value is the result on success, else the error) in one
        commit with the callbacks they owe, then announces them."""
        if not ends:
            return
        deliveries: list[Delivery] = []
        for task, status, value in ends:
            task.status, task.completed_at = status, now_iso()
            task.result, task.error = (value, None) if status is Status.SUCCESS else (None, value)
            deliveries += deliveries_for(task)
        # On shutdown the write still lands: the store commits what is queued before closing.
        await self.store.finish([task for task, _, _ in ends], deliveries)
        for task, _, _ in ends:
            self.bus.publish(task)
        if deliveries:
            self.on_delivery()
