"""Per-account limits on creates (a token bucket) and on open streams."""

from __future__ import annotations

import time

from server.errors import TooManyRequests


class RateLimiter:
    """A token bucket per account: `rate` tasks per second, up to `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[int, tuple[float, float]] = {}  # account: (tokens, updated)

    def take(self, account_id: int, count: int) -> None:
        """Spends `count` tokens or raises TooManyRequests saying when to retry."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        tokens, updated = self._buckets.get(account_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
        if count > tokens:
            wait = max(1, int((count - tokens) / self.rate + 0.999))
            self._buckets[account_id] = (tokens, now)
            raise TooManyRequests(
                "tasks",
                "body",
                f"rate limit: at most {self.rate:g} tasks per second (bursts of {self.burst})",
                Retry_After=str(wait),
            )
        self._buckets[account_id] = (tokens - count, now)


class StreamLimiter:
    """Counts the open status streams of each account."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[int, int] = {}

    def acquire(self, account_id: int) -> None:
        """Takes one stream slot, or raises TooManyRequests."""
        count = self._open.get(account_id, 0)
        if count >= self.limit:
            raise TooManyRequests(
                "tasks",
                "request",
                f"too many open streams: at most {self.limit} per account",
                Retry_After="5",
            )
        self._open[account_id] = count + 1

    def release(self, account_id: int) -> None:
        left = self._open[account_id] - 1
        if left:
            self._open[account_id] = left
        else:
            del self._open[account_id]
