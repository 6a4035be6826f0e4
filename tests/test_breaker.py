"""The circuit breaker and the hand-over point of a dropped sentence (pure, fake time)."""

import pytest

from aicallerd.engines.breaker import Breaker
from aicallerd.engines.handover import unspoken_text


def test_breaker_skips_after_a_failure_and_opens_after_three() -> None:
    b = Breaker(threshold=3, cooldown=30.0, retry_after=5.0)
    assert b.allow(0.0) and b.state(0.0) == "ok"
    b.failure(0.0, "HTTP 500")
    assert b.state(1.0) == "degraded: HTTP 500"
    assert not b.allow(4.9)  # the rest of that reply stays local
    assert b.allow(5.0)
    b.failure(5.0, "HTTP 500")
    assert b.allow(10.0)
    b.failure(10.0, "refused")
    assert b.is_open
    assert not b.allow(39.9)
    assert b.state(20.0, wall=0.0).startswith("open until ")
    assert b.state(20.0, wall=0.0).endswith(": refused")


def test_breaker_half_open_lets_one_trial_through_then_closes_on_success() -> None:
    b = Breaker(threshold=2, cooldown=30.0, retry_after=1.0)
    b.failure(0.0, "x")
    b.failure(1.0, "x")
    assert b.allow(31.0)  # the trial
    assert not b.allow(31.0)  # others meanwhile stay local
    assert b.state(31.0).startswith("half-open")
    b.success()
    assert b.state(31.5) == "ok" and b.allow(31.5) and b.allow(31.5)


def test_breaker_failed_trial_reopens_for_a_full_cooldown() -> None:
    b = Breaker(threshold=2, cooldown=30.0, retry_after=1.0)
    b.failure(0.0, "x")
    b.failure(1.0, "x")
    assert b.allow(31.0)
    b.failure(31.0, "still down")
    assert not b.allow(60.9) and b.allow(61.0)


def test_abandoned_trial_frees_the_slot() -> None:
    b = Breaker(threshold=1, cooldown=10.0)
    b.failure(0.0, "x")
    assert b.allow(10.0)
    b.release()  # the caller hung up mid-request: no verdict
    assert b.allow(10.0)


def test_a_success_resets_the_count() -> None:
    b = Breaker(threshold=3, retry_after=0.0)
    for t in (0.0, 1.0):
        b.failure(t, "x")
    b.success()
    for t in (2.0, 3.0):
        b.failure(t, "x")
    assert not b.is_open


SENTENCE = "Your table for two is booked for seven tonight."


@pytest.mark.parametrize(
    ("seconds", "rest"),
    [
        (0.0, SENTENCE),
        (0.3, SENTENCE),
        (1.0, "table for two is booked for seven tonight."),
        (2.0, "is booked for seven tonight."),
        (3.0, "seven tonight."),
        (10.0, ""),
    ],
)
def test_unspoken_text_backs_up_a_word(seconds: float, rest: str) -> None:
    assert unspoken_text(SENTENCE, seconds) == rest


def test_unspoken_text_follows_the_speed() -> None:
    slow = unspoken_text(SENTENCE, 2.0, speed=0.7)
    fast = unspoken_text(SENTENCE, 2.0, speed=1.2)
    assert len(slow) > len(fast) > 0
