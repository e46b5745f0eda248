"""Storage systems behind one small interface: store a file, give its URL, list, delete.

Each module exports `Storage`, a subclass of `BaseStorage`. Paths are relative, `/`-separated
object names (`persistent/1/KEY/video.thumb-x7Qa.jpg`); backends know nothing of tasks or HTTP
handlers. A backend turns the failures of what lies beneath it (disk, botocore, HTTP) into
`StorageError`, whose message is fit for a task's `error` and never holds a credential.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class StorageError(Exception):
    """The backend could not store, list or delete; the message says what failed."""


@dataclass(frozen=True)
class StoredFile:
    """A file in a backend: its path, size in bytes and last modification (Unix time)."""

    path: str
    size: int
    modified: float


class BaseStorage(ABC):
    """A place where output files live."""

    @abstractmethod
    async def put(self, path: str, source: Path, content_type: str) -> None:
        """Stores the local file `source` as `path` (the source may be moved away), streaming
        it: a large file is never read whole into memory."""

    @abstractmethod
    async def url(self, path: str) -> str:
        """The URL a client can GET the file at."""

    @abstractmethod
    async def list(self, prefix: str) -> list[StoredFile]:
        """Every file whose path starts with `prefix`."""

    @abstractmethod
    async def delete(self, path: str) -> None:
        """Removes a file; removing a missing file is not an error."""

    async def delete_many(self, paths: Iterable[str]) -> None:
        """Removes several files (backends with a batch call override this)."""
        for path in paths:
            await self.delete(path)

    async def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Releases connections."""
