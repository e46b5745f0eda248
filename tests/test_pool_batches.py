"""The pool sends queued jobs of a quick kind to a worker several to a message. Each job still
gets its own outcome, its own time limit, and a crash fails only the job that was running: the
jobs behind it run on the replacement worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.pool import MAX_SHARED, TaskTimedOut, WorkerDied, WorkerPool


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(1)
    await pool.start()
    yield pool
    await pool.close()


def quick(name: str, **params: Any) -> dict[str, Any]:
    return {"name": name, "crash": False, "hang": 0.0, **params}


async def run(pool: WorkerPool, kind: str, params: dict[str, Any], limit: float = 5) -> Any:
    return await pool.wait(pool.submit(kind, params, {}, "/tmp", lambda pct, partial: None, limit))


async def queued_behind_a_busy_worker(
    pool: WorkerPool, jobs: list[dict[str, Any]]
) -> tuple[list[Any], int]:
    """Runs `jobs` as one burst while the only worker is busy, so they queue up together;
    returns their outcomes and how many were still queued once the worker took its message."""
    assert await run(pool, "test.quick", quick("learn")) == ("done", "learn")
    busy = asyncio.create_task(run(pool, "test.sleep", {"seconds": 0.3}))
    await asyncio.sleep(0.05)
    burst = [asyncio.create_task(run(pool, "test.quick", p, limit=0.5)) for p in jobs]
    await asyncio.sleep(0)
    assert len(pool._pending) == len(jobs)
    assert (await busy)[0] == "done"
    left = len(pool._pending)
    return await asyncio.gather(*burst, return_exceptions=True), left


async def test_queued_quick_jobs_share_a_message_and_each_gets_its_outcome(pool) -> None:
    names = [f"job {i}" for i in range(40)]
    outcomes, left = await queued_behind_a_busy_worker(pool, [quick(n) for n in names])
    assert outcomes == [("done", n) for n in names]
    assert left == len(names) - MAX_SHARED


async def test_a_crash_in_a_shared_message_fails_only_the_running_job(pool) -> None:
    first_pid = pool.pids[0]
    jobs = [quick("a"), quick("b"), quick("boom", crash=True), quick("c"), quick("d")]
    outcomes, _ = await queued_behind_a_busy_worker(pool, jobs)
    assert outcomes[:2] == [("done", "a"), ("done", "b")]
    assert isinstance(outcomes[2], WorkerDied) and "signal 9" in str(outcomes[2])
    assert outcomes[3:] == [("done", "c"), ("done", "d")]
    assert pool.pids and pool.pids[0] != first_pid


async def test_each_job_in_a_shared_message_has_its_own_time_limit(pool) -> None:
    jobs = [quick("a", hang=0.3), quick("stuck", hang=5.0), quick("b", hang=0.3)]
    outcomes, _ = await queued_behind_a_busy_worker(pool, jobs)
    assert outcomes[0] == ("done", "a")
    assert isinstance(outcomes[1], TaskTimedOut)
    assert outcomes[2] == ("done", "b")


async def test_slow_kinds_travel_alone(pool) -> None:
    assert (await run(pool, "test.sleep", {"seconds": 0.01}))[0] == "done"
    assert not pool.is_quick("test.sleep")
    assert not pool.is_quick("test.quick")  # never seen: assumed slow
