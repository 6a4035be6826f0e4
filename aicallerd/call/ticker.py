"""A shared tick for many waiting tasks (the quiet calls' reads)."""

from __future__ import annotations

import trio

__all__ = ["Ticker"]


class Ticker:
    """Wakes any number of tasks together, at most ``period`` seconds after they wait.

    Hundreds of quiet calls each sleeping 0.1 s cost hundreds of timers (each a deadline, a
    cancellation and an exception to wake); waiting on one shared tick costs a parked task.
    The first task to wait keeps the time for everyone, so no background task owns the
    ticker, and one with no waiters costs nothing. A keeper that is cancelled wakes the
    others early, which only means they read their frames sooner.
    """

    def __init__(self, period: float) -> None:
        self.period = period
        self._tick: trio.Event | None = None

    async def wait(self) -> None:
        tick = self._tick
        if tick is not None:
            await tick.wait()
            return
        self._tick = tick = trio.Event()
        try:
            await trio.sleep(self.period)
        finally:
            self._tick = None
            tick.set()
