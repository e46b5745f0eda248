"""Load test of the task server on this machine (a measure, not a test); run it through
`scripts/loadtest`.

Starts `taskstream serve` as a subprocess on 127.0.0.1 (temporary data dir, the test kinds,
--allow-private-networks) and a callback receiver in this process. For --seconds it:
  - holds --streams status streams open, each following one anchor task and three tasks of the
    load (the anchor is an `image.info` whose image the receiver's server sends only once the
    load stops, so the streams stay open for the whole load without holding a worker);
  - creates --rate tasks per second (mostly `hello`, some `test.sleep` and `test.fail`), each with
    a url_callback and a url_errback to the receiver.
Then it waits, at most --drain seconds, for every task to end, every callback to arrive and every
stream to close, and reports tasks accepted, ended and lost, callbacks owed and delivered,
streams held and streams that saw every final status, and the peak memory of the server and its
workers. The exit status is 1 when a task was lost, a callback is missing or a stream missed a
final status.

Everything is bounded: the task count by --rate times --seconds, the streams by --streams, and
each phase by a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import os
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop
from aiohttp import web
from PIL import Image

from tests.serverproc import AUTH, SECRET, ServerProcess, free_port, rss_kb

ENDED = ("success", "error")
STATUS_CHUNK = 1000  # keys per status query (the server's default --max-batch)


@dataclass
class Tally:
    """Everything counted during a run."""

    accepted: list[str] = field(default_factory=list)
    refused: int = 0  # 429 or 503: the server said "later"; not accepted, so not owed
    failed_requests: Counter[str] = field(default_factory=Counter)
    created_per_kind: Counter[str] = field(default_factory=Counter)
    # The receiver: webhook ids per task key, and POSTs whose signature did not verify.
    deliveries: dict[str, list[str]] = field(default_factory=dict)
    delivered_status: dict[str, str] = field(default_factory=dict)
    bad_signatures: int = 0
    streams_opened: int = 0
    streams_refused: Counter[str] = field(default_factory=Counter)
    streams_complete: int = 0
    streams_incomplete: int = 0
    stream_mismatches: int = 0  # a stream's final status differs from /v2/status's
    stream_finals: list[dict[str, str]] = field(default_factory=list)
    fewest_streams_open: int | None = None
    peak_rss_kb: int = 0
    peak_server_rss_kb: int = 0
    notes: list[str] = field(default_factory=list)  # the first few unexpected answers
    # Set when a create is accepted or a callback arrives.
    news: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, text: str) -> None:
        if len(self.notes) < 5:
            self.notes.append(text)

    async def wait_until(self, condition: Any, deadline: float) -> bool:
        """Waits for `condition()` to hold, checking at each piece of news."""
        while not condition():
            self.news.clear()
            try:
                await asyncio.wait_for(self.news.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return condition()
        return True


# -- the callback receiver ---------------------------------------------------------------------


def verify(headers: Any, body: bytes) -> bool:
    """A Standard Webhooks signature check with the account secret."""
    try:
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    except KeyError:
        return False
    digest = hmac.new(SECRET.encode(), signed, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    return any(hmac.compare_digest(s, expected) for s in headers["webhook-signature"].split())


def tiny_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


async def start_receiver(tally: Tally, release: asyncio.Event) -> tuple[web.AppRunner, str]:
    """The callback receiver, which also serves the anchor task's image once `release` is set."""
    png = tiny_png()

    async def anchor(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(body=png, content_type="image/png")

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(request.headers, body):
            tally.bad_signatures += 1
            return web.Response(status=400)
        status = orjson.loads(body)
        tally.deliveries.setdefault(status["key"], []).append(request.headers["webhook-id"])
        tally.delivered_status[status["key"]] = status["status"]
        tally.news.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{event}", hook)
    app.router.add_get("/anchor.png", anchor)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    return runner, f"http://127.0.0.1:{port}"


# -- load --------------------------------------------------------------------------------------


def task_mix(receiver: str, rng: random.Random) -> dict[str, Any]:
    """One task of the load: 85% hello, 10% a short test.sleep, 5% test.fail."""
    roll = rng.random()
    if roll < 0.85:
        task: dict[str, Any] = {"task_name": "hello", "name": "load"}
    elif roll < 0.95:
        task = {"task_name": "test.sleep", "seconds": 0.02}
    else:
        task = {"task_name": "test.fail", "message": "failed on purpose"}
    task["url_callback"] = f"{receiver}/callback"
    task["url_errback"] = f"{receiver}/errback"
    return task


async def create_load(
    session: aiohttp.ClientSession,
    base: str,
    receiver: str,
    rate: float,
    batch: int,
    seconds: float,
    tally: Tally,
) -> float:
    """Creates `rate` tasks per second for `seconds`, in requests of up to `batch` tasks sent
    ten times a second; at most 64 requests in flight (a slow server slows the load down).
    Returns the time the load took."""
    rng = random.Random(1)
    slots = asyncio.Semaphore(64)
    pending: set[asyncio.Task[None]] = set()

    async def send(tasks: list[dict[str, Any]]) -> None:
        try:
            async with session.post(
                f"{base}/v2/create", data=orjson.dumps({"tasks": tasks})
            ) as resp:
                body = await resp.read()
                if resp.status == 200:
                    tally.accepted += [s["key"] for s in orjson.loads(body)]
                    tally.created_per_kind.update(t["task_name"] for t in tasks)
                    tally.news.set()
                elif resp.status in (429, 503):
                    tally.refused += len(tasks)
                else:
                    tally.failed_requests[f"HTTP {resp.status}"] += 1
                    tally.note(f"create {resp.status}: {body[:300]!r}")
        except (aiohttp.ClientError, TimeoutError) as e:
            tally.failed_requests[type(e).__name__] += 1
        finally:
            slots.release()

    start = time.monotonic()
    owed = 0.0
    tick = 0
    while time.monotonic() < start + seconds:
        owed += rate / 10
        count = int(owed)
        owed -= count
        for i in range(0, count, batch):
            await slots.acquire()
            tasks = [task_mix(receiver, rng) for _ in range(min(batch, count - i))]
            job = asyncio.create_task(send(tasks))
            pending.add(job)
            job.add_done_callback(pending.discard)
        tick += 1
        await asyncio.sleep(max(0.0, start + tick / 10 - time.monotonic()))
    elapsed = time.monotonic() - start
    await asyncio.gather(*pending)
    return elapsed


# -- streams -----------------------------------------------------------------------------------


async def follow(
    session: aiohttp.ClientSession, base: str, keys: list[str], tally: Tally
) -> dict[str, str] | None:
    """Follows one status stream until it closes; returns the final status it saw per key,
    or None when it could not be opened."""
    params = [("tasks", k) for k in keys]
    try:
        async with session.get(f"{base}/v2/stream", params=params) as resp:
            if resp.status != 200:
                tally.streams_refused[f"HTTP {resp.status}"] += 1
                tally.note(f"stream {resp.status}: {(await resp.read())[:300]!r}")
                return None
            tally.streams_opened += 1
            finals: dict[str, str] = {}
            first = True
            async for line in resp.content:
                if not line.strip():
                    continue  # keep-alive
                statuses = orjson.loads(line)
                for status in statuses if first else [statuses]:
                    if status["status"] in ENDED:
                        finals[status["key"]] = status["status"]
                first = False
            return finals
    except (aiohttp.ClientError, TimeoutError) as e:
        tally.streams_refused[type(e).__name__] += 1
        return None


async def open_streams(
    session: aiohttp.ClientSession,
    base: str,
    anchor: str,
    count: int,
    per_second: float,
    tally: Tally,
) -> list[asyncio.Task[tuple[list[str], dict[str, str] | None]]]:
    """Opens `count` streams at `per_second`, each over the anchor and three recent keys."""
    rng = random.Random(2)
    streams = []

    async def one(keys: list[str]) -> tuple[list[str], dict[str, str] | None]:
        return keys, await follow(session, base, keys, tally)

    start = time.monotonic()
    for i in range(count):
        recent = tally.accepted[-500:]
        keys = [anchor, *rng.sample(recent, min(3, len(recent)))]
        streams.append(asyncio.create_task(one(keys)))
        await asyncio.sleep(max(0.0, start + (i + 1) / per_second - time.monotonic()))
    return streams


# -- watching the server -----------------------------------------------------------------------


async def watch(server: ServerProcess, tally: Tally, stop: asyncio.Event) -> None:
    """Samples the memory of the server and its workers twice a second."""
    while not stop.is_set():
        tally.peak_rss_kb = max(tally.peak_rss_kb, server.rss_kb())
        tally.peak_server_rss_kb = max(tally.peak_server_rss_kb, rss_kb([server.pid]))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def streams_open(session: aiohttp.ClientSession, base: str) -> int:
    async with session.get(f"{base}/healthz") as resp:
        return (await resp.json())["streams"]


# -- ending --------------------------------------------------------------------------------------


async def final_statuses(
    session: aiohttp.ClientSession, base: str, keys: list[str], deadline: float
) -> dict[str, str]:
    """The status of every key once ended (or when the deadline passes); a key the server
    does not know is missing from the answer."""
    finals: dict[str, str] = {}
    todo = list(keys)
    while todo and time.monotonic() < deadline:
        chunks = [todo[i : i + STATUS_CHUNK] for i in range(0, len(todo), STATUS_CHUNK)]
        for chunk in chunks:
            for key, status in (await query(session, base, chunk)).items():
                if status in ENDED:
                    finals[key] = status
        todo = [k for k in todo if k not in finals]
        if todo:
            await asyncio.sleep(0.5)
    return finals


async def query(session: aiohttp.ClientSession, base: str, keys: list[str]) -> dict[str, str]:
    async with session.post(f"{base}/v2/status", data=orjson.dumps({"tasks": keys})) as resp:
        if resp.status == 200:
            return {s["key"]: s["status"] for s in await resp.json()}
        if resp.status == 404 and len(keys) > 1:  # some key is unknown: ask one by one
            out: dict[str, str] = {}
            for key in keys:
                out.update(await query(session, base, [key]))
            return out
        return {}


async def run(args: argparse.Namespace) -> int:
    tally = Tally()
    release = asyncio.Event()
    receiver_runner, receiver = await start_receiver(tally, release)
    tmp = tempfile.TemporaryDirectory(prefix="taskstream-load-")
    hold = args.seconds + args.drain + 60  # the anchor's download must outlive the load
    server = ServerProcess(
        Path(tmp.name) / "data",
        workers=args.workers,
        args=(
            "--allow-private-networks",
            "--max-streams",
            str(args.streams + 100),
            "--fetch-timeout",
            str(hold),
        ),
    )
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    session = aiohttp.ClientSession(connector=connector, headers=AUTH, timeout=timeout)
    stop_watch = asyncio.Event()
    try:
        await server.start()
        start_rss = server.rss_kb()
        watcher = asyncio.create_task(watch(server, tally, stop_watch))
        async with session.post(
            f"{server.url}/v2/create",
            data=orjson.dumps(
                {"tasks": [{"task_name": "image.info", "url": f"{receiver}/anchor.png"}]}
            ),
        ) as resp:
            assert resp.status == 200, await resp.text()
            anchor = (await resp.json())[0]["key"]
        print(
            f"taskstream load test: {args.seconds:g} s, {args.rate:g} tasks/s, {args.streams:,} "
            f"streams, {args.workers} workers, {os.cpu_count()} CPUs, "
            "loopback",
            flush=True,
        )

        load = asyncio.create_task(
            create_load(session, server.url, receiver, args.rate, args.batch, args.seconds, tally)
        )
        if not await tally.wait_until(lambda: len(tally.accepted) >= 10, time.monotonic() + 30):
            raise RuntimeError("the server accepted no task in 30 s")
        streams = await open_streams(
            session, server.url, anchor, args.streams, args.stream_rate, tally
        )
        opening = time.monotonic() + 30
        while tally.streams_opened + sum(tally.streams_refused.values()) < args.streams:
            if time.monotonic() > opening:
                break
            await asyncio.sleep(0.1)
        began = time.monotonic()
        while not load.done():  # the streams held while the load runs
            held = await streams_open(session, server.url)
            if tally.fewest_streams_open is None or held < tally.fewest_streams_open:
                tally.fewest_streams_open = held
            await asyncio.sleep(1)
            if int(time.monotonic() - began) % 10 == 0:
                print(
                    f"  {time.monotonic() - began:4.0f} s: {len(tally.accepted):,} tasks accepted, "
                    f"{len(tally.deliveries):,} callbacks received, {held:,} streams open, "
                    f"{server.rss_kb() / 1024:,.0f} MB",
                    flush=True,
                )
        elapsed = await load
        release.set()

        deadline = time.monotonic() + args.drain
        keys = [anchor, *tally.accepted]
        finals = await final_statuses(session, server.url, keys, deadline)
        owed = {k for k in tally.accepted if k in finals}
        await tally.wait_until(lambda: owed <= tally.deliveries.keys(), deadline)
        done, _ = await asyncio.wait(streams, timeout=max(0.1, deadline - time.monotonic()))
        for stream in streams:
            if stream not in done:
                stream.cancel()
                tally.streams_incomplete += 1
                continue
            want, seen = stream.result()
            if seen is None:
                continue
            if set(seen) == set(want):
                tally.streams_complete += 1
            else:
                tally.streams_incomplete += 1
            tally.stream_mismatches += sum(seen[k] != finals.get(k) for k in seen)
        anchor_final = finals.get(anchor, "not ended")
    finally:
        stop_watch.set()
        await session.close()
        server.stop()
        await receiver_runner.cleanup()
        tmp.cleanup()
    await watcher
    return report(args, tally, finals, owed, elapsed, start_rss, anchor_final)


def report(
    args: argparse.Namespace,
    tally: Tally,
    finals: dict[str, str],
    owed: set[str],
    elapsed: float,
    start_rss: int,
    anchor_final: str,
) -> int:
    accepted = len(tally.accepted)
    ended = sum(k in finals for k in tally.accepted)
    lost = accepted - ended
    outcomes = Counter(finals[k] for k in tally.accepted if k in finals)
    delivered = len(owed & set(tally.deliveries))
    duplicates = sum(len(v) - 1 for v in tally.deliveries.values())
    wrong_event = sum(tally.delivered_status.get(k) != finals.get(k) for k in owed)
    mix = ", ".join(f"{n} {name}" for name, n in tally.created_per_kind.most_common())
    lines = [
        f"tasks accepted:         {accepted:,} in {elapsed:.1f} s ({accepted / elapsed:,.0f}/s; "
        f"{mix})",
        f"  refused (429/503):    {tally.refused:,}   failed requests: "
        f"{sum(tally.failed_requests.values()):,} {dict(tally.failed_requests) or ''}",
        f"tasks ended:            {ended:,} (success {outcomes['success']:,}, "
        f"error {outcomes['error']:,})",
        f"tasks lost:             {lost:,}",
        f"callbacks owed:         {len(owed):,}   delivered: {delivered:,}   "
        f"duplicates: {duplicates:,}   bad signatures: {tally.bad_signatures:,}   "
        f"wrong event: {wrong_event:,}",
        f"streams held:           {tally.streams_opened:,} of {args.streams:,} "
        f"(fewest open during the load: {tally.fewest_streams_open or 0:,}; refused: "
        f"{dict(tally.streams_refused) or 0})",
        f"  anchor task: {anchor_final}   saw every final status: {tally.streams_complete:,}   "
        f"missed some: "
        f"{tally.streams_incomplete:,}   final status differing from /v2/status: "
        f"{tally.stream_mismatches:,}",
        f"peak memory:            {tally.peak_rss_kb / 1024:,.0f} MB for the server, its fork "
        f"server and workers (server process alone {tally.peak_server_rss_kb / 1024:,.0f} MB; "
        f"{start_rss / 1024:,.0f} MB at start)",
    ]
    lines += [f"  unexpected answer: {note}" for note in tally.notes]
    print("\n".join(lines))
    failed = (
        lost
        or delivered < len(owed)
        or tally.bad_signatures
        or wrong_event
        or tally.streams_incomplete
        or tally.stream_mismatches
        or tally.streams_opened < args.streams
        or anchor_final != "success"
    )
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load (60)")
    parser.add_argument("--rate", type=float, default=300.0, help="tasks created per second (300)")
    parser.add_argument("--batch", type=int, default=5, help="most tasks per create request (5)")
    parser.add_argument("--streams", type=int, default=2000, help="status streams held (2000)")
    parser.add_argument(
        "--stream-rate", type=float, default=500.0, help="streams opened per second (500)"
    )
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (2)")
    parser.add_argument(
        "--drain", type=float, default=120.0, help="seconds to wait for the ends (120)"
    )
    args = parser.parse_args()
    limits = {"seconds": 600, "rate": 5000, "streams": 20_000, "drain": 600, "workers": 64}
    for name, most in limits.items():
        if not 0 < getattr(args, name) <= most:
            parser.error(f"--{name} must be between 0 and {most}")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sys.exit(uvloop.run(run(args)))


if __name__ == "__main__":
    main()
