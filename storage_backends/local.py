"""Local disk under the data dir; the server itself serves the files (`/files/...`)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from storage_backends import BaseStorage, StorageError, StoredFile


class Storage(BaseStorage):
    """Files under `root`, served at `base_url/files/<path>`."""

    def __init__(self, root: Path, base_url: str) -> None:
        self.root = root
        self.base_url = base_url.rstrip("/")

    def local_path(self, path: str) -> Path | None:
        """The file behind `path`, or None if the path leaves the root."""
        full = (self.root / path).resolve()
        return full if full.is_relative_to(self.root.resolve()) else None

    async def put(self, path: str, source: Path, content_type: str) -> None:
        target = self.local_path(path)
        if target is None:
            raise StorageError(f"invalid storage path {path!r}")

        def move() -> None:
            # A concurrent delete may remove the folder between mkdir and move (it drops the
            # folders it leaves empty): try again then.
            for attempt in range(3):
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    # A rename on the same disk; a copy in chunks across disks.
                    shutil.move(source, target)
                    return
                except FileNotFoundError:
                    if attempt == 2 or not source.exists():
                        raise

        try:
            await asyncio.to_thread(move)
        except OSError as e:
            raise StorageError(f"storing the file on local disk failed: {e.strerror}") from None

    async def url(self, path: str) -> str:
        return f"{self.base_url}/files/{path}"

    async def list(self, prefix: str) -> list[StoredFile]:
        def scan() -> list[StoredFile]:
            found = []
            for dirpath, _, names in os.walk(self.root):
                for name in names:
                    full = Path(dirpath) / name
                    rel = full.relative_to(self.root).as_posix()
                    if rel.startswith(prefix):
                        st = full.stat()
                        found.append(StoredFile(rel, st.st_size, st.st_mtime))
            return found

        return await asyncio.to_thread(scan)

    async def delete(self, path: str) -> None:
        target = self.local_path(path)
        if target is None:
            return

        def remove() -> None:
            target.unlink(missing_ok=True)
            # Drop the folders the file leaves empty (a task's folder, then the account's).
            parent = target.parent
            root = self.root.resolve()
            while parent != root and parent.is_relative_to(root):
                try:
                    parent.rmdir()
                except OSError:  # not empty: another file lives there
                    break
                parent = parent.parent

        try:
            await asyncio.to_thread(remove)
        except OSError as e:
            raise StorageError(f"deleting a file on local disk failed: {e.strerror}") from None
