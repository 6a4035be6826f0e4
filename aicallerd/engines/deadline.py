"""Earliest deadline first for an engine every call shares (the local voice).

Piper runs one sentence at a time for every call on the box. In arrival order, a call's
prefetch of its third sentence (needed seconds from now) went ahead of another call's first
words (needed now, the caller waiting in silence), and with four callers replies ran dry
between sentences. So each synthesis says when its audio will be needed (:data:`DUE`, set
by the reply for its task) and :class:`DeadlineLimiter` hands the engine to the earliest.
"""

from __future__ import annotations

import heapq
import itertools
from contextvars import ContextVar
from dataclasses import dataclass, field

import trio

DUE: ContextVar[float | None] = ContextVar("aicaller_engine_due", default=None)
"""When the current task's engine output is needed (trio time); unset: now."""


@dataclass(order=True)
class _Waiter:
    due: float
    seq: int
    borrower: object = field(compare=False)
    granted: trio.Event = field(compare=False, default_factory=trio.Event)
    gone: bool = field(compare=False, default=False)


class DeadlineLimiter:
    """A ``trio.CapacityLimiter`` for ``trio.to_thread.run_sync`` whose waiters are served
    by :data:`DUE` (ties and unset dues in arrival order), not by arrival alone.

    As with a CapacityLimiter, a thread abandoned on cancel keeps its token until it ends.
    """

    def __init__(self, total_tokens: int = 1) -> None:
        self.total_tokens = total_tokens
        self._borrowers: set[object] = set()
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()

    @property
    def borrowed_tokens(self) -> int:
        return len(self._borrowers)

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.gone)

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if len(self._borrowers) < self.total_tokens and not self.waiting:
            self._borrowers.add(borrower)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        due = DUE.get()
        waiter = _Waiter(trio.current_time() if due is None else due, next(self._seq), borrower)
        heapq.heappush(self._waiters, waiter)
        try:
            await waiter.granted.wait()
        except BaseException:
            if waiter.granted.is_set():  # granted as we were cancelled: pass it on
                self.release_on_behalf_of(borrower)
            else:
                waiter.gone = True
            raise

    def release_on_behalf_of(self, borrower: object) -> None:
        self._borrowers.remove(borrower)
        while self._waiters and len(self._borrowers) < self.total_tokens:
            waiter = heapq.heappop(self._waiters)
            if not waiter.gone:
                self._borrowers.add(waiter.borrower)
                waiter.granted.set()

    async def acquire(self) -> None:
        await self.acquire_on_behalf_of(trio.lowlevel.current_task())

    def release(self) -> None:
        self.release_on_behalf_of(trio.lowlevel.current_task())

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()
