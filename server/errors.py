"""One exception per documented HTTP error; `error_middleware` renders them all in the
reference's error body: `{"status": "error", "errors": [{"name", "location", "description"}]}`.
Handlers only raise."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered with `status` and the reference's error body."""

    status = 400

    def __init__(self, name: str, location: str, description: str, **headers: str) -> None:
        super().__init__(description)
        self.errors = [{"name": name, "location": location, "description": description}]
        self.headers = {k.replace("_", "-"): v for k, v in headers.items()}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class NotFound(ApiError):
    status = 404


class PayloadTooLarge(ApiError):
    status = 413


class TooManyRequests(ApiError):
    status = 429


class ServiceUnavailable(ApiError):
    status = 503


def error_response(
    status: int, errors: list[dict[str, str]], headers: dict[str, str] | None = None
) -> web.Response:
    body = orjson.dumps({"status": "error", "errors": errors})
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e.status, e.errors, e.headers)
    except web.HTTPRequestEntityTooLarge:
        return error_response(
            413, [{"name": "body", "location": "body", "description": "request body too large"}]
        )
    except web.HTTPException as e:
        if e.status < 400:
            raise
        where = "path" if e.status in (404, 405) else "request"
        return error_response(
            e.status, [{"name": request.path, "location": where, "description": e.reason}]
        )
