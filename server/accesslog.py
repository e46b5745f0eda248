"""The access log (`--access-log`): the request line without its query string, which may hold
a secret (`?secret=`) or an API key."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %s %.1fms',
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            time * 1000,
        )
