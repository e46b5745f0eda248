"""Secrets, API keys with their Referer whitelist, CORS for browser pages, and the accounts
command changing keys while the server runs."""

from __future__ import annotations

import asyncio
import sys

import orjson
import pytest

from server import components
from tests.conftest import Api, assert_error_body, assert_status

HELLO = {"tasks": [{"task_name": "hello", "name": "web"}]}


async def accounts_cli(api: Api, *args: str) -> tuple[int, str]:
    """Runs `taskstream accounts` on the server's data dir, as a separate process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "accounts",
        "--data-dir",
        str(api.config.data_dir),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def add_key(api: Api, *referrers: str) -> str:
    args = ["add-key", "--secret", "test-secret"]
    for r in referrers:
        args += ["--referrer", r]
    code, out = await accounts_cli(api, *args)
    assert code == 0, out
    return out.strip().splitlines()[-1]


async def test_secret_in_body_header_and_query(api: Api) -> None:
    body = {**HELLO, "secret": "test-secret"}
    resp = await api.client.post("/v2/create", data=orjson.dumps(body))
    assert resp.status == 200
    (status,) = await resp.json()
    for params, headers in (
        ({"secret": "test-secret"}, {}),
        ({}, {"Authorization": "Secret test-secret"}),
    ):
        resp = await api.client.get(
            "/v2/status", params={"tasks": status["key"], **params}, headers=headers
        )
        assert resp.status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Secret wrong"},
        {"Authorization": "Bearer x"},
        {"Authorization": "Api-Key nope"},
    ],
)
async def test_bad_or_missing_credentials_get_401(api: Api, headers) -> None:
    resp = await api.client.post("/v2/create", data=orjson.dumps(HELLO), headers=headers)
    assert resp.status == 401
    body = await resp.json()
    assert body["status"] == "error" and body["errors"][0]["name"] in ("secret", "api_key")


async def test_api_key_from_allowed_and_refused_origins(api: Api) -> None:
    key = await add_key(api, "http://app.example:8000")
    allowed = await api.client.post(
        "/v2/create",
        data=orjson.dumps({**HELLO, "api_key": key}),
        headers={"Referer": "http://app.example:8000/a/b.html"},
    )
    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://app.example:8000"
    assert_status((await allowed.json())[0])
    via_header = await api.client.post(
        "/v2/create",
        data=orjson.dumps(HELLO),
        headers={"Authorization": f"Api-Key {key}", "Origin": "http://app.example:8000"},
    )
    assert via_header.status == 200
    for origin in ("http://app.example:8001", "https://app.example:8000", "http://evil.example"):
        refused = await api.client.post(
            "/v2/create",
            data=orjson.dumps(HELLO),
            headers={"Authorization": f"Api-Key {key}", "Origin": origin},
        )
        assert refused.status == 401
        assert "Access-Control-Allow-Origin" not in refused.headers
        assert_error_body(await refused.json(), "api_key")
    no_referer = await api.client.post(
        "/v2/create", data=orjson.dumps(HELLO), headers={"Authorization": f"Api-Key {key}"}
    )
    assert no_referer.status == 401


async def test_cors_preflight_and_browser_request(api: Api) -> None:
    key = await add_key(api, "https://app.example")
    pre = await api.client.options(
        "/v2/create_stream",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert pre.status == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()
    refused = await api.client.options(
        "/v2/create",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert refused.status == 401
    assert "Access-Control-Allow-Origin" not in refused.headers
    # A page's XMLHttpRequest: text/plain body, api_key inside, Origin header.
    resp = await api.client.post(
        "/v2/create_stream",
        data=orjson.dumps({**HELLO, "api_key": key}),
        headers={"Origin": "https://app.example", "Content-Type": "text/plain;charset=UTF-8"},
    )
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert (await resp.read()).count(b"\n") >= 2


async def test_another_accounts_api_key_looks_unknown(api: Api) -> None:
    store = api.client.app[components.STORE]
    other = await store.create_account("other-secret")
    other_key = await store.add_api_key(other, ["https://app.example"])
    (mine,) = await api.create_ok([{"task_name": "hello", "name": "a"}])
    resp = await api.client.get(
        "/v2/status",
        params={"tasks": mine["key"]},
        headers={"Authorization": f"Api-Key {other_key}", "Origin": "https://app.example"},
    )
    assert resp.status == 404


async def test_keys_added_and_removed_while_serving_take_effect_at_once(api: Api) -> None:
    key = await add_key(api, "https://a.example")
    headers = {"Authorization": f"Api-Key {key}", "Origin": "https://a.example"}
    resp = await api.client.post("/v2/create", data=orjson.dumps(HELLO), headers=headers)
    assert resp.status == 200
    code, out = await accounts_cli(api, "list")
    assert code == 0 and key in out and "https://a.example" in out
    code, out = await accounts_cli(api, "remove-key", key)
    assert code == 0, out
    resp = await api.client.post("/v2/create", data=orjson.dumps(HELLO), headers=headers)
    assert resp.status == 401


async def test_accounts_create_prints_a_working_secret(api: Api) -> None:
    code, out = await accounts_cli(api, "create")
    assert code == 0
    secret = out.strip().splitlines()[-1]
    resp = await api.client.post(
        "/v2/create", data=orjson.dumps(HELLO), headers={"Authorization": f"Secret {secret}"}
    )
    assert resp.status == 200
    code, out = await accounts_cli(api, "add-key", "--secret", secret, "--referrer", "nonsense")
    assert code != 0 and "nonsense" in out
