"""The p50/p95 arithmetic behind `aicallerctl status` and the benchmark's tables."""

import random

import pytest

from aicallerd.call.metrics import LatencyWindow, TurnLegs, percentile
from aicallerd.cputime import CpuLedger


@pytest.mark.parametrize(
    ("q", "expected"),
    # The nearest-rank method's textbook example: the smallest value with at least q% of
    # the values at or below it.
    [(5, 15), (30, 20), (40, 20), (50, 35), (95, 50), (100, 50)],
)
def test_nearest_rank_textbook_example(q: float, expected: float) -> None:
    assert percentile([15, 20, 35, 40, 50], q) == expected


def test_p50_and_p95_of_one_to_a_hundred() -> None:
    values = [float(v) for v in range(1, 101)]
    random.Random(7).shuffle(values)
    before = list(values)
    assert (percentile(values, 50), percentile(values, 95)) == (50.0, 95.0)
    assert values == before  # the caller's list is not sorted in place


def test_small_samples_report_real_values() -> None:
    # With 12 turns (a benchmark run) p95 is the slowest turn; with one turn, both are it.
    twelve = [0.1 * i for i in range(1, 13)]
    assert percentile(twelve, 95) == max(twelve)
    assert percentile(twelve, 50) == twelve[5]
    assert percentile([0.42], 50) == percentile([0.42], 95) == 0.42


def test_no_data_is_none_not_zero() -> None:
    assert percentile([], 50) is None


def test_status_window_reports_milliseconds_over_its_last_turns() -> None:
    window = LatencyWindow(size=20)
    window.add(TurnLegs(voice_to_voice=9.0))  # pushed out of the window below
    for ms in range(100, 2100, 100):  # 20 turns: 0.1 s ... 2.0 s
        window.add(TurnLegs(voice_to_voice=ms / 1000, stt_tail=None))
    stats = window.stats()
    assert len(window) == 20
    assert stats["voice_to_voice"] == {"p50_ms": 1000, "p95_ms": 1900, "n": 20}
    assert stats["stt_tail"] == {"p50_ms": None, "p95_ms": None, "n": 0}


def test_every_answered_turn_counts_for_cpu_per_turn_even_past_the_window() -> None:
    ledger = CpuLedger()
    window = LatencyWindow(size=2, ledger=ledger)
    for _ in range(5):
        window.add(TurnLegs(voice_to_voice=0.8))
    assert len(window) == 2
    assert ledger.report()["turns"] == 5
