"""Where a task's output files go: the `task_store` of its definition, checked at create time,
and the move of each output file into that storage system once the task has run."""

from __future__ import annotations

import mimetypes
import secrets
from pathlib import Path
from typing import Any

from server.statuses import Task
from storage_backends import BaseStorage
from tasks.declare import Kind

DEFAULT_STORE = {"type": "persistent"}
# Systems served from the server's own backing store.
MANAGED = ("persistent", "volatile")
UNSUPPORTED = {
    "youtube": "the youtube storage type is not supported yet (it needs Google's upload "
    "service and its credentials)",
    "s3_signed": "the s3_signed storage type is not supported yet",
    "s3": "the s3 storage type is not supported yet",
}


def validate_task_store(value: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Checks a definition's `task_store`; errors use the parameters form, keyed by field."""
    if value is None:
        return dict(DEFAULT_STORE), {}
    if not isinstance(value, dict):
        return {}, {"task_store": ["must be an object with a type"]}
    kind = value.get("type", "persistent")
    if kind in UNSUPPORTED:
        return {}, {"task_store.type": [UNSUPPORTED[kind]]}
    if kind not in MANAGED:
        return {}, {"task_store.type": [f"unknown storage type {kind!r}"]}
    extra = sorted(set(value) - {"type"})
    if extra:
        return {}, {f"task_store.{name}": ["unknown parameter"] for name in extra}
    return {"type": kind}, {}


def public_task_store(task_store: dict[str, Any]) -> dict[str, Any]:
    """The task_store as `details=true` shows it."""
    return dict(task_store)


class Outputs:
    """Moves output files from a task's work folder into its storage system."""

    def __init__(self, managed: BaseStorage) -> None:
        self.managed = managed

    async def store(self, task: Task, kind: Kind, result: Any, workdir: Path) -> Any:
        """Returns the result with each output file's local path replaced by its URL."""
        if not kind.output_files or not isinstance(result, dict):
            return result
        stored = dict(result)
        for declared in kind.output_files:
            local = result.get(declared.name)
            if local is None:
                continue
            source = workdir / local
            name = f"{kind.name}-{secrets.token_urlsafe(6)}{source.suffix}"
            path = f"{task.task_store['type']}/{task.account_id}/{task.key}/{name}"
            content_type = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
            await self.managed.put(path, source, content_type)
            stored[declared.name] = self.managed.url(path)
        return stored
