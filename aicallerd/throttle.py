"""Slow down guessing: failure counting with an exponential lock-out (sans-I/O).

The HTTP call trigger (``POST /call/<contact>``) is protected by a bearer token. A token long
enough cannot be guessed, but every guess still costs us a request, and a short one chosen by
a person could be. After ``free_failures`` wrong tokens from one address, that address is
locked out for ``base_delay`` seconds, doubling with every further failure up to
``max_delay``; while locked out it gets 429 without its token even being looked at, so the
lock-out cannot be raced. An address that stays quiet for ``forget_after`` seconds starts
over, and a correct token clears its record.

An address is what `address_key` makes of it: IPv6 clients are keyed by their /64 (one
customer's whole prefix, which they can rotate through freely), IPv4 by the address. And
because addresses are cheap to come by, there is a global budget too: after
``global_failures`` failures within ``global_window`` seconds from anyone, every address is
locked out until the oldest of them ages out of the window.

Time is passed in (``trio.current_time()`` in the daemon), so tests drive it with a clock.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass

_MAX_KEY = 64  # an unparseable address is kept as text, bounded


def address_key(address: str) -> str:
    """Whom a failure is counted against: the /64 of an IPv6 address, else the address."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address.strip()[:_MAX_KEY]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class _Record:
    failures: int
    last_failure: float
    locked_until: float


class FailureThrottle:
    def __init__(
        self,
        free_failures: int = 3,
        base_delay: float = 2.0,
        max_delay: float = 600.0,
        forget_after: float = 3600.0,
        max_addresses: int = 10_000,
        global_failures: int = 20,
        global_window: float = 600.0,
    ) -> None:
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_addresses = max_addresses
        self.global_window = global_window
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._recent: deque[float] = deque(maxlen=global_failures)  # latest failures, anyone

    def _global_wait(self, now: float) -> float:
        if len(self._recent) < (self._recent.maxlen or 0):
            return 0.0
        return max(0.0, self._recent[0] + self.global_window - now)

    def _get(self, address: str, now: float) -> _Record | None:
        record = self._records.get(address)
        if record is not None and now - record.last_failure >= self.forget_after:
            del self._records[address]
            return None
        return record

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again; 0 if it may try now."""
        record = self._get(address, now)
        mine = 0.0 if record is None else max(0.0, record.locked_until - now)
        return max(mine, self._global_wait(now))

    def failure(self, address: str, now: float) -> float:
        """Count a failed attempt; returns the lock-out it earned (0 while still free)."""
        record = self._get(address, now)
        if record is None:
            record = _Record(0, now, now)
        record.failures += 1
        record.last_failure = now
        self._recent.append(now)
        over = record.failures - self.free_failures
        delay = 0.0 if over < 0 else min(self.max_delay, self.base_delay * 2.0**over)
        record.locked_until = now + delay
        self._records[address] = record
        self._records.move_to_end(address)
        while len(self._records) > self.max_addresses:  # bounded memory under a flood
            self._records.popitem(last=False)
        return max(delay, self._global_wait(now))

    def success(self, address: str) -> None:
        self._records.pop(address, None)

    def failures(self, address: str, now: float) -> int:
        record = self._get(address, now)
        return 0 if record is None else record.failures
