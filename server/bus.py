"""The status bus: every committed status change goes through here, so a stream, a blocked
create, a blocked status and the callbacks all see the same sequence.

The bus keeps the latest status of every task that has not ended (the store has the ended
ones), numbered with a version so a subscriber that took a snapshot can drop what it has
already seen. Each subscriber holds at most a few pending statuses per task: a newer progress
update replaces an older one that was not sent yet, so a slow reader costs bounded memory and
a fast task does not flood it, while every change of status (queued, executing, ended) is kept.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from typing import Any

from server.statuses import Task

Status = dict[str, Any]
_ENDED = ("success", "error")


class Subscription:
    """The statuses of some tasks, as they change."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = list(dict.fromkeys(keys))
        self.seen: dict[str, int] = {}
        self.pending: dict[str, list[Status]] = {}
        self.changed = asyncio.Event()

    def offer(self, version: int, status: Status) -> None:
        key = status["key"]
        if version <= self.seen.get(key, -1):
            return
        self.seen[key] = version
        queue = self.pending.setdefault(key, [])
        if queue and queue[-1]["status"] == status["status"] and status["status"] not in _ENDED:
            queue[-1] = status
        else:
            queue.append(status)
        self.changed.set()

    def take(self) -> list[Status]:
        """Everything pending, oldest first per task."""
        out = [s for queue in self.pending.values() for s in queue]
        self.pending.clear()
        self.changed.clear()
        return out


class Bus:
    """In-process publish/subscribe of task statuses."""

    def __init__(self) -> None:
        self._versions = itertools.count(1)
        self._live: dict[str, tuple[int, Status, int]] = {}
        self._subscribers: dict[str, set[Subscription]] = {}

    def publish(self, task: Task) -> None:
        """Announces a task's status; call it only once that status is committed."""
        version = next(self._versions)
        status = task.to_status()
        if task.status.ended:
            self._live.pop(task.key, None)
        else:
            self._live[task.key] = (version, status, task.account_id)
        for sub in self._subscribers.get(task.key, ()):
            sub.offer(version, status)

    def live(self, key: str, account_id: int) -> tuple[int, Status] | None:
        """The latest status of the account's task if it has not ended, with its version."""
        entry = self._live.get(key)
        if entry is None or entry[2] != account_id:
            return None
        return entry[0], entry[1]

    @property
    def live_count(self) -> int:
        return len(self._live)

    def subscribe(self, keys: Iterable[str]) -> Subscription:
        sub = Subscription(keys)
        for key in sub.keys:
            self._subscribers.setdefault(key, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        for key in sub.keys:
            subs = self._subscribers.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[key]

    @property
    def subscriber_count(self) -> int:
        return len({id(s) for subs in self._subscribers.values() for s in subs})
