"""create_stream, status_stream and /v2/stream: newline-delimited statuses read line by line
as they arrive."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tests.conftest import AUTH, Api, assert_status


async def read_lines(resp: Any) -> list[Any]:
    """Every line of a stream, parsed on its own as it arrives."""
    lines = []
    while True:
        line = await asyncio.wait_for(resp.content.readline(), 20)
        if not line:
            return lines
        assert line.endswith(b"\n")
        if line.strip():
            lines.append(orjson.loads(line))


async def test_create_stream_sends_first_list_then_each_change(api: Api) -> None:
    body = {
        "tasks": [{"task_name": "hello", "name": "John"}, {"task_name": "hello", "name": "Jane"}]
    }
    resp = await api.client.post("/v2/create_stream", data=orjson.dumps(body), headers=AUTH)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/x-ndjson")
    first, *updates = await read_lines(resp)
    assert isinstance(first, list) and len(first) == 2
    keys = [s["key"] for s in first]
    for s in first + updates:
        assert_status(s)
    finals = {s["key"]: s for s in updates if s["status"] == "success"}
    assert finals[keys[0]]["result"] == "Hello John"
    assert finals[keys[1]]["result"] == "Hello Jane"
    for key in keys:
        seen = [s["status"] for s in updates if s["key"] == key]
        assert seen[-1] == "success"
        assert seen == sorted(seen, key=["queued", "executing", "success"].index)


async def test_status_stream_delivers_progress_lines_as_they_happen(api: Api) -> None:
    (created,) = await api.create_ok([{"task_name": "test.sleep", "seconds": 1.0}])
    resp = await api.client.get("/v2/stream", params={"tasks": created["key"]}, headers=AUTH)
    first_line = await asyncio.wait_for(resp.content.readline(), 10)
    assert orjson.loads(first_line)[0]["key"] == created["key"]
    progress_seen = []
    while True:
        line = await asyncio.wait_for(resp.content.readline(), 10)
        status = orjson.loads(line)
        if status["status"] == "executing":
            progress_seen.append(status["progress"])
        if status["status"] == "success":
            break
    assert await resp.content.read() == b""
    assert len(progress_seen) >= 3, progress_seen
    assert progress_seen == sorted(progress_seen)
    assert max(progress_seen) > 0


async def test_partial_result_is_streamed_while_executing(api: Api, tmp_path) -> None:
    release = tmp_path / "release"
    (created,) = await api.create_ok([{"task_name": "test.partial", "release": str(release)}])
    resp = await api.client.post(
        "/v2/status_stream", data=orjson.dumps({"tasks": [created["key"]]}), headers=AUTH
    )
    (status,) = orjson.loads(await asyncio.wait_for(resp.content.readline(), 10))
    while not status.get("result"):
        status = orjson.loads(await asyncio.wait_for(resp.content.readline(), 10))
    assert status["status"] == "executing"
    assert status["result"] == {"duration": 12.5}
    _, (polled,) = await api.status([created["key"]])
    assert polled["result"] == {"duration": 12.5}
    release.write_text("go")
    rest = await read_lines(resp)
    assert rest[-1]["status"] == "success"
    assert rest[-1]["result"] == {"duration": 12.5, "frames": 3.0}


async def test_stream_over_ended_tasks_sends_first_line_and_closes(api: Api) -> None:
    created = await api.create_ok(
        [{"task_name": "hello", "name": "a"}, {"task_name": "hello"}], block=True
    )
    keys = [s["key"] for s in created]
    resp = await api.client.get(
        "/v2/status_stream", params=[("tasks", k) for k in keys], headers=AUTH
    )
    lines = await read_lines(resp)
    assert len(lines) == 1
    assert [s["status"] for s in lines[0]] == ["success", "error"]


async def test_a_client_that_disconnects_does_not_affect_its_tasks(api: Api) -> None:
    body = {"tasks": [{"task_name": "test.sleep", "seconds": 0.5}]}
    resp = await api.client.post("/v2/create_stream", data=orjson.dumps(body), headers=AUTH)
    (first,) = orjson.loads(await resp.content.readline())
    resp.close()
    _, (final,) = await api.status([first["key"]], block="true")
    assert final["status"] == "success"


async def test_idle_stream_sends_keepalive_newlines(make_api, tmp_path) -> None:
    api = await make_api(stream_keepalive=0.1)
    release = tmp_path / "release"
    (created,) = await api.create_ok([{"task_name": "test.partial", "release": str(release)}])
    resp = await api.client.get("/v2/stream", params={"tasks": created["key"]}, headers=AUTH)
    await resp.content.readline()
    blanks = 0
    while blanks < 3:
        line = await asyncio.wait_for(resp.content.readline(), 10)
        if line == b"\n":
            blanks += 1
    release.write_text("go")
    rest = await read_lines(resp)
    assert rest[-1]["status"] == "success"


async def test_many_concurrent_streams_all_get_every_final_status(api: Api) -> None:
    created = await api.create_ok([{"task_name": "test.sleep", "seconds": 0.3}] * 4)
    keys = [s["key"] for s in created]

    async def follow() -> set[str]:
        resp = await api.client.get("/v2/stream", params=[("tasks", k) for k in keys], headers=AUTH)
        lines = await read_lines(resp)
        return {s["key"] for s in lines[1:] if s["status"] == "success"} | {
            s["key"] for s in lines[0] if s["status"] == "success"
        }

    results = await asyncio.gather(*(follow() for _ in range(50)))
    assert all(r == set(keys) for r in results)


async def test_open_streams_per_account_are_limited(make_api, tmp_path) -> None:
    api = await make_api(max_streams=2)
    release = tmp_path / "release"
    (created,) = await api.create_ok([{"task_name": "test.partial", "release": str(release)}])
    held = []
    for _ in range(2):
        resp = await api.client.get("/v2/stream", params={"tasks": created["key"]}, headers=AUTH)
        await resp.content.readline()
        held.append(resp)
    refused = await api.client.get("/v2/stream", params={"tasks": created["key"]}, headers=AUTH)
    assert refused.status == 429
    body = {"tasks": [{"task_name": "hello", "name": "x"}]}
    refused = await api.client.post("/v2/create_stream", data=orjson.dumps(body), headers=AUTH)
    assert refused.status == 429
    release.write_text("go")
    for resp in held:
        await read_lines(resp)
    again = await api.client.get("/v2/stream", params={"tasks": created["key"]}, headers=AUTH)
    assert again.status == 200
    await read_lines(again)
