"""Who is calling: the account secret, or an API key whose Referer whitelist holds the calling
page's origin. Also answers CORS for those pages, which live on other origins.

An API key of another account, an unknown key and a refused origin all get the same 401, so a
caller cannot tell them apart.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from server.errors import Unauthorized
from server.store import Account, SqliteStore

CORS_ORIGIN = web.RequestKey("cors_origin", str)
_DEFAULT_PORTS = {"http": 80, "https": 443}
ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type"


def normalize_origin(value: str) -> str | None:
    """`scheme://host[:port]` of a URL or origin, lower-cased, without a default port."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def request_origin(request: web.Request) -> str | None:
    """The calling page's origin: the `Origin` header, or else the `Referer`'s origin."""
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        return normalize_origin(origin)
    referer = request.headers.get("Referer")
    return normalize_origin(referer) if referer else None


def _credentials(request: web.Request, body: Any) -> tuple[str, str, str] | None:
    """(kind, value, where) from the Authorization header, the JSON body or the query string."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "secret" and value.strip():
        return "secret", value.strip(), "header"
    if scheme.lower() == "api-key" and value.strip():
        return "api_key", value.strip(), "header"
    for kind in ("secret", "api_key"):
        if isinstance(body, dict) and isinstance(body.get(kind), str):
            return kind, body[kind], "body"
        if kind in request.query:
            return kind, request.query[kind], "querystring"
    return None


async def authenticate(request: web.Request, store: SqliteStore, body: Any = None) -> Account:
    """The calling account, or Unauthorized."""
    found = _credentials(request, body)
    if found is None:
        raise Unauthorized(
            "secret",
            "header",
            "credentials are missing: pass the secret (Authorization: Secret ...) or an API key "
            "(Authorization: Api-Key ...)",
        )
    kind, value, where = found
    if kind == "secret":
        account = await store.account_by_secret(value)
        if account is None:
            raise Unauthorized("secret", where, "invalid secret")
        return account
    api_key = await store.api_key(value)
    origin = request_origin(request)
    if api_key is None or origin is None or origin not in api_key.referrers:
        raise Unauthorized(
            "api_key", where, "invalid API key, or the Referer is not in the key's whitelist"
        )
    request[CORS_ORIGIN] = origin
    return api_key.account


async def preflight(request: web.Request, store: SqliteStore) -> web.Response:
    """Answers a CORS preflight. It carries no credentials, so the origin must be in the
    whitelist of some API key; the real request is then checked against its own key."""
    origin = request_origin(request)
    if origin is None or not await store.origin_whitelisted(origin):
        raise Unauthorized("Origin", "header", "this origin is not in any API key's whitelist")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        },
    )


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: lets a whitelisted page read the answer (streams included)."""
    origin = request.get(CORS_ORIGIN)
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
