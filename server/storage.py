"""The managed storage systems, `persistent` and `volatile`: their backends (local disk, or an S3
bucket when the server is given one), the file rows in the store, and what the Storage API and
the expiration sweep do with them.

Every stored file has a row (account, storage system, backend, path, size, creation time, URL),
so listing, usage, deletion by URL or date and the sweep are store queries, not bucket scans. A
file goes to its backend first and gets its row once stored; a deletion removes the file first
and the row after, so a crash in between leaves a row whose file is gone, which the next
deletion or sweep removes quietly (deleting a missing file is not an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.config import Config
from server.store import FileRecord, SqliteStore
from server.urlguard import url_address
from storage_backends import BaseStorage
from storage_backends.local import Storage as LocalStorage

log = logging.getLogger(__name__)

MANAGED = ("persistent", "volatile")
VOLATILE_MAX_AGE = 7 * 24 * 3600.0  # the reference: "Files are stored for a week"
DAY = 24 * 3600.0
_SWEEP_BATCH = 1000


def iso_millis(timestamp: float) -> str:
    """A Unix time as the Storage API writes it: `2013-10-28T20:22:21.000Z`."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def open_backends(config: Config) -> tuple[dict[str, BaseStorage], str]:
    """The backends by name, and the name of the one new files go to. Local disk is always
    there, so files stored before the server moved to S3 stay served and deletable."""
    backends: dict[str, BaseStorage] = {"local": LocalStorage(config.files_dir, config.base_url)}
    if not config.s3_bucket:
        return backends, "local"
    # Imported here: aiobotocore is loaded only by servers that use S3.
    from storage_backends.s3 import S3Settings
    from storage_backends.s3 import Storage as S3Storage

    prefix = (config.s3_prefix or "").strip("/")
    prefix = f"{prefix}/" if prefix else ""
    backends["s3"] = S3Storage(
        # The operator's own bucket: not behind the URL guard, which is for URLs of clients.
        S3Settings(
            bucket=config.s3_bucket,
            prefix=prefix,
            region=config.s3_region,
            endpoint_url=config.s3_endpoint_url,
            access_key_id=config.s3_access_key_id,
            secret_access_key=config.s3_secret_access_key,
            public_url=config.s3_public_url,
            presign_expires=config.s3_presign_expires,
            part_size=config.s3_part_size,
            connect_timeout=config.fetch_connect_timeout,
            read_timeout=config.upload_timeout,
        )
    )
    return backends, "s3"


@dataclass(frozen=True)
class Listing:
    """What `GET /v2/storage/files/{path}` answers."""

    files: list[dict[str, Any]]
    directories: list[str]
    usage: int

    def to_json(self) -> dict[str, Any]:
        return {"files": self.files, "directories": self.directories, "usage": self.usage}


class ManagedStorage:
    """Stores, lists, deletes and expires the files of the persistent and volatile systems."""

    def __init__(self, store: SqliteStore, backends: dict[str, BaseStorage], current: str) -> None:
        self.store = store
        self.backends = backends
        self.current = current
        self.clock = time.time  # what "now" is to the sweep
        self.swept = asyncio.Event()  # set after each background sweep
        self._wake = asyncio.Event()

    @property
    def local(self) -> LocalStorage:
        local = self.backends["local"]
        assert isinstance(local, LocalStorage)
        return local

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.close()

    # -- storing -------------------------------------------------------------------------------

    async def put(
        self,
        account_id: int,
        storage: str,
        task_key: str,
        source: Path,
        filename: str,
        content_type: str,
    ) -> str:
        """Stores `source` as `filename` in the task's folder and returns its URL."""
        assert storage in MANAGED
        name = f"{task_key}/{filename}"
        path = f"{storage}/{account_id}/{name}"
        size = (await asyncio.to_thread(source.stat)).st_size
        backend = self.backends[self.current]
        await backend.put(path, source, content_type)
        url = await backend.url(path)
        await self.store.record_file(
            FileRecord(
                account_id=account_id,
                storage=storage,
                backend=self.current,
                path=path,
                name=name,
                task_key=task_key,
                size=size,
                created=time.time(),
                url=url_address(url),
            )
        )
        return url

    # -- the Storage API -----------------------------------------------------------------------

    async def listing(self, account_id: int, path: str, recursive: bool) -> Listing:
        """The account's persistent files at `path` (a folder, a file, or "" for all); names
        are relative to the folder listed, `usage` counts every file under it."""
        path = path.strip("/")
        if path:
            exact = await self.store.find_files(account_id, "persistent", name=path)
            if exact:
                folder = path.rpartition("/")[0]
                return self._listing(exact, folder + "/" if folder else "", recursive=True)
        prefix = f"{path}/" if path else ""
        records = await self.store.find_files(account_id, "persistent", prefix=prefix)
        return self._listing(records, prefix, recursive)

    @staticmethod
    def _listing(records: list[FileRecord], prefix: str, recursive: bool) -> Listing:
        files, directories = [], set()
        for r in records:
            rest = r.name[len(prefix) :]
            folders = rest.split("/")[:-1]
            if folders and not recursive:
                directories.add(folders[0] + "/")
                continue
            for i in range(1, len(folders) + 1):
                directories.add("/".join(folders[:i]) + "/")
            files.append({"name": rest, "size": r.size, "last_modified": iso_millis(r.created)})
        return Listing(files, sorted(directories), sum(r.size for r in records))

    async def select(
        self,
        account_id: int,
        path: str,
        created_from: float | None = None,
        created_to: float | None = None,
    ) -> list[FileRecord]:
        """The account's persistent files a deletion of `path` targets: the file of that name,
        or every file under that folder ("" for all), created within the given bounds."""
        path = path.strip("/")
        if path:
            exact = await self.store.find_files(account_id, "persistent", name=path)
            if exact:
                return [
                    r
                    for r in exact
                    if (created_from is None or r.created >= created_from)
                    and (created_to is None or r.created <= created_to)
                ]
        return await self.store.find_files(
            account_id,
            "persistent",
            prefix=f"{path}/" if path else "",
            created_from=created_from,
            created_to=created_to,
        )

    async def by_urls(self, account_id: int, urls: Sequence[str]) -> list[FileRecord]:
        """The account's persistent files among these absolute URLs (signed or not)."""
        records = await self.store.files_by_url(account_id, [url_address(u) for u in urls])
        return [r for r in records if r.storage == "persistent"]

    async def usage(self, account_id: int) -> int:
        return await self.store.storage_usage(account_id, "persistent")

    async def remove(self, records: Sequence[FileRecord]) -> list[FileRecord]:
        """Deletes the files and then their rows; returns those deleted. Files of a backend
        the server no longer has (S3 since switched off) are kept, with a warning."""
        deleted: list[FileRecord] = []
        by_backend: dict[str, list[FileRecord]] = {}
        for r in records:
            by_backend.setdefault(r.backend, []).append(r)
        for name, group in by_backend.items():
            backend = self.backends.get(name)
            if backend is None:
                log.warning(
                    "%d files are kept on the %s backend, which this server is not configured "
                    "with; they cannot be deleted",
                    len(group),
                    name,
                )
                continue
            await backend.delete_many([r.path for r in group])
            await self.store.forget_files([r.id for r in group if r.id is not None])
            deleted += group
        return deleted

    # -- expiration ----------------------------------------------------------------------------

    async def sweep(self, now: float | None = None) -> int:
        """Deletes volatile files older than a week and persistent files past their account's
        expiration; returns how many went. The rows are the sweep's state, so a restart
        loses nothing: the first sweep after it finds what is due."""
        now = self.clock() if now is None else now
        total = 0
        while True:
            due = await self.store.expired_files(
                now, VOLATILE_MAX_AGE, tuple(self.backends), _SWEEP_BATCH
            )
            if not due:
                return total
            total += len(await self.remove(due))

    def wake_sweep(self) -> None:
        """Runs the background sweep now (an account's expiration changed)."""
        self._wake.set()

    async def sweep_forever(self, interval: float) -> None:
        """Sweeps now, then every `interval` seconds or when woken, until cancelled."""
        while True:
            self._wake.clear()
            try:
                swept = await self.sweep()
                if swept:
                    log.info("storage sweep deleted %d expired files", swept)
            except Exception as e:  # a backend or store failure: the next sweep tries again
                log.warning("storage sweep failed: %s", e)
            self.swept.set()
            with contextlib.suppress(TimeoutError):  # not wait_for: see Deliverer._loop
                async with asyncio.timeout(interval):
                    await self._wake.wait()
