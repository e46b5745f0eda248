"""When to try a failed callback again: a small pure schedule, tested offline."""

from __future__ import annotations

from dataclasses import dataclass

# Seconds to wait after each failed attempt, the Standard Webhooks convention's schedule:
# 8 attempts over about 27 hours.
DEFAULT_DELAYS = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


@dataclass(frozen=True)
class RetrySchedule:
    """Delays between attempts, multiplied by `scale` (tests shrink it)."""

    delays: tuple[float, ...] = DEFAULT_DELAYS
    scale: float = 1.0

    @property
    def max_attempts(self) -> int:
        return len(self.delays) + 1

    def delay_after(self, attempts: int) -> float | None:
        """Seconds before the next attempt once `attempts` have failed, or None to give up."""
        if attempts < 1 or attempts > len(self.delays):
            return None
        return self.delays[attempts - 1] * self.scale
