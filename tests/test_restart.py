"""A restart resumes what the store holds: queued tasks run, executing ones run again."""

from __future__ import annotations

import asyncio
import time

import orjson

from tests.conftest import Api


async def test_restart_runs_queued_and_interrupted_tasks(make_api, tmp_path) -> None:
    api: Api = await make_api(workers=1, concurrency=1)
    release = tmp_path / "release"
    created = await api.create_ok(
        [{"task_name": "test.partial", "release": str(release)}]
        + [{"task_name": "hello", "name": "q"}] * 3
    )
    keys = [s["key"] for s in created]
    for _ in range(100):
        _, statuses = await api.status(keys)
        if statuses[0]["status"] == "executing":
            break
        await asyncio.sleep(0.02)
    assert [s["status"] for s in statuses] == ["executing", "queued", "queued", "queued"]
    started = time.monotonic()
    await api.client.close()
    assert time.monotonic() - started < 5
    release.write_text("go")

    restarted: Api = await make_api(workers=1)
    _, finals = await restarted.status(keys, block="true", details="true")
    assert [s["status"] for s in finals] == ["success"] * 4
    assert finals[0]["attempts"] == 2, finals[0]
    assert [s["result"] for s in finals[1:]] == ["Hello q"] * 3


async def test_restart_delivers_owed_callbacks(make_api, receiver) -> None:
    receiver.fail_first = 1
    api: Api = await make_api(callback_retry_scale=0.2)  # the retry is 1 s after the failure
    (final,) = await api.create_ok(
        [{"task_name": "hello", "name": "cb", "url_callback": receiver.url()}], block=True
    )
    for _ in range(200):
        if receiver.requests:
            break
        await asyncio.sleep(0.01)
    await api.client.close()
    assert len(receiver.requests) == 1

    restarted: Api = await make_api(callback_retry_scale=0.2)
    headers, body = await asyncio.wait_for(receiver.arrived.get(), 20)
    assert headers["webhook-id"] == receiver.requests[0][0]["webhook-id"]
    assert orjson.loads(body) == final
    await restarted.client.close()
