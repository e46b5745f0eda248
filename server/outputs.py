"""Where a task's output files go: the `task_store` of its definition, checked at create time,
and the upload of each output file into that storage system once the task has run.

- `persistent` (default) and `volatile`: the server's managed storage (`server.storage`).
- `s3_signed`: `url`, a presigned PUT URL (or `urls`, one per output file by name); the file is
  sent with a plain HTTP PUT, streamed from disk.
- `s3`: the task's own bucket and credentials; the file goes up through aiobotocore
  (multipart when large) and the result holds `s3://bucket/key` and the object's URL.

Credentials (the s3 keys, the signature of an s3_signed URL) are sealed before the task is
stored (`server.sealing`) and opened only for the upload; `public_task_store` shows the rest,
and error messages are scrubbed of them.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from server.config import Config
from server.fetch import describe_failure, guard
from server.sealing import Sealer, SealError
from server.statuses import Task
from server.storage import MANAGED, ManagedStorage, url_address
from server.store import StoreError
from server.urlguard import BlockedAddress, GuardedResolver
from storage_backends import StorageError
from tasks.declare import Kind, check_url

DEFAULT_STORE = {"type": "persistent"}
UNSUPPORTED = {
    "youtube": "the youtube storage type is not supported yet (it needs Google's upload "
    "service and its credentials)",
}
_S3_KEYS = {
    "type",
    "bucket",
    "prefix",
    "region",
    "endpoint_url",
    "access_key_id",
    "secret_access_key",
}
# botocore's own check of bucket names (S3-compatible services allow more than AWS does).
_BUCKET = re.compile(r"^[a-zA-Z0-9.\-_]{3,255}$")
_REGION = re.compile(r"^[a-z0-9-]{1,32}$")
_CHUNK = 1024 * 1024
Errors = dict[str, list[str]]


class OutputError(Exception):
    """An output file could not be stored; the message is the task's error."""


# -- checking task_store at create time --------------------------------------------------------


def validate_task_store(value: Any, sealer: Sealer) -> tuple[dict[str, Any], Errors]:
    """Checks a definition's `task_store`; errors use the parameters form, keyed by field. The
    returned task_store has its credentials sealed, ready to be stored."""
    if value is None:
        return dict(DEFAULT_STORE), {}
    if not isinstance(value, dict):
        return {}, {"task_store": ["must be an object with a type"]}
    kind = value.get("type", "persistent")
    if not isinstance(kind, str):
        return {}, {"task_store.type": ["must be a string"]}
    if kind in UNSUPPORTED:
        return {}, {"task_store.type": [UNSUPPORTED[kind]]}
    if kind in MANAGED:
        extra = sorted(set(value) - {"type"})
        if extra:
            return {}, {f"task_store.{name}": ["unknown parameter"] for name in extra}
        return {"type": kind}, {}
    if kind == "s3_signed":
        return _validate_signed(value, sealer)
    if kind == "s3":
        return _validate_s3(value, sealer)
    return {}, {"task_store.type": [f"unknown storage type {kind[:64]!r}"]}


def _upload_url_problem(url: Any) -> str | None:
    _, problem = check_url(url)
    if problem:
        return problem
    if urlsplit(url).username is not None:
        return "must not hold a user name or password"
    return None


def _validate_signed(value: dict[str, Any], sealer: Sealer) -> tuple[dict[str, Any], Errors]:
    errors: Errors = {f"task_store.{k}": ["unknown parameter"] for k in value}
    for k in ("type", "url", "urls"):
        errors.pop(f"task_store.{k}", None)
    url, urls = value.get("url"), value.get("urls")
    if (url is None) == (urls is None):
        errors["task_store.url"] = [
            "give url (a presigned PUT URL), or urls (an object of output file name to URL)"
        ]
    elif url is not None:
        problem = _upload_url_problem(url)
        if problem:
            errors["task_store.url"] = [problem]
    elif not isinstance(urls, dict) or not urls:
        errors["task_store.urls"] = ["must be an object of output file name to presigned URL"]
    else:
        for name, item in urls.items():
            problem = _upload_url_problem(item)
            if problem:
                errors[f"task_store.urls.{str(name)[:64]}"] = [problem]
    if errors:
        return {}, errors
    if url is not None:
        return {"type": "s3_signed", "url": url_address(url), "sealed": sealer.seal(url)}, {}
    return {
        "type": "s3_signed",
        "urls": {name: url_address(u) for name, u in urls.items()},
        "sealed": sealer.seal(urls),
    }, {}


def _validate_s3(value: dict[str, Any], sealer: Sealer) -> tuple[dict[str, Any], Errors]:
    errors: Errors = {f"task_store.{k}": ["unknown parameter"] for k in set(value) - _S3_KEYS}
    bucket = value.get("bucket")
    if bucket is None:
        errors["task_store.bucket"] = ["this field is required"]
    elif not isinstance(bucket, str) or not _BUCKET.match(bucket):
        errors["task_store.bucket"] = ["must be an S3 bucket name"]
    prefix = value.get("prefix", "")
    if not isinstance(prefix, str) or len(prefix) > 512:
        errors["task_store.prefix"] = ["must be a string of at most 512 characters"]
    endpoint = value.get("endpoint_url")
    if endpoint is not None:
        problem = _upload_url_problem(endpoint)
        if problem is None and (urlsplit(endpoint).query or urlsplit(endpoint).fragment):
            problem = "must not hold a query string or fragment"
        if problem:
            errors["task_store.endpoint_url"] = [problem]
    region = value.get("region")
    if region is None:
        if endpoint is None:
            errors["task_store.region"] = ["this field is required (or give endpoint_url)"]
    elif not isinstance(region, str) or not _REGION.match(region):
        errors["task_store.region"] = ["must be a region name such as eu-west-1"]
    for name in ("access_key_id", "secret_access_key"):
        secret = value.get(name)
        if secret is None:
            # Never fall back on the server's own credentials: they would let any account
            # write to every bucket the server can reach.
            errors[f"task_store.{name}"] = ["this field is required"]
        elif not isinstance(secret, str) or not secret or len(secret) > 256:
            errors[f"task_store.{name}"] = ["must be a non-empty string"]  # never echoed
    if errors:
        return {}, errors
    prefix = prefix.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return {
        "type": "s3",
        "bucket": bucket,
        "prefix": prefix,
        "region": region,
        "endpoint_url": endpoint.rstrip("/") if endpoint else None,
        "sealed": sealer.seal(
            {
                "access_key_id": value["access_key_id"],
                "secret_access_key": value["secret_access_key"],
            }
        ),
    }, {}


def public_task_store(task_store: dict[str, Any]) -> dict[str, Any]:
    """The task_store as `details=true` shows it: without its sealed credentials (s3_signed
    URLs appear without their signing query string)."""
    return {k: v for k, v in task_store.items() if k != "sealed"}


# -- storing output files after the run --------------------------------------------------------


def _scrub(message: str, secrets_: Any) -> str:
    """Removes every credential from a message, whatever echoed it."""
    values = secrets_.values() if isinstance(secrets_, dict) else [secrets_]
    for value in values:
        if isinstance(value, str) and value:
            message = message.replace(value, "[redacted]")
            query = urlsplit(value).query
            if query:
                message = message.replace(query, "[redacted]")
    return message


class Outputs:
    """Sends a task's output files from its work folder to its storage system."""

    def __init__(
        self,
        config: Config,
        managed: ManagedStorage,
        session: aiohttp.ClientSession,
        sealer: Sealer,
    ) -> None:
        self.config = config
        self.managed = managed
        self.session = session
        self.sealer = sealer

    async def store(self, task: Task, kind: Kind, result: Any, workdir: Path) -> Any:
        """Returns the result with each output file's local path replaced by its URL (for
        `s3`, by `s3://bucket/key`, with the object's URL in `<name>_url`)."""
        if not kind.output_files or not isinstance(result, dict):
            return result
        produced = await asyncio.to_thread(_produced, kind, result, workdir)
        if not produced:
            return result
        stored = dict(result)
        task_store = task.task_store
        kind_of_store = task_store["type"]
        try:
            if kind_of_store in MANAGED:
                for name, source in produced.items():
                    stored[name] = await self.managed.put(
                        task.account_id,
                        kind_of_store,
                        task.key,
                        source,
                        _filename(kind, source),
                        _content_type(source),
                    )
            elif kind_of_store == "s3_signed":
                await self._store_signed(task_store, produced, stored)
            elif kind_of_store == "s3":
                await self._store_s3(task, kind, task_store, produced, stored)
            else:
                raise OutputError(f"unknown storage type {kind_of_store!r}")
        except StorageError as e:
            raise OutputError(str(e)) from None
        except StoreError as e:
            raise OutputError(f"recording the output file failed: {e}") from None
        except SealError as e:
            raise OutputError(str(e)) from None
        return stored

    async def _store_signed(
        self, task_store: dict[str, Any], produced: dict[str, Path], stored: dict[str, Any]
    ) -> None:
        sealed = self.sealer.open(task_store["sealed"])
        if isinstance(sealed, str):
            if len(produced) > 1:
                raise OutputError(
                    f"this task wrote {len(produced)} output files ({', '.join(produced)}) but "
                    "the s3_signed task_store holds one url: give urls, one per output file"
                )
            targets = {next(iter(produced)): sealed}
        else:
            missing = sorted(set(produced) - set(sealed))
            if missing:
                raise OutputError(
                    f"the s3_signed task_store has no URL for the output file {missing[0]!r}"
                )
            targets = {name: sealed[name] for name in produced}
        for name, source in produced.items():
            url = targets[name]
            try:
                await self._put_signed(url, source, _content_type(source))
            except OutputError as e:
                raise OutputError(_scrub(str(e), url)) from None
            stored[name] = url_address(url)

    async def _put_signed(self, url: str, source: Path, content_type: str) -> None:
        """PUTs the file to a presigned URL, read from disk a chunk at a time."""
        where = f"the s3_signed URL at {urlsplit(url).hostname}"
        size = (await asyncio.to_thread(source.stat)).st_size
        timeout = aiohttp.ClientTimeout(
            total=self.config.upload_timeout, sock_connect=self.config.fetch_connect_timeout
        )
        try:
            guard(self.config, url)
            async with self.session.put(
                url,
                data=_read_chunks(source),
                # A length, not chunked encoding: S3 refuses chunked PUTs to presigned URLs.
                headers={"Content-Type": content_type, "Content-Length": str(size)},
                timeout=timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status not in (200, 201, 204):
                    detail = _s3_error(await resp.content.read(4096))
                    raise OutputError(
                        f"uploading the output file to {where} failed: HTTP {resp.status}"
                        + (f" {detail}" if detail else "")
                    )
        except OutputError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            raise OutputError(
                f"uploading the output file to {where} failed: "
                f"{describe_failure(url, e, self.config.upload_timeout)}"
            ) from None

    async def _store_s3(
        self,
        task: Task,
        kind: Kind,
        task_store: dict[str, Any],
        produced: dict[str, Path],
        stored: dict[str, Any],
    ) -> None:
        # Imported here: aiobotocore is loaded only when S3 is used.
        from storage_backends.s3 import S3Settings
        from storage_backends.s3 import Storage as S3Storage

        credentials = self.sealer.open(task_store["sealed"])
        endpoint = task_store.get("endpoint_url")
        if endpoint:
            try:
                guard(self.config, endpoint)
            except BlockedAddress as e:
                raise OutputError(
                    f"storing the output file in S3 bucket {task_store['bucket']} failed: "
                    f"refused: {e} (private networks are not allowed)"
                ) from None
        backend = S3Storage(
            S3Settings(
                bucket=task_store["bucket"],
                prefix=task_store["prefix"],
                region=task_store.get("region") or "us-east-1",
                endpoint_url=endpoint,
                access_key_id=credentials["access_key_id"],
                secret_access_key=credentials["secret_access_key"],
                part_size=self.config.s3_part_size,
                connect_timeout=self.config.fetch_connect_timeout,
                read_timeout=self.config.upload_timeout,
                resolver=None if self.config.allow_private_networks else GuardedResolver(),
            )
        )
        try:
            for name, source in produced.items():
                path = f"{task.key}/{_filename(kind, source)}"
                await backend.put(path, source, _content_type(source))
                stored[name] = backend.s3_uri(path)
                stored[f"{name}_url"] = backend.object_url(path)
        except StorageError as e:
            raise OutputError(_scrub(f"storing the output file failed: {e}", credentials)) from None
        finally:
            await backend.close()


def _produced(kind: Kind, result: dict[str, Any], workdir: Path) -> dict[str, Path]:
    """The output files the run wrote, by output name (blocking: run it in a thread)."""
    produced: dict[str, Path] = {}
    root = workdir.resolve()
    for declared in kind.output_files:
        local = result.get(declared.name)
        if local is None:
            continue
        source = (workdir / local).resolve()
        if not source.is_relative_to(root) or not source.is_file():
            raise OutputError(f"the task did not write its output file {declared.name!r}")
        produced[declared.name] = source
    return produced


def _filename(kind: Kind, source: Path) -> str:
    """An unguessable name that says what made the file: `image.thumb-x7Qa2bc9.jpg`."""
    return f"{kind.name}-{secrets.token_urlsafe(6)}{source.suffix}"


def _content_type(source: Path) -> str:
    return mimetypes.guess_type(source.name)[0] or "application/octet-stream"


async def _read_chunks(source: Path) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(source.open, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, _CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(f.close)


def _s3_error(body: bytes) -> str:
    """`Code: Message` of an S3 error document (never its other fields, which can echo the
    signed request)."""
    text = body.decode("utf-8", "replace")
    code = re.search(r"<Code>([^<]{1,100})</Code>", text)
    message = re.search(r"<Message>([^<]{1,300})</Message>", text)
    return ": ".join(m.group(1) for m in (code, message) if m)
