"""Crashes of a real server process: `kill -9` of the server while tasks run, and of one worker
process mid-task. Every accepted task ends, and every callback owed is delivered."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import random
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import Receiver, assert_status
from tests.serverproc import SECRET, Client, ServerProcess, alive

Start = Callable[..., Awaitable[tuple[ServerProcess, Client]]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """Starts a server subprocess (test kinds, private networks allowed, fast callback retries)
    with extra flags, and a client for it; stops both afterwards, leaving no process behind."""
    servers: list[ServerProcess] = []
    clients: list[Client] = []

    async def make(*args: str, workers: int = 2) -> tuple[ServerProcess, Client]:
        server = ServerProcess(
            tmp_path / "data",
            workers=workers,
            args=("--allow-private-networks", "--callback-timeout", "2", *args),
        )
        servers.append(server)
        await server.start()
        client = Client(server.url)
        clients.append(client)
        return server, client

    yield make
    for client in clients:
        await client.close()
    for server in servers:
        server.stop()
        print(server.log)  # shown by pytest when the test failed


def stored(server: ServerProcess, keys: list[str]) -> dict[str, tuple[str, int]]:
    """(status, attempts) of tasks as committed in the store file, read by another process."""
    db = sqlite3.connect(f"file:{server.data_dir / 'taskstream.sqlite3'}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(keys))
        rows = db.execute(f"SELECT key, status, attempts FROM tasks WHERE key IN ({marks})", keys)
        return {key: (status, attempts) for key, status, attempts in rows}
    finally:
        db.close()


async def wait_stored(server: ServerProcess, keys: list[str], attempts: int) -> None:
    """Waits until the store holds `keys` as executing in their `attempts`-th run, so a kill
    from now on interrupts a run the store knows about."""
    deadline = time.monotonic() + 10
    while stored(server, keys) != {k: ("executing", attempts) for k in keys}:
        assert time.monotonic() < deadline, stored(server, keys)
        await asyncio.sleep(0.02)


def running(statuses: list[dict[str, Any]]) -> bool:
    """Every task is on a worker: executing with progress reported by the worker."""
    return all(s["status"] == "executing" and s["progress"] >= 10 for s in statuses)


def assert_signed(headers: dict[str, str], body: bytes) -> None:
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    digest = hmac.new(SECRET.encode(), signed, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()


async def test_kill_9_of_the_server_runs_queued_and_interrupted_tasks_after_restart(
    start: Start,
) -> None:
    server, client = await start("--concurrency", "2")
    created = await client.create_ok(
        [{"task_name": "test.sleep", "seconds": 2.5}] * 2
        + [{"task_name": "hello", "name": f"q{i}"} for i in range(4)]
        + [{"task_name": "test.sleep", "seconds": 0.2}] * 2
    )
    keys = [s["key"] for s in created]
    long_keys, queued_keys = keys[:2], keys[2:]
    statuses = await client.wait_for(long_keys, running)
    await wait_stored(server, long_keys, attempts=1)
    statuses = await client.statuses(queued_keys)
    assert {s["status"] for s in statuses} == {"queued"}, statuses

    server.kill()
    assert not alive(server.pid)
    await server.restart()

    finals = await client.statuses(keys, block=True, details=True)
    for final in finals:
        assert_status(final, "success")
    assert [f["attempts"] for f in finals] == [2, 2, 1, 1, 1, 1, 1, 1]
    assert [f["result"] for f in finals] == ["slept"] * 2 + [f"Hello q{i}" for i in range(4)] + [
        "slept"
    ] * 2


async def test_a_task_interrupted_max_attempts_times_ends_in_error(
    start: Start, receiver: Receiver
) -> None:
    server, client = await start("--max-attempts", "2")
    (created,) = await client.create_ok(
        [{"task_name": "test.sleep", "seconds": 15, "url_errback": receiver.url("errback")}]
    )
    key = created["key"]
    for attempt in (1, 2):
        await client.wait_for([key], running)
        await wait_stored(server, [key], attempts=attempt)
        server.kill()
        await server.restart()

    (final,) = await client.statuses([key], block=True, details=True)
    assert_status(final, "error")
    assert "interrupted 2 times" in final["error"], final
    assert final["attempts"] == 2
    headers, body = await asyncio.wait_for(receiver.arrived.get(), 10)
    assert orjson.loads(body)["error"] == final["error"]
    assert_signed(headers, body)
    after = await client.create_ok([{"task_name": "hello", "name": "after"}], block=True)
    assert after[0]["result"] == "Hello after"


async def test_callbacks_owed_at_a_kill_9_are_delivered_after_restart(
    start: Start, receiver: Receiver
) -> None:
    # The first three POSTs fail and are retried 1 s later (the schedule's 5 s times 0.2).
    receiver.fail_first = 3
    server, client = await start("--callback-retry-scale", "0.2")
    ended = await client.create_ok(
        [
            {"task_name": "hello", "name": f"cb{i}", "url_callback": receiver.url(f"cb{i}")}
            for i in (0, 1)
        ]
        + [{"task_name": "test.fail", "message": "nope", "url_errback": receiver.url("eb")}],
        block=True,
    )
    (running_task,) = await client.create_ok(
        [{"task_name": "test.sleep", "seconds": 2.0, "url_callback": receiver.url("run")}]
    )
    ended_keys = [s["key"] for s in ended]

    def failed_once(statuses: list[dict[str, Any]]) -> bool:
        return all(
            s["callbacks"]
            and s["callbacks"][0]["attempts"] == 1
            and s["callbacks"][0]["last_error"]
            for s in statuses
        )

    await client.wait_for(ended_keys, failed_once)
    await client.wait_for([running_task["key"]], running)
    await wait_stored(server, [running_task["key"]], attempts=1)
    assert len(receiver.requests) == 3
    first_ids = {orjson.loads(body)["key"]: h["webhook-id"] for h, body in receiver.requests}

    server.kill()
    await server.restart()

    arrived = {}
    for _ in range(4):
        headers, body = await asyncio.wait_for(receiver.arrived.get(), 15)
        assert_signed(headers, body)
        arrived[orjson.loads(body)["key"]] = (headers, orjson.loads(body))
    finals = await client.statuses([*ended_keys, running_task["key"]], details=True)
    assert set(arrived) == {f["key"] for f in finals}
    for final in finals:
        headers, posted = arrived[final["key"]]
        if final["key"] in first_ids:  # the same delivery, retried: the same id
            assert headers["webhook-id"] == first_ids[final["key"]]
        assert posted["status"] == final["status"]
        (delivery,) = final["callbacks"]
        assert delivery["state"] == "delivered", final
    assert arrived[running_task["key"]][1]["result"] == "slept"
    assert arrived[ended_keys[2]][1]["error"] == "nope"
    assert [f["attempts"] for f in finals] == [1, 1, 1, 2]


async def test_kill_9_of_a_worker_retries_its_task_and_the_pool_is_whole_again(
    start: Start,
) -> None:
    server, client = await start()
    workers = await server.wait_workers(2)
    assert len(workers) == 2, workers
    created = await client.create_ok([{"task_name": "test.sleep", "seconds": 2.5}] * 2)
    keys = [s["key"] for s in created]
    await client.wait_for(keys, running)

    os.kill(workers[0], signal.SIGKILL)

    finals = await client.statuses(keys, block=True, details=True)
    assert [f["status"] for f in finals] == ["success", "success"], finals
    assert sorted(f["attempts"] for f in finals) == [1, 2], finals
    replaced = await server.wait_workers(2)
    assert len(replaced) == 2 and workers[0] not in replaced and workers[1] in replaced
    async with client.session.get(f"{server.url}/healthz") as resp:
        assert resp.status == 200
    # Both workers take work again: two new tasks report progress at the same time.
    again = await client.create_ok([{"task_name": "test.sleep", "seconds": 1.0}] * 2)
    await client.wait_for([s["key"] for s in again], running)
    finals = await client.statuses([s["key"] for s in again], block=True)
    assert [f["result"] for f in finals] == ["slept", "slept"]


async def test_kill_9_of_a_worker_on_the_last_attempt_is_a_clear_error(start: Start) -> None:
    server, client = await start("--max-attempts", "1")
    created = await client.create_ok([{"task_name": "test.sleep", "seconds": 2.5}] * 2)
    keys = [s["key"] for s in created]
    await client.wait_for(keys, running)
    workers = await server.wait_workers(2)

    os.kill(workers[1], signal.SIGKILL)

    finals = await client.statuses(keys, block=True, details=True)
    failed = [f for f in finals if f["status"] == "error"]
    ok = [f for f in finals if f["status"] == "success"]
    assert len(failed) == 1 and len(ok) == 1, finals
    assert_status(failed[0], "error")
    assert "worker process running the task was killed by signal 9" in failed[0]["error"]
    assert ok[0]["result"] == "slept" and ok[0]["attempts"] == 1
    assert len(await server.wait_workers(2)) == 2
    after = await client.create_ok([{"task_name": "hello", "name": "next"}], block=True)
    assert after[0]["result"] == "Hello next"


async def test_kill_9_at_random_moments_of_a_create_load_loses_no_accepted_task(
    start: Start,
) -> None:
    server, client = await start("--max-attempts", "5")
    rng = random.Random()
    accepted: list[str] = []
    mix = [
        {"task_name": "hello", "name": "load"},
        {"task_name": "hello", "name": "load"},
        {"task_name": "test.sleep", "seconds": 0.1},
    ]

    async def load(cap: int) -> None:
        """Creates until the server goes away or `cap` tasks are accepted; a create answered
        200 is accepted."""
        while len(accepted) < cap:
            try:
                statuses = await client.create_ok(rng.sample(mix, rng.randint(1, 3)))
            except (aiohttp.ClientError, AssertionError):
                return
            accepted.extend(s["key"] for s in statuses)
            await asyncio.sleep(0.01)  # spread the creates, so kills land during them too

    for round_ in (1, 2):
        loaders = [asyncio.create_task(load(cap=80 * round_)) for _ in range(4)]
        delay = rng.uniform(0.05, 0.6)
        await asyncio.sleep(delay)
        server.kill()
        await asyncio.gather(*loaders)
        print(f"round {round_}: killed after {delay:.2f} s, {len(accepted)} tasks accepted")
        await server.restart()

    assert len(accepted) > 20
    finals = []
    for i in range(0, len(accepted), 500):
        finals += await client.statuses(accepted[i : i + 500], block=True)
    assert [f["key"] for f in finals] == accepted
    assert {f["status"] for f in finals} == {"success"}, [
        f for f in finals if f["status"] != "success"
    ][:3]
