"""The sans-I/O pieces behind the service: trigger throttle, call registry, reload merge,
dial targets, the proxy-aware client address; and the Dialer against the fake Twilio REST.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio
import trio.testing
from fakes.twilio_rest import GEO_PERMISSION, FakeTwilioRest

from aicallerd.call.registry import CallInfo, CallRegistry
from aicallerd.config import Config, load_config
from aicallerd.control.protocol import (
    E_BUSY,
    E_INVALID_NUMBER,
    E_NOT_CONFIGURED,
    E_TWILIO_REFUSED,
    E_UNKNOWN_CONTACT,
    ControlError,
)
from aicallerd.outbound import Dialer, resolve_target
from aicallerd.reload import merge_reloadable, secrets_of
from aicallerd.throttle import FailureThrottle
from aicallerd.twilio.tokens import StreamTokens
from aicallerd.web import client_address

FROM = "+15557654321"


def config(tmp_path: Path, text: str = "") -> Config:
    path = tmp_path / "aicaller.conf"
    path.write_text(text)
    return load_config(path, {})


# -- FailureThrottle ------------------------------------------------------------------------


def test_throttle_locks_out_after_free_failures_and_doubles():
    t = FailureThrottle(free_failures=3, base_delay=2, max_delay=10, forget_after=100)
    assert [t.failure("a", 0.0) for _ in range(2)] == [0.0, 0.0]
    assert t.retry_after("a", 0.0) == 0.0
    assert t.failure("a", 0.0) == 2.0
    assert t.retry_after("a", 1.0) == 1.0
    assert t.retry_after("b", 1.0) == 0.0  # per address
    assert t.failure("a", 2.0) == 4.0
    assert t.failure("a", 6.0) == 8.0
    assert t.failure("a", 14.0) == 10.0  # capped
    t.success("a")
    assert t.retry_after("a", 14.0) == 0.0 and t.failures("a", 14.0) == 0


def test_throttle_forgets_quiet_addresses_and_bounds_memory():
    t = FailureThrottle(free_failures=1, base_delay=1, forget_after=60, max_addresses=3)
    t.failure("a", 0.0)
    assert t.failures("a", 59.0) == 1
    assert t.failures("a", 60.0) == 0
    for i in range(5):
        t.failure(f"x{i}", 100.0)
    assert [t.failures(f"x{i}", 100.0) for i in range(5)] == [0, 0, 1, 1, 1]


def test_throttle_on_trio_time_with_a_mock_clock():
    """The daemon passes trio.current_time(); a lock-out ends when the clock says so."""
    t = FailureThrottle(free_failures=1, base_delay=30)

    async def main() -> list[float]:
        waits = [t.failure("198.51.100.1", trio.current_time())]
        await trio.sleep(29)
        waits.append(t.retry_after("198.51.100.1", trio.current_time()))
        await trio.sleep(1)
        waits.append(t.retry_after("198.51.100.1", trio.current_time()))
        return waits

    clock = trio.testing.MockClock(autojump_threshold=0)
    assert trio.run(main, clock=clock) == [30.0, pytest.approx(1.0), 0.0]


# -- CallRegistry ---------------------------------------------------------------------------


def registry(max_calls: int = 2) -> CallRegistry:
    return CallRegistry(max_calls, StreamTokens(b"k" * 32), offer_ttl=60, dial_ttl=180)


def outbound(**kw) -> CallInfo:
    return CallInfo(call_sid="", direction="outbound", to_number="+15551230000", **kw)


def test_outbound_call_holds_a_line_from_dialling_to_hang_up():
    r = registry(max_calls=1)
    info = outbound(contact="mom", prompt="p")
    nonce = r.reserve_outbound(info, 0.0)
    assert nonce and len(nonce) >= 20
    assert r.reserve_outbound(outbound(), 0.0) is None  # the only line is taken
    assert r.offer(CallInfo("CAin", "inbound"), 0.0) is None  # inbound is busy too
    r.placed(nonce, "CAout")
    assert r.find("CAout") == (info, "dialing")
    # Twilio fetches /voice?call=<nonce> when mom answers.
    assert r.take_outbound(nonce, "CAout") is info
    assert r.take_outbound(nonce, "CAout") is None  # single use
    token = r.offer(info, 1.0, reserved=True)
    assert token is not None and r.find("CAout") == (info, "pending")
    assert r.claim("CAout", token, 2.0) is info
    assert r.find("CAout") == (info, "active")
    assert r.totals["placed"] == 1 and r.totals["answered"] == 1
    r.finish("CAout")
    assert r.has_room(3.0)


def test_voice_may_arrive_before_the_rest_answer():
    r = registry()
    info = outbound()
    nonce = r.reserve_outbound(info, 0.0)
    assert r.take_outbound(nonce, "CAearly") is info and info.call_sid == "CAearly"


def test_a_nonce_is_bound_to_its_call():
    r = registry()
    nonce = r.reserve_outbound(outbound(), 0.0)
    r.placed(nonce, "CAmine")
    assert r.take_outbound(nonce, "CAother") is None
    assert r.take_outbound("guessed", "CAmine") is None


def test_refused_or_unanswered_calls_free_their_line():
    r = registry(max_calls=1)
    nonce = r.reserve_outbound(outbound(), 0.0)
    r.cancel_outbound(nonce)
    assert r.has_room(0.0)
    nonce = r.reserve_outbound(outbound(), 0.0)
    r.placed(nonce, "CAnoanswer")
    assert r.forget("CAnoanswer") is not None and r.has_room(0.0)
    nonce = r.reserve_outbound(outbound(), 0.0)
    assert not r.has_room(179.0) and r.has_room(181.0)  # dial_ttl


def test_webhook_retry_keeps_the_call_and_its_prompt():
    r = registry()
    info = outbound(prompt="remind her")
    nonce = r.reserve_outbound(info, 0.0)
    r.take_outbound(nonce, "CA1")
    first = r.offer(info, 0.0, reserved=True)
    again = r.offer(CallInfo("CA1", "outbound"), 1.0)  # retry: the nonce is spent
    assert first != again and r.pending["CA1"] is info
    assert r.claim("CA1", again, 2.0) is info and info.prompt == "remind her"


def test_draining_refuses_new_calls():
    r = registry()
    r.draining = True
    assert r.offer(CallInfo("CA1", "inbound"), 0.0) is None
    assert r.reserve_outbound(outbound(), 0.0) is None


# -- reload ---------------------------------------------------------------------------------


def test_reload_keeps_restart_only_settings_and_names_them(tmp_path):
    old = config(tmp_path, '[server]\nlisten = "127.0.0.1:5000"\n')
    new = config(
        tmp_path,
        '[server]\nlisten = "0.0.0.0:6000"\nmax_concurrent_calls = 9\n'
        '[stt]\nmodel = "base.en"\n[llm]\ntemperature = 0.9\nmodel = "x"\n'
        '[call]\ngreeting = "Hi!"\n[twilio]\n'
        'call_trigger_token = "tok-123456-0123456789abcdef01234"\n',
    )
    effective, restart = merge_reloadable(old, new)
    assert restart == ["[server] listen", "[stt] model", "[llm] model"]
    assert effective.server.listen == "127.0.0.1:5000"
    assert effective.stt == old.stt and effective.llm.model == old.llm.model
    assert effective.server.max_concurrent_calls == 9
    assert effective.llm.temperature == 0.9 and effective.call.greeting == "Hi!"
    assert secrets_of(effective) == ["tok-123456-0123456789abcdef01234"]
    assert merge_reloadable(old, old) == (old, [])


# -- dial targets ---------------------------------------------------------------------------


def test_resolve_target(tmp_path):
    cfg = config(tmp_path, '[contacts]\nMom = {number = "+15551230000", prompt = "p"}\n')
    assert resolve_target(cfg, "MOM").number == "+15551230000"
    assert resolve_target(cfg, "mom").contact.prompt == "p"
    assert resolve_target(cfg, "+1 (555) 000-1234").number == "+15550001234"
    with pytest.raises(ControlError) as exc:
        resolve_target(cfg, "aunt")
    assert exc.value.code == E_UNKNOWN_CONTACT
    assert exc.value.message == "unknown contact 'aunt' (known: mom)"
    with pytest.raises(ControlError) as exc:
        resolve_target(cfg, "555 1234")
    assert exc.value.code == E_INVALID_NUMBER


def test_client_address_trusts_only_a_local_proxy():
    assert client_address("127.0.0.1", "203.0.113.7") == "203.0.113.7"
    assert client_address("::1", "10.0.0.1, 203.0.113.7") == "203.0.113.7"
    assert client_address("198.51.100.2", "203.0.113.7") == "198.51.100.2"
    assert client_address("127.0.0.1", "") == "127.0.0.1"


# -- Dialer against the fake Twilio REST ----------------------------------------------------


@pytest.fixture
def fake():
    with FakeTwilioRest() as server:
        yield server


def dial_config(tmp_path: Path, fake: FakeTwilioRest, **twilio: str) -> Config:
    fields = {
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from_number": FROM,
        "api_base": fake.base_url,
        **twilio,
    }
    body = "".join(f'{k} = "{v}"\n' for k, v in fields.items())
    return config(
        tmp_path,
        f'[server]\nmax_concurrent_calls = 1\n[twilio]\n{body}[contacts]\nmom = "+15551230000"\n',
    )


def dial(cfg: Config, r: CallRegistry, *targets: str, prompt: str | None = None):
    """Place calls in one trio run (trio's clock starts anew in each run)."""

    async def main():
        dialer = Dialer(r)
        try:
            return [await dialer.place(cfg, target, prompt) for target in targets]
        finally:
            await dialer.aclose()

    return trio.run(main)


def test_dialer_places_the_call_with_our_voice_url(tmp_path, fake):
    cfg = dial_config(tmp_path, fake)
    r = registry(max_calls=1)
    [(info, created)] = dial(cfg, r, "mom", prompt="Remind her about Sunday.")
    call = fake.call(created.sid)
    nonce = call.get("Url").split("?call=")[1]
    assert call.get("Url") == f"{cfg.voice_url}?call={nonce}"
    assert call.status_callback == cfg.server.public_url + "/status"
    assert call.get("Timeout") == "40"
    assert r.dialing[nonce] is info and info.call_sid == created.sid
    assert (info.contact, info.prompt) == ("mom", "Remind her about Sunday.")
    with pytest.raises(ControlError) as exc:  # the one line is ringing
        dial(cfg, registry(max_calls=1), "mom", "mom")
    assert exc.value.code == E_BUSY


def test_dialer_refusal_frees_the_line(tmp_path, fake):
    fake.refuse = GEO_PERMISSION
    r = registry(max_calls=1)
    with pytest.raises(ControlError) as exc:
        dial(dial_config(tmp_path, fake), r, "mom")
    assert exc.value.code == E_TWILIO_REFUSED and exc.value.details["twilio_code"] == 21215
    assert r.dialing == {} and r.has_room(0.0)


def test_dialer_needs_account_and_number(tmp_path, fake):
    cfg = dial_config(tmp_path, fake, from_number="")
    with pytest.raises(ControlError) as exc:
        dial(cfg, registry(), "mom")
    assert exc.value.code == E_NOT_CONFIGURED
    assert "[twilio] from_number" in exc.value.message
    assert dataclasses.replace(cfg.twilio, from_number=FROM).from_number == FROM
