"""The benchmark's CPU-per-leg arithmetic: deltas between two status readings, per turn."""

from bench.report import cpu_legs, cpu_legs_table


def reading(turns: int, **seconds: float) -> dict:
    return {"since_s": 1.0, "turns": turns, "seconds": seconds}


def test_cpu_per_turn_is_the_run_s_delta_over_the_run_s_turns() -> None:
    before = reading(2, vad=0.1, stt=1.0, llm=2.0, tts=1.0, framing=0.5, other=0.2)
    after = reading(6, vad=0.3, stt=2.2, llm=4.0, tts=3.0, framing=1.3, other=0.2)
    legs = cpu_legs(before, after)
    assert legs is not None and legs["turns"] == 4
    assert legs["seconds"]["stt"] == 1.2 and legs["seconds"]["other"] == 0.0
    assert legs["seconds"]["total"] == 6.2
    assert legs["per_turn"] == {
        "vad": 0.05,
        "stt": 0.3,
        "llm": 0.5,
        "tts": 0.5,
        "framing": 0.2,
        "other": 0.0,
        "total": 1.55,
    }
    text = cpu_legs_table(legs)
    assert "| llm | 0.500 | 2.00 | 32 |" in text
    assert "| total | 1.550 | 6.20 | 100 |" in text


def test_no_turn_or_no_reading_is_said_not_divided() -> None:
    legs = cpu_legs(reading(3, stt=1.0), reading(3, stt=1.5))
    assert legs is not None and legs["per_turn"]["stt"] is None and legs["seconds"]["stt"] == 0.5
    assert cpu_legs(None, reading(1, stt=1.0)) is None
    assert "not available" in cpu_legs_table(None)
