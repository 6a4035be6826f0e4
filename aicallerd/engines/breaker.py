"""A circuit breaker per cloud engine (pure: the caller passes the time).

A cloud engine that just failed is skipped for a few seconds (`retry_after`), so the rest of
a reply does not bounce between two voices and the next phrase does not wait on a dead
server again. After `threshold` failures in a row it is skipped for `cooldown` seconds
("open"); then exactly one request is let through ("half-open"): its success closes the
breaker, its failure opens it again. Any success resets the count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

THRESHOLD = 3
COOLDOWN_SECONDS = 30.0
RETRY_AFTER_SECONDS = 5.0


@dataclass
class Breaker:
    """State of one engine; `allow(now)` before a request, then `success()` or `failure()`."""

    threshold: int = THRESHOLD
    cooldown: float = COOLDOWN_SECONDS
    retry_after: float = RETRY_AFTER_SECONDS
    failures: int = 0
    reason: str = ""
    skip_until: float = 0.0
    trial_running: bool = False

    @property
    def is_open(self) -> bool:
        """True once `threshold` failures in a row have been seen (until a success)."""
        return self.failures >= self.threshold

    def allow(self, now: float) -> bool:
        """May a request go to the engine now? In half-open state only one at a time."""
        if now < self.skip_until:
            return False
        if self.is_open:
            if self.trial_running:
                return False
            self.trial_running = True
        return True

    def success(self) -> None:
        """The engine answered: close the breaker."""
        self.failures = 0
        self.reason = ""
        self.skip_until = 0.0
        self.trial_running = False

    def failure(self, now: float, reason: str) -> None:
        """The engine failed (error, timeout, refused): count it and skip it for a while."""
        self.failures += 1
        self.reason = reason
        self.trial_running = False
        self.skip_until = now + (self.cooldown if self.is_open else self.retry_after)

    def release(self) -> None:
        """A request was abandoned without a verdict (e.g. the caller hung up): let another
        request be the half-open trial."""
        self.trial_running = False

    def state(self, now: float, wall: float | None = None) -> str:
        """`ok`, `degraded: <reason>` or `open until HH:MM:SS: <reason>` (wall clock)."""
        if self.failures == 0:
            return "ok"
        if not self.is_open:
            return f"degraded: {self.reason}"
        if now >= self.skip_until:
            return f"half-open (trying again): {self.reason}"
        wall = time.time() if wall is None else wall
        until = time.strftime("%H:%M:%S", time.localtime(wall + self.skip_until - now))
        return f"open until {until}: {self.reason}"
