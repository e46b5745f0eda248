"""The worker pool: CPU-heavy tasks leave the server responsive, a dead worker fails only its
own task (which runs again), and a runaway task is stopped at its time limit."""

from __future__ import annotations

import asyncio
import os
import shutil
import time

from server import components
from tests.conftest import Api, assert_status


async def test_cpu_heavy_tasks_do_not_stall_the_event_loop(api: Api) -> None:
    created = await api.create_ok([{"task_name": "test.spin", "seconds": 1.5}] * 2)
    await asyncio.sleep(0.2)
    worst = 0.0
    for _ in range(10):
        start = time.monotonic()
        resp = await api.client.get("/healthz")
        assert resp.status == 200
        worst = max(worst, time.monotonic() - start)
    _, statuses = await api.status([s["key"] for s in created])
    assert [s["status"] for s in statuses] == ["executing", "executing"]
    assert worst < 0.5, worst
    _, finals = await api.status([s["key"] for s in created], block="true")
    assert [s["status"] for s in finals] == ["success", "success"]


async def test_killed_worker_fails_only_its_task_which_runs_again(api: Api, tmp_path) -> None:
    slow = await api.create_ok([{"task_name": "test.sleep", "seconds": 1.0}])
    crash = await api.create_ok([{"task_name": "test.crash_once", "marker": str(tmp_path / "m")}])
    _, (crashed,) = await api.status([crash[0]["key"]], block="true", details="true")
    assert_status(crashed, "success")
    assert crashed["result"] == "survived"
    assert crashed["attempts"] == 2
    _, (other,) = await api.status([slow[0]["key"]], block="true")
    assert other["status"] == "success" and other["result"] == "slept"
    pool = api.client.app[components.POOL]
    assert len(pool.pids) == 2
    after = await api.run({"task_name": "hello", "name": "still here"})
    assert after["result"] == "Hello still here"


async def test_worker_killed_from_outside(api: Api) -> None:
    (created,) = await api.create_ok([{"task_name": "test.sleep", "seconds": 3}])
    pool = api.client.app[components.POOL]
    await asyncio.sleep(0.3)
    for pid in pool.pids:
        os.kill(pid, 9)
    _, (final,) = await api.status([created["key"]], block="true", details="true")
    assert final["status"] == "success"
    assert final["attempts"] == 2


async def test_a_task_that_always_crashes_ends_in_error(make_api) -> None:
    api = await make_api(max_attempts=2)
    final = await api.run({"task_name": "test.crash"})
    assert_status(final, "error")
    assert "killed by signal 9" in final["error"] and "2 times" in final["error"]


async def test_time_limit_stops_a_runaway_task(api: Api) -> None:
    final = await api.run({"task_name": "test.slow", "seconds": 5})
    assert_status(final, "error")
    assert "time limit" in final["error"]
    again = await api.run({"task_name": "hello", "name": "after"})
    assert again["status"] == "success"


async def test_task_error_message_reaches_the_status(api: Api) -> None:
    final = await api.run({"task_name": "test.fail", "message": "the file is broken"})
    assert final["error"] == "the file is broken"


async def test_a_burst_of_quick_tasks_runs_in_batches_and_each_ends_on_its_own(api: Api) -> None:
    learned = await api.run({"task_name": "test.quick", "name": "learn"})
    assert learned["result"] == "learn"  # the pool now knows test.quick is quick
    tasks = [{"task_name": "test.quick", "name": f"n{i}"} for i in range(40)]
    tasks[7] = {"task_name": "test.quick", "crash": True}
    tasks[20] = {"task_name": "test.quick", "hang": 5.0}  # past its 0.5 s time limit
    finals = await api.create_ok(tasks, block=True)
    for i, final in enumerate(finals):
        if i == 7:
            assert_status(final, "error")
            assert "killed by signal 9" in final["error"]
        elif i == 20:
            assert_status(final, "error")
            assert "time limit" in final["error"]
        else:
            assert_status(final, "success")
            assert final["result"] == f"n{i}"
    _, details = await api.status([finals[0]["key"], finals[7]["key"]], details="true")
    assert details[0]["attempts"] == 1 and details[1]["attempts"] == api.config.max_attempts


async def test_an_unexpected_failure_ends_the_task_instead_of_leaving_it_executing(
    api: Api, origin
) -> None:
    url = origin.add("tiny.png", b"not read: the run fails before")
    shutil.rmtree(api.config.data_dir / "work")  # the work folder vanishes under the server
    final = await api.run({"task_name": "image.info", "url": url})
    assert_status(final, "error")
    assert "internal error" in final["error"]
