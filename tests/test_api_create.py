"""POST /v2/create: batches, single objects, blocking, validation and the error body."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import AUTH, Api, assert_error_body, assert_status


async def test_create_returns_queued_statuses_in_request_order(api: Api) -> None:
    statuses = await api.create_ok([{"task_name": "hello", "name": n} for n in ("a", "b", "c")])
    assert len(statuses) == 3
    for s in statuses:
        assert_status(s)
        assert s["status"] in ("queued", "executing", "success")
    assert len({s["key"] for s in statuses}) == 3
    _, final = await api.status([s["key"] for s in statuses], block="true")
    assert [s["result"] for s in final] == ["Hello a", "Hello b", "Hello c"]


async def test_single_task_object_is_accepted(api: Api) -> None:
    (status,) = await api.create_ok({"task_name": "hello", "name": "Jane"}, block=True)
    assert_status(status, "success")
    assert status["result"] == "Hello Jane"
    assert set(status["events"]) == {"queued", "started", "completed"}
    assert status["progress"] is None


async def test_block_waits_for_every_task(api: Api) -> None:
    statuses = await api.create_ok(
        [{"task_name": "test.sleep", "seconds": 0.2}, {"task_name": "hello", "name": "x"}],
        block=True,
    )
    assert [s["status"] for s in statuses] == ["success", "success"]
    assert statuses[0]["result"] == "slept"


async def test_invalid_task_does_not_reject_the_batch(api: Api) -> None:
    statuses = await api.create_ok(
        [
            {"task_name": "hello", "name": "ok"},
            {"task_name": "hello"},
            {"task_name": "hello", "name": "x", "widht": 3},
            {"task_name": "image.info", "url": "ftp://example.com/a.jpg"},
        ],
        block=True,
    )
    assert statuses[0]["status"] == "success"
    assert_status(statuses[1], "error")
    assert statuses[1]["error"] == {"parameters": {"name": ["this field is required"]}}
    assert statuses[2]["error"] == {"parameters": {"widht": ["unknown parameter"]}}
    assert statuses[3]["error"] == {"parameters": {"url": ["must be an http or https URL"]}}
    assert "started" not in statuses[1]["events"]


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({}, "tasks"),
        ({"tasks": []}, "tasks"),
        ({"tasks": "hello"}, "tasks"),
        ({"tasks": [{"task_name": "hello", "name": "a"}, 3]}, "tasks.1"),
        ({"tasks": [{"task_name": "hello", "name": "a"}, {"name": "b"}]}, "tasks.1.task_name"),
        ({"tasks": [{"task_name": "nope"}]}, "tasks.0.task_name"),
        ({"tasks": [{"task_name": 5}]}, "tasks.0.task_name"),
        ({"tasks": {"task_name": "hello", "name": "a"}, "block": "maybe"}, "block"),
    ],
)
async def test_malformed_requests_get_400_naming_the_field(api: Api, body, name) -> None:
    resp = await api.client.post("/v2/create", data=orjson.dumps(body), headers=AUTH)
    assert resp.status == 400
    assert_error_body(await resp.json(), name, "body")


async def test_bad_json_and_non_object_bodies(api: Api) -> None:
    for raw in (b"{not json", b"[1, 2]", b'"tasks"'):
        resp = await api.client.post("/v2/create", data=raw, headers=AUTH)
        assert resp.status == 400
        assert_error_body(await resp.json(), "body", "body")


async def test_body_sent_as_text_plain_is_read_as_json(api: Api) -> None:
    body = orjson.dumps({"secret": "test-secret", "tasks": [{"task_name": "hello", "name": "t"}]})
    resp = await api.client.post(
        "/v2/create", data=body, headers={"Content-Type": "text/plain;charset=UTF-8"}
    )
    assert resp.status == 200
    (status,) = await resp.json()
    assert_status(status)


async def test_too_many_tasks_in_one_batch(make_api) -> None:
    api = await make_api(max_batch=2)
    status, body = await api.create([{"task_name": "hello", "name": "a"}] * 3)
    assert status == 400
    assert_error_body(body, "tasks")
    assert "at most 2" in body["errors"][0]["description"]


async def test_full_queue_answers_503_with_retry_after(make_api) -> None:
    api = await make_api(max_queued=1)
    resp = await api.client.post(
        "/v2/create",
        data=orjson.dumps({"tasks": [{"task_name": "hello", "name": "a"}] * 2}),
        headers=AUTH,
    )
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) > 0
    assert_error_body(await resp.json(), "tasks")


async def test_oversized_body_gets_413(make_api) -> None:
    api = await make_api(max_body_bytes=1000)
    body = orjson.dumps({"tasks": [{"task_name": "hello", "name": "x" * 2000}]})
    resp = await api.client.post("/v2/create", data=body, headers=AUTH)
    assert resp.status == 413
    assert_error_body(await resp.json(), "body")


async def test_task_store_and_metas_are_checked(api: Api) -> None:
    statuses = await api.create_ok(
        [
            {"task_name": "hello", "name": "a", "task_store": {"type": "youtube"}},
            {"task_name": "hello", "name": "b", "task_store": {"type": "floppy"}},
            {"task_name": "hello", "name": "c", "task_metas": "label"},
            {"task_name": "hello", "name": "d", "task_store": {"type": "volatile"}},
        ],
        block=True,
    )
    assert "youtube" in statuses[0]["error"]["parameters"]["task_store.type"][0]
    assert "floppy" in statuses[1]["error"]["parameters"]["task_store.type"][0]
    assert statuses[2]["error"] == {"parameters": {"task_metas": ["must be an object"]}}
    assert statuses[3]["status"] == "success"


async def test_rate_limit_answers_429_with_retry_after(make_api) -> None:
    api = await make_api(rate_limit=1, rate_burst=3)
    assert (await api.create([{"task_name": "hello", "name": "a"}] * 3))[0] == 200
    resp = await api.client.post(
        "/v2/create",
        data=orjson.dumps({"tasks": [{"task_name": "hello", "name": "a"}] * 2}),
        headers=AUTH,
    )
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert_error_body(await resp.json(), "tasks")


async def test_deeply_nested_json_is_refused(api: Api) -> None:
    body = b'{"tasks": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    resp = await api.client.post("/v2/create", data=body, headers=AUTH)
    assert resp.status == 400
    assert_error_body(await resp.json(), "body")
