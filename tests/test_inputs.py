"""Input downloads: the server fetches `url` itself; failures say what failed."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import Api, Origin, assert_status
from tests.mediagen import make_image


async def test_image_info_reads_a_downloaded_jpeg_with_exif(api: Api, origin: Origin) -> None:
    make_image(origin.root / "photo.jpg", width=64, height=48, exif_orientation=6)
    final = await api.run({"task_name": "image.info", "url": origin.url("photo.jpg")})
    assert_status(final, "success")
    result = final["result"]
    assert result["content_type"] == "image/jpeg" and result["type"] == "image"
    assert (result["width"], result["height"]) == (64, 48)
    assert result["exif_orientation"] == 6 and result["rotation"] == 270.0
    assert result["alpha"] is False


async def test_image_info_png_with_alpha(api: Api, origin: Origin) -> None:
    from PIL import Image

    Image.new("RGBA", (10, 7), (1, 2, 3, 4)).save(origin.root / "a.png")
    final = await api.run({"task_name": "image.info", "url": origin.url("a.png")})
    assert final["result"]["alpha"] is True
    assert final["result"]["content_type"] == "image/png"
    assert final["result"]["exif_orientation"] is None and final["result"]["rotation"] is None


async def test_not_an_image_ends_in_error(api: Api, origin: Origin) -> None:
    url = origin.add("junk.jpg", b"\x00" * 100)
    final = await api.run({"task_name": "image.info", "url": url})
    assert_status(final, "error")
    assert "not an image" in final["error"]


async def test_http_errors_are_reported(api: Api, origin: Origin) -> None:
    final = await api.run({"task_name": "image.info", "url": origin.url("missing.jpg")})
    assert_status(final, "error")
    assert "HTTP 404" in final["error"] and "missing.jpg" in final["error"]


async def test_download_size_limit(make_api, origin: Origin) -> None:
    api = await make_api(fetch_max_bytes=1000)
    url = origin.add("big.bin", b"x" * 5000)
    final = await api.run({"task_name": "image.info", "url": url})
    assert "larger than the 1000 byte limit" in final["error"]


async def test_download_timeout(make_api) -> None:
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"xx")
        await release.wait()
        return resp

    app = web.Application()
    app.router.add_get("/slow", stall)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        api = await make_api(fetch_timeout=0.5)
        final = await api.run({"task_name": "image.info", "url": str(server.make_url("/slow"))})
        assert "timed out after 0.5 s" in final["error"]
    finally:
        release.set()
        await server.close()


async def test_redirects_are_followed_up_to_the_limit(make_api, origin: Origin) -> None:
    make_image(origin.root / "p.jpg")
    hops = {"n": 0}

    async def redirect(request: web.Request) -> web.Response:
        left = int(request.match_info["left"])
        hops["n"] += 1
        target = origin.url("p.jpg") if left == 0 else f"/r/{left - 1}"
        raise web.HTTPFound(target)

    app = web.Application()
    app.router.add_get("/r/{left}", redirect)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        api = await make_api(fetch_max_redirects=3)
        ok = await api.run({"task_name": "image.info", "url": str(server.make_url("/r/2"))})
        assert ok["status"] == "success"
        too_many = await api.run({"task_name": "image.info", "url": str(server.make_url("/r/5"))})
        assert "more than 3 redirects" in too_many["error"]
    finally:
        await server.close()
