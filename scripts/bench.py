"""Benchmark of the task server on this machine (a benchmark, not a test).

Starts `taskstream serve` on loopback with a temporary data dir and measures, each phase bounded
in count and time:
  1. single-task creates per second with 32 concurrent clients;
  2. tasks per second end to end for 10,000 `hello` tasks (create to success);
  3. p50/p99 latency of GET /v2/status while every worker is busy;
  4. concurrent status streams held, with every update delivered.
Targets (issue 2): 8,000 creates/s, 2,000 hello tasks/s, status p99 < 20 ms, 2,000 streams.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

SECRET = "bench-secret"
AUTH = {"Authorization": f"Secret {SECRET}"}
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, data_dir: Path, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TASKSTREAM_EXTRA_KINDS": "tests.kinds_for_tests"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--secret",
            SECRET,
            "--workers",
            str(workers),
            "--max-queued",
            "1000000",
            "--rate-limit",
            "0",
            "--allow-private-networks",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_ready(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not start")


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the workers), in MB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


# -- phase 1: creates per second ---------------------------------------------------------------


async def _create_loop(base: str, clients: int, seconds: float) -> int:
    body = orjson.dumps({"tasks": [{"task_name": "hello", "name": "bench"}]})
    done = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:

        async def client() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with session.post(f"{base}/v2/create", data=body) as resp:
                    await resp.read()
                    if resp.status == 200:
                        done += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return done


def _create_process(base: str, clients: int, seconds: float, out: multiprocessing.Queue) -> None:
    out.put(asyncio.run(_create_loop(base, clients, seconds)))


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"tasks": [{"task_name": "hello", "name": "bench"}]}'
wrk.headers["Authorization"] = "Secret %s"
"""


def creates_with_wrk(base: str, clients: int, seconds: float) -> float | None:
    """Creates per second measured by wrk (a C client, so the load costs the server's cores
    little), after a one-second warm-up, or None when wrk is not installed (`apt-get install
    wrk`)."""
    if shutil.which("wrk") is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT % SECRET)
        script.flush()
        for duration in (1, seconds):
            out = subprocess.run(
                [
                    "wrk",
                    "-t1",
                    f"-c{clients}",
                    f"-d{duration:g}s",
                    "-s",
                    script.name,
                    f"{base}/v2/create",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            if "Non-2xx" in out:
                raise RuntimeError(f"creates failed under wrk:\n{out}")
    return float(out.split("Requests/sec:")[1].split()[0])


def creates_per_second(base: str, clients: int, processes: int, seconds: float) -> float:
    """`clients` concurrent connections spread over `processes` Python client processes."""
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_create_process, args=(base, clients // processes, seconds, out))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    total = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


# -- phase 2: hello tasks end to end -----------------------------------------------------------


async def end_to_end(base: str, count: int, batch: int) -> float:
    task = {"task_name": "hello", "name": "e2e"}
    async with aiohttp.ClientSession(headers=AUTH) as session:
        start = time.monotonic()

        async def create(n: int) -> list[str]:
            body = orjson.dumps({"tasks": [task] * n})
            async with session.post(f"{base}/v2/create", data=body) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"create failed: {resp.status} {await resp.text()}")
                return [s["key"] for s in await resp.json()]

        key_lists = await asyncio.gather(
            *(create(min(batch, count - i)) for i in range(0, count, batch))
        )
        keys = [k for ks in key_lists for k in ks]

        async def wait(chunk: list[str]) -> int:
            body = orjson.dumps({"tasks": chunk, "block": True})
            async with session.post(f"{base}/v2/status", data=body) as resp:
                return sum(s["status"] == "success" for s in await resp.json())

        ok = sum(await asyncio.gather(*(wait(keys[i : i + 1000]) for i in range(0, count, 1000))))
        elapsed = time.monotonic() - start
    if ok != count:
        raise RuntimeError(f"only {ok} of {count} tasks succeeded")
    return count / elapsed


# -- phase 3: status latency under load --------------------------------------------------------


async def status_latency(base: str, workers: int, clients: int, seconds: float) -> list[float]:
    """Latencies of GET /v2/status over six tasks while `workers` CPU-bound tasks keep every
    worker busy for the whole measure."""
    async with aiohttp.ClientSession(headers=AUTH) as session:

        async def create(tasks: list[dict], block: bool = False) -> list[str]:
            body = orjson.dumps({"tasks": tasks, "block": block})
            async with session.post(f"{base}/v2/create", data=body) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"create failed: {await resp.text()}")
                return [s["key"] for s in await resp.json()]

        keys = await create([{"task_name": "hello", "name": "s"}] * 5, block=True)
        busy_keys = await create([{"task_name": "test.spin", "seconds": seconds + 5}] * workers)
        params = [("tasks", k) for k in keys] + [("tasks", busy_keys[0])]
        for _ in range(100):
            async with session.get(
                f"{base}/v2/status", params=[("tasks", k) for k in busy_keys]
            ) as resp:
                if all(s["status"] == "executing" for s in await resp.json()):
                    break
            await asyncio.sleep(0.05)
        latencies: list[float] = []
        deadline = time.monotonic() + seconds

        async def client() -> None:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                async with session.get(f"{base}/v2/status", params=params) as resp:
                    await resp.read()
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(client() for _ in range(clients)))
        async with session.get(
            f"{base}/v2/status", params=[("tasks", k) for k in busy_keys]
        ) as resp:
            still_busy = all(s["status"] == "executing" for s in await resp.json())
    if not still_busy:
        raise RuntimeError("the workers were not busy for the whole measure")
    return latencies


# -- phase 4: concurrent streams ---------------------------------------------------------------


async def streams_held(base: str, count: int, tasks: int) -> tuple[int, int]:
    """Opens `count` streams over `tasks` sleeping tasks; returns (streams that saw the first
    line and every task's final status, streams opened)."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, headers=AUTH, timeout=timeout) as session:
        body = orjson.dumps({"tasks": [{"task_name": "test.sleep", "seconds": 2}] * tasks})
        async with session.post(f"{base}/v2/create", data=body) as resp:
            keys = [s["key"] for s in await resp.json()]
        opened = 0
        all_open = asyncio.Event()

        async def follow(i: int) -> bool:
            nonlocal opened
            mine = [keys[i % tasks], keys[(i + 1) % tasks]]
            async with session.get(
                f"{base}/v2/stream", params=[("tasks", k) for k in mine]
            ) as resp:
                first = orjson.loads(await resp.content.readline())
                opened += 1
                if opened == count:
                    all_open.set()
                ended = {s["key"] for s in first if s["status"] in ("success", "error")}
                async for line in resp.content:
                    if line.strip():
                        status = orjson.loads(line)
                        if status["status"] == "success":
                            ended.add(status["key"])
                return ended == set(mine)

        results = await asyncio.gather(*(follow(i) for i in range(count)), return_exceptions=True)
    return sum(r is True for r in results), opened


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of timed phases")
    parser.add_argument("--tasks", type=int, default=10_000, help="hello tasks end to end")
    parser.add_argument("--streams", type=int, default=2000)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(port, Path(tmp) / "data", args.workers)
        try:
            asyncio.run(wait_ready(base))
            print(f"taskstream bench: {args.workers} workers, {os.cpu_count()} CPUs, loopback")
            rate = creates_with_wrk(base, clients=32, seconds=args.seconds)
            client = "wrk"
            if rate is None:
                rate = creates_per_second(base, clients=32, processes=2, seconds=args.seconds)
                client = "aiohttp clients; install wrk for a lighter client"
            print(
                f"creates/s (32 concurrent clients, one task each, {client}): {rate:,.0f}   "
                "target 8,000"
            )
            rate = asyncio.run(end_to_end(base, args.tasks, batch=100))
            print(f"hello tasks/s end to end ({args.tasks:,} tasks): {rate:,.0f}   target 2,000")
            lat = asyncio.run(status_latency(base, args.workers, 16, args.seconds))
            lat.sort()
            p50 = statistics.median(lat) * 1000
            p99 = lat[int(len(lat) * 0.99)] * 1000
            print(
                f"GET /v2/status with every worker busy (16 clients, {len(lat):,} requests): "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms   target p99 < 20 ms"
            )
            ok, opened = asyncio.run(streams_held(base, args.streams, tasks=50))
            print(
                f"concurrent status streams: {opened:,} opened, {ok:,} got every update   "
                f"target 2,000"
            )
            print(f"server RSS (with workers) at the end: {rss_mb(server.pid):.0f} MB")
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
