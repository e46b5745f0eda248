"""A supervised pool of worker processes driven from asyncio.

Unlike `concurrent.futures.ProcessPoolExecutor`, where one dead worker breaks every pending
future, each worker here is watched on its own: if it dies (a crash in a decoder, `kill -9`),
only its task fails, with `WorkerDied`, and a new worker takes its place. A task that runs past
its time limit has its worker killed and replaced too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import pickle
import socket
from collections.abc import Callable
from typing import Any

from server import worker

log = logging.getLogger(__name__)


class WorkerDied(Exception):
    """The worker process running the task exited (crash, out of memory, killed)."""


class TaskTimedOut(Exception):
    """The task ran past its kind's time limit and its worker was stopped."""


class _Worker:
    def __init__(
        self,
        process: multiprocessing.process.BaseProcess,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer
        self.dead = False

    async def receive(self) -> Any:
        header = await self.reader.readexactly(4)
        body = await self.reader.readexactly(int.from_bytes(header, "big"))
        return pickle.loads(body)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, OSError, AttributeError):
            self.process.kill()
        self.writer.close()


class WorkerPool:
    """`size` worker processes; `run` sends a job to an idle one and waits for its outcome."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["server.worker"])
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: set[_Worker] = set()
        self._closing = False
        self._respawns: set[asyncio.Task[None]] = set()

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._all if w.process.pid]

    async def start(self) -> None:
        workers = await asyncio.gather(*(self._spawn() for _ in range(self.size)))
        for w in workers:
            self._idle.put_nowait(w)

    async def _spawn(self) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        process = self._context.Process(
            target=worker.main, args=(child_sock,), daemon=True, name="taskstream-worker"
        )
        await asyncio.to_thread(process.start)
        child_sock.close()
        reader, writer = await asyncio.open_connection(sock=parent_sock)
        w = _Worker(process, reader, writer)
        # The process sentinel becomes readable when the worker exits, even while it is idle.
        loop = asyncio.get_running_loop()
        loop.add_reader(process.sentinel, self._on_exit, w)
        self._all.add(w)
        return w

    def _on_exit(self, w: _Worker) -> None:
        asyncio.get_running_loop().remove_reader(w.process.sentinel)
        w.dead = True

    def _replace(self, dead: _Worker) -> None:
        if not dead.dead:
            self._on_exit(dead)
        dead.kill()
        self._all.discard(dead)
        if self._closing:
            return

        async def respawn() -> None:
            await asyncio.to_thread(dead.process.join, 5)
            try:
                self._idle.put_nowait(await self._spawn())
            except Exception:
                log.exception("could not start a replacement worker")

        task = asyncio.create_task(respawn())
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    async def run(
        self,
        kind: str,
        params: dict[str, Any],
        inputs: dict[str, Any],
        workdir: str,
        on_progress: Callable[[Any, dict[str, Any] | None], None],
        time_limit: float,
    ) -> tuple[str, Any]:
        """Runs a job on a worker: ("done", result) or ("failed", message). Raises WorkerDied
        or TaskTimedOut; the pool stays whole either way."""
        w = await self._idle.get()
        while w.dead:
            self._replace(w)
            w = await self._idle.get()
        try:
            async with asyncio.timeout(time_limit):
                w.writer.write(worker.encode(("run", kind, params, inputs, workdir)))
                await w.writer.drain()
                while True:
                    message = await w.receive()
                    if message[0] == "progress":
                        on_progress(message[1], message[2])
                    else:
                        self._idle.put_nowait(w)
                        return message
        except TimeoutError:
            self._replace(w)
            raise TaskTimedOut(f"the task ran past its time limit of {time_limit:g} s") from None
        except (asyncio.IncompleteReadError, ConnectionError):
            await asyncio.to_thread(w.process.join, 2)
            code = w.process.exitcode
            self._replace(w)
            how = f"was killed by signal {-code}" if code and code < 0 else f"exited ({code})"
            raise WorkerDied(f"the worker process running the task {how}") from None
        except BaseException:
            self._replace(w)
            raise

    async def close(self) -> None:
        self._closing = True
        for task in list(self._respawns):
            task.cancel()
        for w in list(self._all):
            if not w.dead:
                self._on_exit(w)
            w.writer.close()
        for w in list(self._all):
            await asyncio.to_thread(w.process.join, 3)
            w.kill()
        self._all.clear()
