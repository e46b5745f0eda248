"""Downloading task inputs: timeouts, a size cap, redirects checked hop by hop, and failures
that become a task's error message (values, not HTTP errors of the API)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp

from server.config import Config
from server.urlguard import BlockedAddress, GuardedResolver, check_literal_host, url_address

CHUNK = 1024 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(Exception):
    """A download failed; the message says what failed, for the task's `error`."""


def client_session(config: Config) -> aiohttp.ClientSession:
    """The server's outgoing HTTP client, guarded unless private networks are allowed."""
    resolver = None if config.allow_private_networks else GuardedResolver()
    connector = aiohttp.TCPConnector(resolver=resolver, limit=256, limit_per_host=32)
    return aiohttp.ClientSession(
        connector=connector,
        headers={"User-Agent": "taskstream"},
        auto_decompress=False,
    )


def guard(config: Config, url: str) -> None:
    """Refuses a literal private address up front (names are checked by the resolver)."""
    if not config.allow_private_networks:
        check_literal_host(urlsplit(url).hostname or "")


def describe_failure(url: str, error: BaseException, timeout: float) -> str:
    """A person's sentence for a failed outgoing request; never echoes credentials."""
    host = urlsplit(url).hostname or url
    if isinstance(error, TimeoutError | asyncio.TimeoutError):
        return f"timed out after {timeout:g} s"
    blocked = error if isinstance(error, BlockedAddress) else getattr(error, "os_error", None)
    if isinstance(blocked, BlockedAddress):
        return f"refused: {blocked} (private networks are not allowed)"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"could not connect to {host}: {error.os_error.strerror or error.os_error}"
    return f"{type(error).__name__}: {error}"


async def download(session: aiohttp.ClientSession, config: Config, url: str, dest: Path) -> Path:
    """Streams `url` into `dest`, following at most `fetch_max_redirects` checked redirects.
    Error messages name the URL without its credentials or query string (signatures)."""
    timeout = aiohttp.ClientTimeout(
        total=config.fetch_timeout, sock_connect=config.fetch_connect_timeout
    )
    current = url
    try:
        async with asyncio.timeout(config.fetch_timeout):
            for _ in range(config.fetch_max_redirects + 1):
                guard(config, current)
                async with session.get(current, timeout=timeout, allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS and "Location" in resp.headers:
                        current = urljoin(current, resp.headers["Location"])
                        continue
                    if resp.status != 200:
                        reason = f"HTTP {resp.status} {resp.reason or ''}".rstrip()
                        raise FetchError(f"downloading {url_address(url)} failed: {reason}")
                    await _save(resp, config.fetch_max_bytes, url, dest)
                    return dest
            raise FetchError(
                f"downloading {url_address(url)} failed: more than "
                f"{config.fetch_max_redirects} redirects"
            )
    except FetchError:
        raise
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
        reason = describe_failure(current, e, config.fetch_timeout)
        raise FetchError(f"downloading {url_address(url)} failed: {reason}") from None


async def _save(resp: aiohttp.ClientResponse, limit: int, url: str, dest: Path) -> None:
    too_large = (
        f"downloading {url_address(url)} failed: the file is larger than the {limit} byte limit"
    )
    if resp.content_length is not None and resp.content_length > limit:
        raise FetchError(too_large)
    size = 0
    with dest.open("wb") as out:  # the writes go through to_thread below
        buffer = bytearray()
        async for chunk in resp.content.iter_chunked(CHUNK):
            size += len(chunk)
            if size > limit:
                raise FetchError(too_large)
            buffer += chunk
            if len(buffer) >= CHUNK:
                await asyncio.to_thread(out.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await asyncio.to_thread(out.write, bytes(buffer))
