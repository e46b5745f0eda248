"""Delivering callbacks and errbacks from the outbox.

A task's final status and the deliveries it owes are committed together, so a delivery survives
a restart. Each POST carries the Standard Webhooks headers (`webhook-id`, the same on every
retry; `webhook-timestamp`; `webhook-signature`, an HMAC-SHA256 of `{id}.{timestamp}.{body}`
keyed with the account secret's UTF-8 bytes). A failed attempt (connection error, timeout,
non-2xx) is tried again on `RetrySchedule`; the outcome never changes the task's status.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import time

import aiohttp

from server.config import Config
from server.fetch import describe_failure, guard
from server.retry import RetrySchedule
from server.statuses import now_iso
from server.store import Delivery, SqliteStore
from server.urlguard import BlockedAddress

log = logging.getLogger(__name__)
BATCH = 100
MAX_IN_FLIGHT = 64


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one POST."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class Deliverer:
    """Sends due deliveries, at most `MAX_IN_FLIGHT` at once, and records each outcome."""

    def __init__(self, config: Config, store: SqliteStore, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.store = store
        self.session = session
        self.schedule = RetrySchedule(scale=config.callback_retry_scale)
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._loop_task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Tells the deliverer that new deliveries are due."""
        self._wake.set()

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="callbacks")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, *self._sending) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                due = await self.store.due_deliveries(time.time(), BATCH)
                for delivery in due:
                    await self._slots.acquire()
                    # A lease: if the server dies mid-POST, the delivery is due again later.
                    delivery.next_attempt = time.time() + self.config.callback_timeout + 5
                    await self.store.record_delivery(delivery)
                    task = asyncio.create_task(self._send(delivery))
                    self._sending.add(task)
                    task.add_done_callback(self._sending.discard)
                if len(due) == BATCH:
                    continue
                next_at = await self.store.next_delivery_time()
            except Exception:
                log.exception("the callbacks outbox could not be read")
                next_at = time.time() + 1
            wait = 3600.0 if next_at is None else max(0.0, next_at - time.time())
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a cancel that
            # arrives as the event is set, and stop() then waited an hour.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _send(self, d: Delivery) -> None:
        try:
            d.attempts += 1
            error = await self._post(d)
            if error is None:
                d.state, d.delivered_at, d.last_error = "delivered", now_iso(), None
            else:
                delay = self.schedule.delay_after(d.attempts)
                d.last_error = error
                if delay is None:
                    d.state = "failed"
                else:
                    d.next_attempt = time.time() + delay
            await self.store.record_delivery(d)
        finally:
            self._slots.release()
            self._wake.set()

    async def _post(self, d: Delivery) -> str | None:
        """One attempt: None when the receiver answered 2xx, else what went wrong."""
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": d.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(d.secret, d.id, timestamp, d.body),
        }
        timeout = aiohttp.ClientTimeout(total=self.config.callback_timeout)
        try:
            guard(self.config, d.url)
            async with self.session.post(
                d.url, data=d.body, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                await resp.content.readany()
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status} {resp.reason or ''}".rstrip()
        except (aiohttp.ClientError, OSError, TimeoutError, BlockedAddress, ValueError) as e:
            return describe_failure(d.url, e, self.config.callback_timeout)
