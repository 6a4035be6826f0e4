"""Per-turn latency legs and the rolling percentiles the status command reports."""

from __future__ import annotations

import collections
import math
from dataclasses import asdict, dataclass

from aicallerd.cputime import LEDGER, CpuLedger

LEG_NAMES = (
    "endpoint_wait",
    "stt_tail",
    "llm_first_token",
    "first_sentence",
    "tts_first_audio",
    "first_frame",
    "voice_to_voice",
)


@dataclass
class TurnLegs:
    """Seconds for each leg of one turn, all measured from the end of the caller's speech
    except where noted; ``None`` when the turn never got that far."""

    endpoint_wait: float | None = None  # speech end -> end-of-turn decision
    stt_tail: float | None = None  # end-of-turn decision -> full transcript
    llm_first_token: float | None = None  # LLM request -> first token
    first_sentence: float | None = None  # LLM request -> first complete sentence
    tts_first_audio: float | None = None  # first sentence -> its first audio
    first_frame: float | None = None  # end-of-turn decision -> first frame sent
    voice_to_voice: float | None = None  # speech end -> first reply frame sent
    speculative: bool = False
    interrupted: bool = False

    def as_ms(self) -> dict[str, int | bool | None]:
        out: dict[str, int | bool | None] = {}
        for key, value in asdict(self).items():
            if isinstance(value, bool) or value is None:
                out[key] = value
            else:
                out[key] = round(value * 1000)
        return out

    def summary(self) -> str:
        parts = []
        for name in LEG_NAMES:
            value = getattr(self, name)
            parts.append(f"{name}={'-' if value is None else f'{value * 1000:.0f}ms'}")
        if self.speculative:
            parts.append("speculative")
        if self.interrupted:
            parts.append("interrupted")
        return " ".join(parts)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no data (so a status table can say '-')."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class LatencyWindow:
    """The last ``size`` turns' legs, shared by all calls, for p50/p95 in status. Every turn
    added is also counted in ``ledger``, the denominator of CPU seconds per answered turn."""

    def __init__(self, size: int = 200, ledger: CpuLedger | None = LEDGER) -> None:
        self._turns: collections.deque[TurnLegs] = collections.deque(maxlen=size)
        self._ledger = ledger

    def add(self, legs: TurnLegs) -> None:
        self._turns.append(legs)
        if self._ledger is not None:
            self._ledger.count_turn()

    def __len__(self) -> int:
        return len(self._turns)

    def stats(self) -> dict[str, dict[str, int | None]]:
        out: dict[str, dict[str, int | None]] = {}
        for name in LEG_NAMES:
            values = [v for t in self._turns if (v := getattr(t, name)) is not None]
            p50, p95 = percentile(values, 50), percentile(values, 95)
            out[name] = {
                "p50_ms": None if p50 is None else round(p50 * 1000),
                "p95_ms": None if p95 is None else round(p95 * 1000),
                "n": len(values),
            }
        return out
