"""Amazon S3 and S3-compatible services (MinIO, Ceph, R2, ...) through aiobotocore.

Imported only when S3 is used. Large files go up as multipart uploads read from disk one part at
a time, so memory stays at about one part whatever the file size. Failures of botocore and of
the connection become `StorageError` here, so nothing above imports botocore.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp.abc import AbstractResolver
from botocore.exceptions import BotoCoreError, ClientError

from storage_backends import BaseStorage, StorageError, StoredFile

# botocore's DEBUG log prints every request's headers and signing steps, which name the access key
# id of the credentials in use, maybe a task's own: botocore logs at INFO at most, whatever level
# the server runs at.
for _name in ("botocore", "aiobotocore"):
    logging.getLogger(_name).setLevel(logging.INFO)

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest part (but the last)
MAX_PARTS = 10_000  # S3's most parts in one upload
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # the longest a SigV4 presigned URL lives


@dataclass(frozen=True)
class S3Settings:
    """Where objects go and how to reach them.

    `prefix` is put before every path (`renders/` makes `persistent/1/KEY/x.jpg` the key
    `renders/persistent/1/KEY/x.jpg`). Without `access_key_id`, botocore finds credentials
    itself (environment variables, shared config, instance role). `public_url` is a base URL
    at which the bucket's keys are readable (a public bucket, a CDN); without it `url` gives
    presigned GET URLs valid for `presign_expires` seconds. Files up to `part_size` bytes go up
    in one request, larger ones as multipart uploads of `part_size` parts. A request is tried
    `max_attempts` times. `resolver` (an aiohttp resolver) decides which addresses the client
    may connect to.
    """

    bucket: str
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    public_url: str | None = None
    presign_expires: int = MAX_PRESIGN_SECONDS
    part_size: int = 8 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    max_attempts: int = 3
    resolver: AbstractResolver | None = None


@functools.cache
def _session() -> Any:
    """One botocore session for every client: it caches the service models, so a task's own
    client (an `s3` task_store) costs no model loading."""
    return get_session()


class Storage(BaseStorage):
    """Objects in one bucket, under an optional key prefix."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()

    def key(self, path: str) -> str:
        """The object key of a path."""
        return self.prefix + path

    async def _s3(self) -> Any:
        """The aiobotocore client, opened on first use."""
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await self._open()
        return self._client

    async def _open(self) -> Any:
        s = self.settings
        options: dict[str, Any] = {
            "signature_version": "s3v4",
            "connect_timeout": s.connect_timeout,
            "read_timeout": s.read_timeout,
            "retries": {"max_attempts": s.max_attempts, "mode": "standard"},
            # Path-style keys work with every S3-compatible service and with IP endpoints.
            "s3": {"addressing_style": "path" if s.endpoint_url else "auto"},
        }
        if s.resolver is not None:
            options["connector_args"] = {"resolver": s.resolver}
        credentials = {}
        if s.access_key_id and s.secret_access_key:
            credentials = {
                "aws_access_key_id": s.access_key_id,
                "aws_secret_access_key": s.secret_access_key,
            }
        try:
            return await self._stack.enter_async_context(
                _session().create_client(
                    "s3",
                    region_name=s.region,
                    endpoint_url=s.endpoint_url,
                    config=AioConfig(**options),
                    **credentials,
                )
            )
        except (BotoCoreError, ValueError) as e:
            raise StorageError(f"cannot set up the S3 client: {e}") from None

    @contextlib.asynccontextmanager
    async def _translated(self, doing: str):
        """Turns what botocore and the connection raise into StorageError."""
        try:
            yield
        except ClientError as e:
            error = e.response.get("Error", {})
            code = error.get("Code", "error")
            message = error.get("Message") or ""
            raise StorageError(
                f"{doing} in S3 bucket {self.bucket} failed: {code} {message}".rstrip()
            ) from None
        except (BotoCoreError, aiohttp.ClientError, OSError) as e:
            raise StorageError(f"{doing} in S3 bucket {self.bucket} failed: {e}") from None
        except TimeoutError:
            raise StorageError(f"{doing} in S3 bucket {self.bucket} timed out") from None

    async def put(self, path: str, source: Path, content_type: str) -> None:
        s3 = await self._s3()
        key = self.key(path)
        size = (await asyncio.to_thread(source.stat)).st_size
        async with self._translated(f"storing {key}"):
            if size <= self.settings.part_size:
                body = await asyncio.to_thread(source.read_bytes)
                await s3.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType=content_type
                )
                return
            await self._put_multipart(s3, key, source, size, content_type)

    async def _put_multipart(
        self, s3: Any, key: str, source: Path, size: int, content_type: str
    ) -> None:
        part_size = max(self.settings.part_size, MIN_PART_SIZE, math.ceil(size / MAX_PARTS))
        started = await s3.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=content_type
        )
        upload_id = started["UploadId"]
        try:
            parts = []
            f = await asyncio.to_thread(source.open, "rb")
            try:
                number = 1
                while chunk := await asyncio.to_thread(f.read, part_size):
                    done = await s3.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                    )
                    parts.append({"ETag": done["ETag"], "PartNumber": number})
                    number += 1
                    del chunk  # one part in memory at a time
            finally:
                await asyncio.to_thread(f.close)
            await s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            # An abandoned upload keeps its parts (and bills them) until aborted.
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                )
            raise

    async def url(self, path: str) -> str:
        key = self.key(path)
        if self.settings.public_url:
            return f"{self.settings.public_url.rstrip('/')}/{quote(key, safe='/~')}"
        s3 = await self._s3()
        async with self._translated(f"signing a URL for {key}"):
            return await s3.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=min(self.settings.presign_expires, MAX_PRESIGN_SECONDS),
            )

    def s3_uri(self, path: str) -> str:
        """`s3://bucket/key` of a path."""
        return f"s3://{self.bucket}/{self.key(path)}"

    def object_url(self, path: str) -> str:
        """The plain (unsigned) https URL of an object: readable by anyone only if the bucket
        allows it, but always the object's address."""
        key = quote(self.key(path), safe="/~")
        if self.settings.endpoint_url:
            return f"{self.settings.endpoint_url.rstrip('/')}/{self.bucket}/{key}"
        region = self.settings.region or "us-east-1"
        if "." in self.bucket:  # a dotted name breaks the wildcard certificate of virtual hosts
            return f"https://s3.{region}.amazonaws.com/{self.bucket}/{key}"
        return f"https://{self.bucket}.s3.{region}.amazonaws.com/{key}"

    async def list(self, prefix: str) -> list[StoredFile]:
        s3 = await self._s3()
        found = []
        async with self._translated("listing files"):
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(prefix)):
                for item in page.get("Contents", []):
                    found.append(
                        StoredFile(
                            item["Key"][len(self.prefix) :],
                            item["Size"],
                            item["LastModified"].timestamp(),
                        )
                    )
        return found

    async def delete(self, path: str) -> None:
        s3 = await self._s3()
        async with self._translated(f"deleting {self.key(path)}"):
            await s3.delete_object(Bucket=self.bucket, Key=self.key(path))

    async def delete_many(self, paths: Iterable[str]) -> None:
        s3 = await self._s3()
        keys = [self.key(p) for p in paths]
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = keys[i : i + 1000]
            async with self._translated(f"deleting {len(batch)} files"):
                done = await s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
            errors = done.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageError(
                    f"deleting {first.get('Key')} in S3 bucket {self.bucket} failed: "
                    f"{first.get('Code')} {first.get('Message', '')}".rstrip()
                )

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None
