"""The URL guard: without `--allow-private-networks`, input downloads, redirects and callbacks
never reach loopback, private, link-local, multicast or unspecified addresses, however they are
written (IPv6, IPv4-mapped, names that resolve to them, numeric forms)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from aiohttp.test_utils import TestServer
from yarl import URL

from server.config import Config
from server.fetch import FetchError, download
from server.urlguard import BlockedAddress, GuardedResolver, check_literal_host, is_public
from tests.conftest import Api, Receiver, assert_status, free_port
from tests.mediagen import make_image

NOT_PUBLIC = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "169.254.169.254",  # link-local, where clouds serve instance metadata
    "fe80::1",
    "fe80::1%eth0",
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "ff0e::1",  # a global-scope multicast address is still multicast
    "0.0.0.0",
    "::",
    "::1",
    "255.255.255.255",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible (deprecated, still routed by some stacks)
    "::10.0.0.1",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b:1::a00:1",  # the local-use NAT64 prefix is not globally reachable
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "fc00::1",  # unique local
    "fd12:3456:789a::1",
    "2001:db8::1",  # documentation
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "172.32.0.1",
    "2001:4860:4860::8888",
    "2001:4860::8888",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_not_public(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public(address: str) -> None:
    assert is_public(address)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "[::1]", "::1", "[::ffff:127.0.0.1]", "[fe80::1%25eth0]", "0.0.0.0"]
)
def test_literal_private_hosts_are_refused(host: str) -> None:
    with pytest.raises(BlockedAddress):
        check_literal_host(host)


@pytest.mark.parametrize("host", ["8.8.8.8", "[2001:4860:4860::8888]", "example.com", "localhost"])
def test_public_literals_and_names_pass_the_literal_check(host: str) -> None:
    check_literal_host(host)  # names are the resolver's job


class _Fixed(AbstractResolver):
    """Answers every name with fixed addresses (what a hostile DNS server could answer)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[dict[str, Any]]:
        return [
            {
                "hostname": host,
                "host": a,
                "port": port,
                "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_resolver_keeps_only_public_addresses() -> None:
    resolver = GuardedResolver()
    resolver._inner = _Fixed("10.0.0.1", "93.184.215.14", "::1", "2606:2800:21f:cb07::1")
    resolved = await resolver.resolve("mixed.example", 80)
    assert [r["host"] for r in resolved] == ["93.184.215.14", "2606:2800:21f:cb07::1"]
    resolver._inner = _Fixed("127.0.0.1", "::ffff:10.0.0.1", "169.254.169.254")
    with pytest.raises(BlockedAddress, match=r"rebind\.example"):
        await resolver.resolve("rebind.example", 80)


async def test_resolver_refuses_localhost() -> None:
    resolver = GuardedResolver()
    try:
        with pytest.raises(BlockedAddress):
            await resolver.resolve("localhost", 80, socket.AF_UNSPEC)
    finally:
        await resolver.close()


# -- end to end: a server without --allow-private-networks -----------------------------------


@dataclass
class Watched:
    """An HTTP server on 127.0.0.1 and [::1] (same port) serving one image and counting hits."""

    port: int
    image: bytes
    hits: list[str] = field(default_factory=list)


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[Watched]:
    image = make_image(tmp_path / "w.jpg").read_bytes()
    state = Watched(port=0, image=image)

    async def serve(request: web.Request) -> web.Response:
        state.hits.append(f"{request.method} {request.host}{request.path_qs}")
        return web.Response(body=state.image, content_type="image/jpeg")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    for _ in range(10):
        port = free_port()
        try:
            for host in ("127.0.0.1", "::1"):
                await web.TCPSite(runner, host, port).start()
            break
        except OSError:
            await runner.cleanup()
            runner = web.AppRunner(app)
            await runner.setup()
    state.port = port
    yield state
    await runner.cleanup()


LOOPBACK_FORMS = [
    "127.0.0.1",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[0:0:0:0:0:ffff:7f00:1]",
    "localhost",  # a name resolving to loopback
    "0x7f000001",  # a "name" the system resolver turns into 127.0.0.1
    "0.0.0.0",  # reaches the local host on Linux
]
# Numeric forms the system resolver would also turn into 127.0.0.1; the HTTP client refuses
# them before any lookup.
NON_CANONICAL = ["127.1", "2130706433", "017700000001", "0177.0.0.1"]


async def test_input_urls_to_loopback_are_refused(make_api, watched: Watched) -> None:
    urls = [f"http://{host}:{watched.port}/image.jpg" for host in LOOPBACK_FORMS]
    # Each URL does reach the watched server when nothing guards it.
    async with aiohttp.ClientSession() as session:
        for url in urls:
            async with session.get(url) as resp:
                assert resp.status == 200, url
    assert len(watched.hits) == len(urls)
    watched.hits.clear()

    api: Api = await make_api(allow_private_networks=False)
    finals = await api.create_ok(
        [{"task_name": "image.info", "url": url} for url in urls], block=True
    )
    for url, final in zip(urls, finals, strict=True):
        assert_status(final, "error")
        assert "refused" in final["error"] and "not allowed" in final["error"], (url, final)
        assert url in final["error"], final
    assert watched.hits == []
    odd = [f"http://{host}:{watched.port}/image.jpg" for host in NON_CANONICAL]
    finals = await api.create_ok(
        [{"task_name": "image.info", "url": url} for url in odd], block=True
    )
    for final in finals:
        assert_status(final, "error")
        assert "not a canonical IPv4 address" in final["error"], final
    assert watched.hits == []


async def test_the_same_urls_work_when_private_networks_are_allowed(
    make_api, watched: Watched
) -> None:
    api: Api = await make_api(allow_private_networks=True)
    urls = [
        f"http://{host}:{watched.port}/image.jpg" for host in ("127.0.0.1", "[::1]", "localhost")
    ]
    finals = await api.create_ok(
        [{"task_name": "image.info", "url": url} for url in urls], block=True
    )
    assert [f["status"] for f in finals] == ["success"] * 3, finals
    assert len(watched.hits) == 3


async def test_callbacks_to_loopback_are_refused(make_api, receiver: Receiver) -> None:
    api: Api = await make_api(allow_private_networks=False)
    port = receiver.base.rsplit(":", 1)[1]
    urls = [
        receiver.url("a"),
        f"http://localhost:{port}/b",
        f"http://[::ffff:127.0.0.1]:{port}/c",
    ]
    ok = [{"task_name": "hello", "name": "x", "url_callback": url} for url in urls]
    failed = {"task_name": "test.fail", "url_errback": receiver.url("errback")}
    finals = await api.create_ok([*ok, failed], block=True)
    assert [f["status"] for f in finals] == ["success"] * 3 + ["error"]
    keys = [f["key"] for f in finals]
    for _ in range(200):
        _, detailed = await api.status(keys, details="true")
        if all(d["callbacks"][0]["attempts"] >= 2 for d in detailed):
            break
        await asyncio.sleep(0.05)
    for d in detailed:
        (delivery,) = d["callbacks"]
        assert delivery["state"] != "delivered" and delivery["attempts"] >= 2, d
        assert delivery["last_error"].startswith("refused"), delivery
    assert [d["status"] for d in detailed] == ["success"] * 3 + ["error"]
    assert receiver.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "file:///etc/passwd",
        "gopher://example.com/",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "//example.com/a.jpg",
        "http:///no-host",
        "example.com/a.jpg",
        "http://[::1",
        "http://example.com:99999/",
    ],
)
async def test_only_http_and_https_urls_are_accepted(api: Api, url: str) -> None:
    (final,) = await api.create_ok(
        [
            {"task_name": "image.info", "url": url},
        ]
    )
    assert_status(final, "error")
    assert list(final["error"]["parameters"]) == ["url"], final
    (callback,) = await api.create_ok([{"task_name": "hello", "name": "x", "url_callback": url}])
    assert list(callback["error"]["parameters"]) == ["url_callback"], callback


# -- redirects: every hop is checked again ----------------------------------------------------


class _OneTrustedOrigin(GuardedResolver):
    """The real guard, except that `origin.test` resolves to 127.0.0.2 and counts as public.

    Tests cannot reach a public host, and the first hop must pass the guard for a redirect to be
    followed at all; every other name, and every literal address, is judged as in production.
    """

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[dict[str, Any]]:
        if host == "origin.test":
            return await _Fixed("127.0.0.2").resolve(host, port, family)
        return await super().resolve(host, port, family)


@pytest.fixture
async def redirects(watched: Watched) -> AsyncIterator[tuple[aiohttp.ClientSession, int]]:
    """A session guarded as the server's is, and an origin on 127.0.0.2 that redirects where
    `?to=` says (or serves the image at /image.jpg)."""

    async def handle(request: web.Request) -> web.Response:
        if "to" in request.query:
            raise web.HTTPFound(request.query["to"])
        return web.Response(body=watched.image, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.2")
    await server.start_server()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=_OneTrustedOrigin()))
    yield session, server.port
    await session.close()
    await server.close()


GUARDED = Config(allow_private_networks=False, fetch_timeout=5, fetch_max_redirects=5)


async def test_a_redirect_within_the_trusted_origin_is_followed(
    redirects: tuple[aiohttp.ClientSession, int], watched: Watched, tmp_path: Path
) -> None:
    session, port = redirects
    url = f"http://origin.test:{port}/start?to=/image.jpg"
    dest = await download(session, GUARDED, url, tmp_path / "out")
    assert dest.read_bytes() == watched.image
    assert watched.hits == []


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/secret",
        "http://localhost:{port}/secret",
        "http://[::1]:{port}/secret",
        "http://[::ffff:127.0.0.1]:{port}/secret",
        "http://0x7f000001:{port}/secret",
        "//127.0.0.1:{port}/secret",  # scheme-relative
        # Two hops: the origin redirects to itself, then to loopback.
        "http://origin.test:{origin}/again?to=http://127.0.0.1:{port}/secret",
    ],
)
async def test_a_redirect_to_loopback_is_refused(
    redirects: tuple[aiohttp.ClientSession, int], watched: Watched, tmp_path: Path, target: str
) -> None:
    session, origin_port = redirects
    location = target.format(port=watched.port, origin=origin_port)
    url = str(URL(f"http://origin.test:{origin_port}/start").with_query(to=location))
    with pytest.raises(FetchError, match="refused") as failure:
        await download(session, GUARDED, url, tmp_path / "out")
    assert "not allowed" in str(failure.value)
    assert watched.hits == []
    with contextlib.suppress(FileNotFoundError):
        assert (tmp_path / "out").read_bytes() == b""


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/"])
async def test_a_redirect_to_another_scheme_fails_cleanly(
    redirects: tuple[aiohttp.ClientSession, int], tmp_path: Path, target: str
) -> None:
    session, port = redirects
    with pytest.raises(FetchError, match="downloading"):
        url = str(URL(f"http://origin.test:{port}/s").with_query(to=target))
        await download(session, GUARDED, url, tmp_path / "o")
