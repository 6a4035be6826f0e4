import re

import pytest

from aicallerd.twilio.tokens import StreamTokens

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000.0


def test_issued_token_verifies_once_for_its_call() -> None:
    tokens = StreamTokens(SECRET, ttl=120.0)
    token = tokens.issue("CA1", NOW)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", token) and len(token) < 100
    assert tokens.verify("CA1", token, NOW + 1)
    assert not tokens.verify("CA1", token, NOW + 2)  # single use


def test_failed_attempt_does_not_burn_the_token() -> None:
    tokens = StreamTokens(SECRET)
    token = tokens.issue("CA1", NOW)
    assert not tokens.verify("CA2", token, NOW)
    assert tokens.verify("CA1", token, NOW)


def test_tokens_for_the_same_call_are_distinct() -> None:
    tokens = StreamTokens(SECRET)
    first, second = tokens.issue("CA1", NOW), tokens.issue("CA1", NOW)
    assert first != second
    assert tokens.verify("CA1", first, NOW) and tokens.verify("CA1", second, NOW)


def test_expiry() -> None:
    tokens = StreamTokens(SECRET, ttl=10.0)
    token = tokens.issue("CA1", NOW)
    assert not tokens.verify("CA1", token, NOW + 10.0)
    token = tokens.issue("CA1", NOW)
    assert tokens.verify("CA1", token, NOW + 9.9)


def test_works_with_small_or_negative_clock_values() -> None:
    tokens = StreamTokens(SECRET, ttl=5.0)
    token = tokens.issue("CA1", -100.0)
    assert tokens.verify("CA1", token, -99.0)


def test_other_secret_rejects() -> None:
    token = StreamTokens(SECRET).issue("CA1", NOW)
    assert not StreamTokens(b"another secret").verify("CA1", token, NOW)


def test_tampered_tokens_are_rejected() -> None:
    tokens = StreamTokens(SECRET, ttl=10.0)
    token = tokens.issue("CA1", NOW)
    expiry, nonce, mac = token.split(".")
    later = str(int(expiry) + 3_600_000)
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    for forged in [
        f"{later}.{nonce}.{mac}",  # extended expiry
        f"{expiry}.{nonce}x.{mac}",
        f"{expiry}.{nonce}.{flipped}",
        f"{expiry}.{nonce}.{mac}.",
        f"{expiry}.{mac}",
        f" {token}",
    ]:
        assert not tokens.verify("CA1", forged, NOW), forged
    assert tokens.verify("CA1", token, NOW)


@pytest.mark.parametrize("garbage", ["", ".", "..", "a.b.c", "x" * 500, "1.é.ü", "1.2.3.4"])
def test_garbage_is_rejected(garbage: str) -> None:
    assert not StreamTokens(SECRET).verify("CA1", garbage, NOW)


def test_used_set_is_pruned_after_expiry() -> None:
    tokens = StreamTokens(SECRET, ttl=1.0)
    for i in range(50):
        assert tokens.verify("CA1", tokens.issue("CA1", NOW + i), NOW + i)
    assert len(tokens._used) <= 2
    # an expired token stays rejected after it is forgotten
    old = tokens.issue("CA1", NOW)
    assert not tokens.verify("CA1", old, NOW + 100)


def test_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError):
        StreamTokens(b"")
    with pytest.raises(ValueError):
        StreamTokens(SECRET, ttl=0)
