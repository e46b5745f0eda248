"""Fixtures that start the real server on a 127.0.0.1 socket with small limits, a tiny origin
serving media files, and a callback receiver; plus the assert helpers of the API's contracts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server.app import create_app
from server.cli import _bootstrap
from server.config import Config

SECRET = "test-secret"
AUTH = {"Authorization": f"Secret {SECRET}"}
KEY_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Api:
    """The running server and a client for it."""

    client: TestClient
    config: Config

    @property
    def url(self) -> str:
        return self.config.base_url

    async def create(
        self, tasks: Any, headers: dict[str, str] | None = None, **body: Any
    ) -> tuple[int, Any]:
        resp = await self.client.post(
            "/v2/create", data=orjson.dumps({"tasks": tasks, **body}), headers=headers or AUTH
        )
        return resp.status, await resp.json(content_type=None)

    async def create_ok(self, tasks: Any, **body: Any) -> list[dict[str, Any]]:
        status, statuses = await self.create(tasks, **body)
        assert status == 200, statuses
        return statuses

    async def run(self, task: dict[str, Any]) -> dict[str, Any]:
        """Creates one task with block=true and returns its final status."""
        (final,) = await self.create_ok([task], block=True)
        return final

    async def status(self, keys: list[str], **query: str) -> tuple[int, Any]:
        params = [("tasks", k) for k in keys] + list(query.items())
        resp = await self.client.get("/v2/status", params=params, headers=AUTH)
        return resp.status, await resp.json(content_type=None)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    def make(**overrides: Any) -> Config:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "workers": 2,
            "secret": SECRET,
            "allow_private_networks": True,
            "port": free_port(),
            "callback_retry_scale": 0.01,
            "callback_timeout": 2.0,
            "fetch_timeout": 10.0,
        }
        values.update(overrides)
        return Config(**values)

    return make


@pytest.fixture
async def make_api(
    aiohttp_client: Any, make_config: Callable[..., Config]
) -> Callable[..., Awaitable[Api]]:
    """Starts a server built with `Config` overrides; the default is `api`."""

    async def make(**overrides: Any) -> Api:
        config = make_config(**overrides)
        await _bootstrap(config)
        client = await aiohttp_client(
            create_app(config), server_kwargs={"host": "127.0.0.1", "port": config.port}
        )
        return Api(client, config)

    return make


@pytest.fixture
async def api(make_api: Callable[..., Awaitable[Api]]) -> Api:
    return await make_api()


@dataclass
class Origin:
    """A tiny HTTP origin serving the files of a folder, with their URLs."""

    root: Path
    base: str

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def add(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return self.url(name)


@pytest.fixture
async def origin(tmp_path: Path) -> Any:
    root = tmp_path / "origin"
    root.mkdir()
    app = web.Application()
    app.router.add_static("/", root)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield Origin(root, str(server.make_url("")).rstrip("/"))
    await server.close()


@dataclass
class Receiver:
    """A callback endpoint that records each POST and fails the first `fail_first` ones."""

    base: str
    fail_first: int = 0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Queue[tuple[dict[str, str], bytes]] = field(default_factory=asyncio.Queue)

    def url(self, path: str = "hook") -> str:
        return f"{self.base}/{path}"


@pytest.fixture
async def receiver() -> Any:
    state = Receiver(base="")

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        item = (dict(request.headers), body)
        state.requests.append(item)
        if len(state.requests) <= state.fail_first:
            return web.Response(status=500, text="not now")
        state.arrived.put_nowait(item)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{path:.*}", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.base = str(server.make_url("")).rstrip("/")
    yield state
    await server.close()


def assert_error_body(body: Any, name: str, location: str | None = None) -> None:
    """The reference's error body, naming `name`."""
    assert body["status"] == "error", body
    assert isinstance(body["errors"], list) and body["errors"], body
    for error in body["errors"]:
        assert set(error) == {"name", "location", "description"}, error
        assert all(isinstance(v, str) and v for v in error.values()), error
    names = [e["name"] for e in body["errors"]]
    assert name in names, body
    if location:
        assert body["errors"][names.index(name)]["location"] == location, body


def assert_status(status: dict[str, Any], expected: str | None = None) -> None:
    """A status object as the reference defines it."""
    assert status["status"] in ("queued", "executing", "success", "error"), status
    if expected:
        assert status["status"] == expected, status
    key = status["key"]
    assert len(key) == 26 and set(key) <= KEY_CHARS, key
    assert "progress" in status
    assert "queued" in status["events"], status
    for stamp in status["events"].values():
        assert stamp.endswith("+00:00") and len(stamp) == 32, stamp
    if status["status"] == "success":
        assert "result" in status and "error" not in status
    if status["status"] == "error":
        assert "error" in status and "result" not in status
