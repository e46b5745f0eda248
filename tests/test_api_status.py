"""GET and POST /v2/status: lookup, block, details, unknown keys and account isolation."""

from __future__ import annotations

import orjson

from server import components
from tests.conftest import AUTH, SECRET, Api, assert_error_body, assert_status


async def test_get_status_with_repeated_tasks_and_secret_in_query(api: Api) -> None:
    created = await api.create_ok(
        [{"task_name": "hello", "name": "a"}, {"task_name": "hello", "name": "b"}], block=True
    )
    keys = [s["key"] for s in created]
    resp = await api.client.get(
        "/v2/status", params=[("tasks", keys[1]), ("tasks", keys[0]), ("secret", SECRET)]
    )
    assert resp.status == 200
    statuses = await resp.json()
    assert [s["key"] for s in statuses] == [keys[1], keys[0]]
    assert [s["result"] for s in statuses] == ["Hello b", "Hello a"]
    for s in statuses:
        assert_status(s, "success")


async def test_post_status_with_json_list(api: Api) -> None:
    created = await api.create_ok([{"task_name": "hello", "name": "a"}])
    key = created[0]["key"]
    resp = await api.client.post(
        "/v2/status", data=orjson.dumps({"tasks": [key], "block": True}), headers=AUTH
    )
    assert resp.status == 200
    (status,) = await resp.json()
    assert_status(status, "success")


async def test_block_waits_until_the_task_ends(api: Api) -> None:
    created = await api.create_ok([{"task_name": "test.sleep", "seconds": 0.3}])
    code, (status,) = await api.status([created[0]["key"]], block="true")
    assert code == 200
    assert_status(status, "success")
    assert status["result"] == "slept"


async def test_details_add_parameters_store_metas_attempts_and_callbacks(api: Api) -> None:
    (created,) = await api.create_ok(
        [
            {
                "task_name": "hello",
                "name": "a",
                "task_metas": {"project": "p1", "n": 3},
                "task_store": {"type": "volatile"},
            }
        ],
        block=True,
    )
    code, (status,) = await api.status([created["key"]], details="true")
    assert code == 200
    assert status["parameters"] == {"name": "a"}
    assert status["task_name"] == "hello"
    assert status["task_store"] == {"type": "volatile"}
    assert status["task_metas"] == {"project": "p1", "n": 3}
    assert status["attempts"] == 1
    assert status["callbacks"] == []
    _, (plain,) = await api.status([created["key"]])
    assert "parameters" not in plain


async def test_unknown_key_gets_404_naming_it(api: Api) -> None:
    (created,) = await api.create_ok([{"task_name": "hello", "name": "a"}])
    code, body = await api.status([created["key"], "NOPE" * 6 + "AA"])
    assert code == 404
    assert_error_body(body, "tasks.1", "querystring")
    assert "NOPE" in body["errors"][0]["description"]


async def test_missing_and_malformed_tasks(api: Api) -> None:
    code, body = await api.status([])
    assert code == 400
    assert_error_body(body, "tasks", "querystring")
    resp = await api.client.post("/v2/status", data=b'{"tasks": [1, 2]}', headers=AUTH)
    assert resp.status == 400
    assert_error_body(await resp.json(), "tasks", "body")


async def test_another_accounts_key_looks_unknown(api: Api) -> None:
    (created,) = await api.create_ok([{"task_name": "hello", "name": "a"}], block=True)
    other = await api.client.app[components.STORE].create_account("other-secret")
    assert other.id != 1
    resp = await api.client.get(
        "/v2/status",
        params={"tasks": created["key"]},
        headers={"Authorization": "Secret other-secret"},
    )
    assert resp.status == 404
    assert_error_body(await resp.json(), "tasks.0")


async def test_too_many_keys(make_api) -> None:
    api = await make_api(max_batch=2)
    code, body = await api.status(["A" * 26] * 3)
    assert code == 400
    assert_error_body(body, "tasks")
