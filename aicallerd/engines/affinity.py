"""Keep each call's requests on one slot of the embedded llama.cpp server.

llama.cpp keeps a prompt cache per slot and, when a request names none, gives it the idle
slot whose cache shares the longest start with it. A call whose own slot was still busy
(a refused reply's stream being cancelled as the second try went out, a discarded
speculation) was handed another slot, often an empty one, and read its whole prompt again:
1.5 s before the first token on 2 cores instead of 0.2. Named (``id_slot``), the request
waits the few milliseconds the cancel takes and finds its history in the cache.

The call holds a :class:`SlotLease` for as long as it runs, set in :data:`LEASE` for its
tasks; :class:`SlotTable` (no I/O) gives each open lease a slot of its own. With more calls
than slots no call names one, as before: a call without a slot could be handed a busy
call's slot, and that call's next request would wait for the other's whole reply.
"""

from __future__ import annotations

import itertools
from contextvars import ContextVar


class SlotLease:
    """One call's claim on a slot, from its start to :meth:`close` (its end)."""

    __slots__ = ("open", "slot")

    def __init__(self) -> None:
        self.slot: int | None = None
        self.open = True

    def close(self) -> None:
        """The call is over: its slot may go to the next call."""
        self.open = False


LEASE: ContextVar[SlotLease | None] = ContextVar("aicaller_llm_slot_lease", default=None)
"""The lease of the call the current task works for; unset outside calls."""


class SlotTable:
    """Which lease holds which of ``slots`` slots."""

    def __init__(self, slots: int) -> None:
        self._holders: list[SlotLease | None] = [None] * max(0, slots)
        self._claimed = [0] * len(self._holders)
        self._clock = itertools.count(1)
        self._open: list[SlotLease] = []  # the open leases that have asked

    def slot_for(self, lease: SlotLease | None) -> int | None:
        """The slot ``lease`` keeps, claiming a free one on its first request (the one
        claimed longest ago: every call's cache starts with the same system prompt); None
        without an open lease, and for every lease while there are more than slots."""
        if lease is None or not lease.open:
            return None
        self._open = [held for held in self._open if held.open]
        if not any(held is lease for held in self._open):
            self._open.append(lease)
        if len(self._open) > len(self._holders):
            return None
        slot = lease.slot
        if slot is not None and slot < len(self._holders) and self._holders[slot] is lease:
            return slot
        free = [i for i, h in enumerate(self._holders) if h is None or not h.open]
        slot = min(free, key=self._claimed.__getitem__)
        self._holders[slot] = lease
        self._claimed[slot] = next(self._clock)
        lease.slot = slot
        return slot
