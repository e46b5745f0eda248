"""The server as a real `python -m server serve` subprocess, for tests and scripts that kill it.

`ServerProcess` starts the server on a free 127.0.0.1 port with a data dir of its own, waits for
`/healthz`, and can SIGKILL it (or one of its worker processes) and start it again on the same
data dir and port. Test kinds are available in it (TASKSTREAM_EXTRA_KINDS), and its log goes to
a file next to the data dir, so a failing test can show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret"
AUTH = {"Authorization": f"Secret {SECRET}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """Direct children of a process. The kernel lists them per thread, and the pool starts its
    fork server from a worker thread, so every thread's list is read."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(p) for p in (task / "children").read_text().split()]
    return out


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (the fork server, the resource tracker and the workers)."""
    found, todo = [], children(pid)
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children(p)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def rss_kb(pids: list[int]) -> int:
    """Summed resident memory of processes, in KiB (processes that are gone count 0)."""
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class ServerProcess:
    """`python -m server serve` in a subprocess (its own process group), on `port`."""

    def __init__(
        self,
        data_dir: Path,
        workers: int = 2,
        extra_kinds: bool = True,
        args: tuple[str, ...] = (),
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.extra_kinds = extra_kinds
        self.args = args
        self.port = port or free_port()
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server is not started"
        return self.process.pid

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "server",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--secret",
            SECRET,
            "--workers",
            str(self.workers),
            *self.args,
        ]

    def spawn(self) -> None:
        """Starts the server process without waiting for it."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if self.extra_kinds:
            env["TASKSTREAM_EXTRA_KINDS"] = "tests.kinds_for_tests"
        else:
            env.pop("TASKSTREAM_EXTRA_KINDS", None)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1}: {' '.join(self.command())}\n".encode())
            log.flush()
            # A session of its own, so `cleanup` can end the fork server and workers a SIGKILL
            # of the server leaves behind.
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.starts += 1

    async def start(self, within: float = 30.0) -> None:
        """Starts the server and returns once `/healthz` answers 200."""
        self.spawn()
        assert self.process is not None
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"the server exited ({self.process.returncode}):\n{self.log}"
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{self.url}/healthz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"the server did not answer /healthz in {within:g} s:\n{self.log}")

    def kill(self) -> None:
        """SIGKILLs the server process only (not its workers), as a crash would, and reaps it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    async def restart(self) -> None:
        """Starts the server again on the same data dir and port."""
        assert self.process is None or self.process.poll() is not None, "still running"
        await self.start()

    def stop(self, timeout: float = 15.0) -> int:
        """Stops the server as an operator would (SIGTERM), then ends anything left behind."""
        code = 0
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        self.cleanup()
        return code

    def cleanup(self) -> None:
        """SIGKILLs the whole process group: workers orphaned by a killed server end too."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20_000:]
        except OSError:
            return ""

    # -- its processes ----------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        """The worker processes: the children of the pool's fork server."""
        forkservers = [p for p in children(self.pid) if "multiprocessing.forkserver" in cmdline(p)]
        return sorted(w for f in forkservers for w in children(f) if alive(w))

    async def wait_workers(self, count: int, within: float = 10.0) -> list[int]:
        """The worker pids once `count` of them run (what runs after `within` seconds)."""
        deadline = time.monotonic() + within
        while True:
            pids = self.worker_pids()
            if len(pids) == count or time.monotonic() > deadline:
                return pids
            await asyncio.sleep(0.02)

    def rss_kb(self) -> int:
        """Resident memory of the server and every process below it, in KiB."""
        return rss_kb([self.pid, *descendants(self.pid)])


class Client:
    """A small client of the API for a `ServerProcess` (one aiohttp session)."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(
            headers=AUTH if headers is None else headers,
            timeout=aiohttp.ClientTimeout(total=60),
        )

    async def close(self) -> None:
        await self.session.close()

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with self.session.post(self.base + path, data=orjson.dumps(body)) as resp:
            return resp.status, orjson.loads(await resp.read())

    async def create_ok(self, tasks: list[dict[str, Any]], **body: Any) -> list[dict[str, Any]]:
        status, statuses = await self.post("/v2/create", {"tasks": tasks, **body})
        assert status == 200, statuses
        return statuses

    async def statuses(self, keys: list[str], **options: Any) -> list[dict[str, Any]]:
        status, statuses = await self.post("/v2/status", {"tasks": keys, **options})
        assert status == 200, statuses
        return statuses

    async def wait_for(
        self, keys: list[str], predicate: Any, within: float = 10.0
    ) -> list[dict[str, Any]]:
        """Polls the statuses of `keys` until `predicate(statuses)` holds."""
        deadline = time.monotonic() + within
        while True:
            statuses = await self.statuses(keys, details=True)
            if predicate(statuses):
                return statuses
            assert time.monotonic() < deadline, f"timed out waiting; last statuses: {statuses}"
            await asyncio.sleep(0.02)
