"""Serving the output files kept on local disk, at unguessable URLs (`/files/...`).

aiohttp's FileResponse answers `Range` (206), `If-None-Match`/`If-Modified-Since` (304) and
sends `ETag`, `Last-Modified`, `Content-Length` and the `Content-Type` of the extension.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from server import components
from server.errors import NotFound


async def serve_file(request: web.Request) -> web.FileResponse:
    """GET /files/{path}"""
    path = request.match_info["path"]
    local = request.app[components.LOCAL_FILES].local_path(path)
    if local is None or not await asyncio.to_thread(local.is_file):
        raise NotFound("path", "path", "no such file")
    return web.FileResponse(local, headers={"Cache-Control": "private, max-age=3600"})
