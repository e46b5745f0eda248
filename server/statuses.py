"""What a task is, as plain data, and the status objects the API sends for it."""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class Status(enum.StrEnum):
    """The steps of a task, with the reference's wire names."""

    QUEUED = "queued"
    EXECUTING = "executing"
    SUCCESS = "success"
    ERROR = "error"

    @property
    def ended(self) -> bool:
        return self in _ENDED


_ENDED = frozenset({Status.SUCCESS, Status.ERROR})

_BASE32 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# Maps any byte to the base32 letter of its low 5 bits: 256 is a multiple of 32, so a uniformly
# random byte gives a uniformly random letter.
_LETTER_OF_BYTE = bytes.maketrans(bytes(range(256)), bytes(_BASE32[b & 31] for b in range(256)))
_KEY_LENGTH = 26  # letters of 5 random bits each: 130 bits
# Random bytes from the OS, drawn 4 KiB at a time: one system call per 157 keys.
_entropy = bytearray()


def new_key() -> str:
    """A task key: 130 random bits as 26 upper-case base32 characters (the reference's form)."""
    global _entropy
    if len(_entropy) < _KEY_LENGTH:
        _entropy = bytearray(os.urandom(4096))
    key = _entropy[:_KEY_LENGTH].translate(_LETTER_OF_BYTE).decode()
    del _entropy[:_KEY_LENGTH]
    return key


_second = (0, "")  # the last second formatted, and its text up to the seconds


def now_iso() -> str:
    """The current time as the reference writes it: ISO 8601, microseconds, `+00:00`. A task
    takes three timestamps, so the date and time of day are formatted once a second."""
    global _second
    now = time.time()
    whole = int(now)
    if whole != _second[0]:
        _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{int((now - whole) * 1_000_000):06d}+00:00"


@dataclass
class Task:
    """One task as the store keeps it."""

    key: str
    account_id: int
    task_name: str
    params: dict[str, Any]
    task_store: dict[str, Any]
    task_metas: dict[str, Any] | None
    status: Status
    queued_at: str
    started_at: str | None = None
    completed_at: str | None = None
    progress: Any = 0
    result: Any = None
    error: Any = None
    attempts: int = 0
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def to_status(self) -> dict[str, Any]:
        """The status object of the reference."""
        events = {"queued": self.queued_at}
        if self.started_at:
            events["started"] = self.started_at
        if self.completed_at:
            events["completed"] = self.completed_at
        out: dict[str, Any] = {
            "status": self.status,  # a StrEnum: orjson writes its value
            "key": self.key,
            "progress": None if self.status.ended else self.progress,
            "events": events,
        }
        if self.status is Status.SUCCESS or (
            self.status is Status.EXECUTING and self.result is not None
        ):
            out["result"] = self.result
        elif self.status is Status.ERROR:
            out["error"] = self.error
        return out
