"""Local disk under the data dir; the server itself serves the files (`/files/...`)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from storage_backends import BaseStorage, StoredFile


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
            raise ValueError(f"invalid storage path {path!r}")

        def move() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, target)

        await asyncio.to_thread(move)

    def url(self, path: str) -> str:
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
        if target is not None:
            await asyncio.to_thread(target.unlink, missing_ok=True)
