"""The call service's pure parts and its hang-up requests, without a daemon: the trigger
lock-out's keys and global budget, known CallSids, and an operator's hang-up that the call
carries out in its own task (trio MockClock, a fake call).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from aicallerd.call.registry import CallInfo, CallRegistry
from aicallerd.calllog import AsyncCallLog
from aicallerd.config import load_config
from aicallerd.service import HANG_UP_WAIT, OPERATOR_HANGUP_LINE, CallService
from aicallerd.shown import plain, shown
from aicallerd.throttle import FailureThrottle, address_key
from aicallerd.twilio.sids import valid_call_sid
from aicallerd.twilio.tokens import StreamTokens

SID = "CA" + "ab" * 16

# -- the trigger's lock-out -----------------------------------------------------------------


def test_ipv6_addresses_count_by_their_64():
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:198.51.100.7") == "198.51.100.7" == address_key("198.51.100.7")
    assert address_key("not an address\n" * 100) == ("not an address\n" * 100)[:64]


def test_one_prefix_is_locked_out_whichever_address_it_uses():
    t = FailureThrottle(free_failures=2, base_delay=10)
    for i in range(3):
        t.failure(address_key(f"2001:db8::{i}"), 0.0)
    assert t.retry_after(address_key("2001:db8::ffff"), 0.0) == 20.0
    assert t.retry_after(address_key("2001:db8:0:1::1"), 0.0) == 0.0


def test_global_budget_throttles_every_address_until_failures_age_out():
    t = FailureThrottle(free_failures=3, global_failures=5, global_window=600)
    for i in range(4):
        assert t.failure(f"198.51.100.{i}", 10.0 * i) == 0.0  # each address: 1 failure
    assert t.retry_after("203.0.113.1", 40.0) == 0.0  # 4 of 5: still open
    # The 5th trips it for everyone, until the oldest (at 0 s) leaves the window.
    assert t.failure("198.51.100.9", 40.0) == 560.0
    assert t.retry_after("203.0.113.1", 40.0) == 560.0
    assert t.retry_after("203.0.113.1", 599.0) == pytest.approx(1.0)
    assert t.retry_after("203.0.113.1", 600.0) == 0.0  # the oldest failure aged out
    assert t.failure("203.0.113.1", 600.0) == pytest.approx(10.0)  # back over the budget


# -- who a CallSid may be -------------------------------------------------------------------


def test_only_twilio_shaped_call_sids_are_valid():
    assert valid_call_sid(SID) and valid_call_sid("CA" + "0F" * 16)
    for bad in ("", "CA", "ca" + "0" * 32, "CA" + "0" * 33, "CA" + "g" * 32, "x]\n<0>x"):
        assert not valid_call_sid(bad), bad


def test_network_text_in_log_lines_is_bounded_and_escaped():
    assert plain("+15550001111") == "+15550001111"
    assert "\n" not in plain("a\n<0>b") and plain("a\n<0>b") == "'a\\n<0>b'"
    assert len(shown("x" * 1_000_000)) < 120


def test_a_live_or_finished_call_keeps_its_slot_against_a_replayed_offer():
    r = CallRegistry(2, StreamTokens(b"k" * 32))
    token = r.offer(CallInfo(call_sid=SID, direction="inbound"), 0.0)
    assert token is not None and r.claim(SID, token, 1.0) is not None
    assert r.is_known(SID)
    assert r.offer(CallInfo(call_sid=SID, direction="inbound"), 2.0) is None
    assert list(r.pending) == [] and r.in_use(2.0) == 1
    r.finish(SID)
    assert r.is_known(SID) and r.offer(CallInfo(call_sid=SID, direction="inbound"), 3.0) is None
    # A webhook retry before the stream is live still gets a fresh token for its line.
    other = "CA" + "cd" * 16
    assert r.offer(CallInfo(call_sid=other, direction="inbound"), 4.0) is not None
    assert r.offer(CallInfo(call_sid=other, direction="inbound"), 5.0) is not None


# -- hang-up is a request the call carries out ----------------------------------------------


class FakeCall:
    """A live call whose goodbye takes ``goodbye`` seconds, said by its own task."""

    def __init__(self, goodbye: float) -> None:
        self.goodbye = goodbye
        self.ended = trio.Event()
        self.requests: list[tuple[str, str]] = []
        self._asked = trio.Event()

    def request_hang_up(self, line: str, reason: str) -> None:
        self.requests.append((line, reason))
        self._asked.set()

    async def run(self) -> None:
        await self._asked.wait()
        await trio.sleep(self.goodbye)
        self.ended.set()


def service(tmp_path) -> CallService:
    cfg = load_config(None, {"STATE_DIRECTORY": str(tmp_path)})
    return CallService(cfg, AsyncCallLog(tmp_path / "calls.db"), lambda: None)


def live(svc: CallService, call: FakeCall, now: float) -> None:
    token = svc.registry.offer(CallInfo(call_sid=SID, direction="inbound"), now)
    assert token is not None
    info = svc.registry.claim(SID, token, now)
    assert info is not None
    info.session = call


@pytest.mark.parametrize("goodbye", [3.0, HANG_UP_WAIT + 10])
def test_operator_hangup_returns_when_the_call_has_ended(tmp_path, goodbye):
    svc = service(tmp_path)
    call = FakeCall(goodbye)

    async def main() -> tuple[str | None, float, float]:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call.run)
            live(svc, call, trio.current_time())
            status = await svc.hang_up(SID)
            returned = trio.current_time()
        return status, returned, trio.current_time()

    status, returned, call_over = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert status == "completed"
    assert call.requests == [(OPERATOR_HANGUP_LINE, "operator")]
    assert returned == pytest.approx(min(goodbye, HANG_UP_WAIT))
    # A slow goodbye is not cut by the operator's deadline: the call finishes it.
    assert call_over == pytest.approx(goodbye) and call.ended.is_set()


def test_ending_every_call_asks_each_and_refuses_new_streams(tmp_path):
    svc = service(tmp_path)
    call = FakeCall(1.0)
    live(svc, call, 0.0)
    assert svc.end_all("Goodbye!", "shutdown") == 1
    assert call.requests == [("Goodbye!", "shutdown")]
    assert svc.registry.draining and not svc.accepting
    assert svc.offer("CA" + "ef" * 16, "", {}).refusal == "not_ready"
