"""A supervised pool of worker processes driven from asyncio.

Unlike `concurrent.futures.ProcessPoolExecutor`, where one dead worker breaks every pending
future, each worker here is watched on its own: if it dies (a crash in a decoder, `kill -9`),
only the job it was running fails, with `WorkerDied`, and a new worker takes its place. A job
that runs past its time limit has its worker killed and replaced too (one watchdog checks every
WATCH_EVERY seconds).

Jobs go out at the end of the event loop's turn, and jobs of a kind whose runs are quick
(`hello` takes microseconds) travel several to a message: sending a message costs the server
more than such a job costs its worker, so one message per job would make the pool, not the
workers, the limit under load. The worker
reports each job's outcome as soon as it ends, so every job keeps its own time limit, counted
from the outcome before it, and a worker lost mid-message fails only the job it was running:
the jobs behind it go back to the front of the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import pickle
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server import worker

log = logging.getLogger(__name__)

# Jobs of a kind whose runs take less than this (seconds, on average) may share a message...
QUICK = 0.002
# ...up to this many, so that a burst still spreads over every worker.
MAX_SHARED = 32
# How often (seconds) running jobs are checked against their time limit.
WATCH_EVERY = 0.05
_HEADER = worker.HEADER


class WorkerDied(Exception):
    """The worker process running the task exited (crash, out of memory, killed)."""


class TaskTimedOut(Exception):
    """The task ran past its kind's time limit and its worker was stopped."""


@dataclass(eq=False)
class Ticket:
    """A job in the pool, from `submit` to its outcome."""

    kind: str
    message: tuple[Any, ...]
    on_progress: Callable[[Any, dict[str, Any] | None], None]
    time_limit: float
    future: asyncio.Future[tuple[str, Any]]
    worker: _Worker | None = None
    started: float = 0.0


@dataclass(eq=False)
class _Worker(asyncio.Protocol):
    """One worker process and the server's end of its socket; the jobs it holds run in order,
    the first one now."""

    pool: WorkerPool
    process: multiprocessing.process.BaseProcess
    transport: asyncio.Transport | None = None
    jobs: deque[Ticket] = field(default_factory=deque)
    dead: bool = False
    buffer: bytearray = field(default_factory=bytearray)

    def data_received(self, data: bytes) -> None:
        """Hands over every whole frame received; keeps the start of the next one."""
        buffer = self.buffer
        buffer += data
        start = 0
        while len(buffer) - start >= _HEADER.size and not self.dead:
            end = start + _HEADER.size + _HEADER.unpack_from(buffer, start)[0]
            if len(buffer) < end:
                break
            message = pickle.loads(memoryview(buffer)[start + _HEADER.size : end])
            start = end
            self.pool._on_message(self, message)
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._on_exit(self)


class WorkerPool:
    """`size` worker processes; `run` queues a job and waits for its outcome."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["server.worker"])
        self._pending: deque[Ticket] = deque()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._run_seconds: dict[str, float] = {}  # per kind, a moving average
        self._loop: asyncio.AbstractEventLoop  # set by start()
        self._closing = False
        self._dispatch_soon = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._all if w.process.pid]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()  # kept: see SqliteStore.open
        self._idle += await asyncio.gather(*(self._spawn() for _ in range(self.size)))

    async def _spawn(self) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        process = self._context.Process(
            target=worker.main, args=(child_sock,), daemon=True, name="taskstream-worker"
        )
        await asyncio.to_thread(process.start)
        child_sock.close()
        loop = asyncio.get_running_loop()
        transport, w = await loop.create_connection(
            lambda: _Worker(self, process), sock=parent_sock
        )
        w.transport = transport
        # The process sentinel becomes readable when the worker exits, even while it is idle.
        loop.add_reader(process.sentinel, self._on_exit, w)
        self._all.add(w)
        return w

    def submit(
        self,
        kind: str,
        params: dict[str, Any],
        inputs: dict[str, Any],
        workdir: str,
        on_progress: Callable[[Any, dict[str, Any] | None], None],
        time_limit: float,
    ) -> Ticket:
        """Queues a job. Its ticket's future gives ("done", result) or ("failed", message), or
        raises WorkerDied or TaskTimedOut; the pool stays whole either way."""
        future = self._loop.create_future()
        ticket = Ticket(kind, (kind, params, inputs, workdir), on_progress, time_limit, future)
        self._pending.append(ticket)
        if not self._dispatch_soon:
            # Jobs submitted in the same turn of the loop go out together, at its end.
            self._dispatch_soon = True
            self._loop.call_soon(self._dispatch)
        return ticket

    def withdraw(self, ticket: Ticket) -> None:
        """Gives up a job whose caller stopped waiting: a queued job is dropped, a running one
        is stopped with its worker (the only way), one waiting behind another runs unheard."""
        if ticket.future.done() and not ticket.future.cancelled():
            return
        ticket.future.cancel()
        if ticket.worker is None:
            if ticket in self._pending:
                self._pending.remove(ticket)
        elif ticket.worker.jobs and ticket.worker.jobs[0] is ticket and not ticket.worker.dead:
            self._retire(ticket.worker)

    async def wait(self, ticket: Ticket) -> tuple[str, Any]:
        """The outcome of a submitted job; a caller that stops waiting withdraws it."""
        try:
            return await ticket.future
        except asyncio.CancelledError:
            self.withdraw(ticket)
            raise

    def is_quick(self, kind: str) -> bool:
        """Whether the kind's runs average under QUICK seconds (a kind never run is not)."""
        return self._run_seconds.get(kind, QUICK) < QUICK

    def _dispatch(self) -> None:
        """Gives queued jobs to idle workers."""
        self._dispatch_soon = False
        while self._pending and self._idle:
            batch = [self._pending.popleft()]
            quick = self.is_quick
            if quick(batch[0].kind):
                while self._pending and len(batch) < MAX_SHARED and quick(self._pending[0].kind):
                    batch.append(self._pending.popleft())
            w = self._idle.pop()
            for job in batch:
                job.worker = w
            w.jobs.extend(batch)
            assert w.transport is not None
            w.transport.write(worker.encode([job.message for job in batch]))
            self._start_clock(w)

    def _start_clock(self, w: _Worker) -> None:
        """The worker's first job starts now: its time limit counts from here."""
        w.jobs[0].started = self._loop.time()
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(WATCH_EVERY, self._watch)

    def _watch(self) -> None:
        """Stops the workers whose current job is past its time limit; looks again while any
        worker is busy. One timer for the pool, instead of one per job."""
        self._watchdog = None
        now = self._loop.time()
        for w in list(self._all):
            if w.jobs and now - w.jobs[0].started > w.jobs[0].time_limit:
                self._on_timeout(w)
        if self._watchdog is None and any(w.jobs for w in self._all):
            self._watchdog = self._loop.call_later(WATCH_EVERY, self._watch)

    def _on_message(self, w: _Worker, message: tuple[Any, ...]) -> None:
        job = w.jobs[0]
        if message[0] == "progress":
            if not job.future.done():
                job.on_progress(message[1], message[2])
            return
        outcome, value, seconds = message
        w.jobs.popleft()
        average = self._run_seconds.get(job.kind)
        self._run_seconds[job.kind] = seconds if average is None else 0.8 * average + 0.2 * seconds
        if not job.future.done():
            job.future.set_result((outcome, value))
        if w.jobs:
            self._start_clock(w)
        else:
            self._idle.append(w)
            self._dispatch()

    def _on_timeout(self, w: _Worker) -> None:
        job = w.jobs.popleft()
        self._retire(w)
        if not job.future.done():
            job.future.set_exception(
                TaskTimedOut(f"the task ran past its time limit of {job.time_limit:g} s")
            )

    def _on_exit(self, w: _Worker) -> None:
        """The worker exited or closed its socket on its own."""
        if not w.dead:
            self._retire(w, lost=w.jobs.popleft() if w.jobs else None)

    def _retire(self, w: _Worker, lost: Ticket | None = None) -> None:
        """Stops a worker, puts the jobs it had not started back at the front of the queue, and
        replaces it; `lost`, the job it was running when it died, fails with its exit code."""
        w.dead = True
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(w.process.sentinel)
        with contextlib.suppress(ProcessLookupError, OSError, AttributeError):
            w.process.kill()
        if w.transport is not None:
            w.transport.close()
        self._all.discard(w)
        if w in self._idle:
            self._idle.remove(w)
        for job in reversed(w.jobs):
            if not job.future.done():
                job.worker = None
                self._pending.appendleft(job)
        w.jobs.clear()
        self._in_background(self._replace(w, lost))
        self._dispatch()

    async def _replace(self, dead: _Worker, lost: Ticket | None) -> None:
        # One join only: the fork server hands the exit code to the first reader alone.
        await asyncio.to_thread(dead.process.join, 5)
        if lost is not None and not lost.future.done():
            code = dead.process.exitcode
            how = f"was killed by signal {-code}" if code and code < 0 else f"exited ({code})"
            lost.future.set_exception(WorkerDied(f"the worker process running the task {how}"))
        if self._closing:
            return
        try:
            self._idle.append(await self._spawn())
        except Exception:
            log.exception("could not start a replacement worker")
            return
        self._dispatch()

    def _in_background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        for task in list(self._background):
            task.cancel()
        for w in list(self._all):
            w.dead = True
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(w.process.sentinel)
            if w.transport is not None:
                w.transport.close()
        for w in list(self._all):
            await asyncio.to_thread(w.process.join, 3)
            with contextlib.suppress(ProcessLookupError, OSError, AttributeError):
                w.process.kill()
        self._all.clear()
