"""aicaller latency benchmark: the real daemon, driven through the product's Twilio stand-in.

    make bench                      # conversation: 12 caller turns, per-leg and caller-side p50/p95
    make bench-load                 # --concurrency 1,2,4,8: N simultaneous callers, 3 turns each
    make bench-bargein              # --barge-in: caller talks over the agent, onset -> clear
    make bench-all                  # all three against one daemon
    make bench ARGS="--set turn.done_speaking_silence_seconds=0.5"   # try a setting

The daemon runs on its embedded defaults (engines, endpointing, prompts) with a temporary
config that only sets the loopback port, an auth token and enough call slots. The caller's
voice is espeak-ng (``bench/utterances/``), the agent's is Piper. Results are printed as
markdown and saved as JSON (plus the daemon's log) under ``bench/results/``.

Voice-to-voice is reported three ways: the daemon's own leg (end of speech in the audio ->
first reply frame sent), and on the caller's side from the end of the caller's last frame to
(a) the first agent frame received (``TurnResult.latency``) and (b) the first audible agent
frame played by the simulated Twilio buffer (what a caller hears).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio

from aicallerd.call.lines import FALLBACK_LINE
from aicallerd.call.metrics import LEG_NAMES as LEGS
from aicallerd.call.metrics import percentile
from bench import frames as fr
from bench.daemon import Daemon, DaemonError, running_daemon
from bench.daemonlog import DaemonTurn, barge_ins_of, notable, turns_of
from bench.report import (
    CpuMeter,
    cpu_legs_table,
    cpu_line,
    machine_info,
    machine_line,
    ms,
    table,
    wait_idle,
)
from bench.utterances import Line, load_script
from bench.wer import wer

RESULTS = Path(__file__).parent / "results"
FRAME = 160  # 20 ms of 8 kHz audio
AUDIBLE_PEAK = 300  # int16 peak a played frame needs to count as audible agent speech
PAUSE = 0.4  # caller pause before speaking after the agent falls quiet
QUIET = 1.5  # agent silence that means "the reply is over"
REPLY_TIMEOUT = 45.0  # per reply (the stand-in moves on after this)


def log(msg: str) -> None:
    """Progress on stderr (stdout is the report)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- one call ------------------------------------------------------------------------------


@dataclass
class Said:
    """A script line as used in a call."""

    line: Line
    barge_in_after: float | None = None


@dataclass
class TurnMetrics:
    """Everything measured about one caller utterance and the reply to it."""

    said: str
    said_seconds: float
    barge_in_after: float | None
    heard: str | None = None  # what the daemon transcribed (its turn log line)
    wer: float | None = None
    agent: str | None = None
    legs: dict[str, float | None] = field(default_factory=dict)  # daemon legs, ms
    speculative: bool = False
    interrupted: bool = False  # the daemon cut this turn's reply short
    v2v_frame_ms: float | None = None  # caller side: end of speech -> first agent frame
    v2v_heard_ms: float | None = None  # caller side: end of speech -> first audible playout
    reply_seconds: float = 0.0
    gap_ms: int = 0
    underruns: int = 0
    timing: fr.FrameTiming = field(default_factory=fr.FrameTiming)
    onset_to_clear_ms: float | None = None  # barge-in turns: first speech frame -> clear
    talking_over_agent: bool | None = None  # barge-in turns: agent audible until the clear

    @property
    def apology(self) -> bool:
        """The daemon said its pre-rendered apology (no usable reply): not an answer, so
        its latency (a canned line, ready at once) is kept out of the voice-to-voice figures."""
        return bool(self.agent) and self.agent.startswith(FALLBACK_LINE)

    def to_json(self) -> dict[str, Any]:
        return {
            "said": self.said,
            "said_seconds": round(self.said_seconds, 2),
            "barge_in_after": self.barge_in_after,
            "heard": self.heard,
            "wer": None if self.wer is None else round(self.wer, 2),
            "agent": self.agent,
            "legs_ms": self.legs,
            "speculative": self.speculative,
            "interrupted": self.interrupted,
            "v2v_frame_ms": _round(self.v2v_frame_ms),
            "v2v_heard_ms": _round(self.v2v_heard_ms),
            "reply_seconds": round(self.reply_seconds, 2),
            "gap_ms": self.gap_ms,
            "underruns": self.underruns,
            "frame_timing": self.timing.to_json(),
            "onset_to_clear_ms": _round(self.onset_to_clear_ms),
            "talking_over_agent": self.talking_over_agent,
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x)


@dataclass
class CallOutcome:
    """One stand-in call: its turns, or why it failed."""

    call_sid: str | None
    error: str | None = None
    turns: list[TurnMetrics] = field(default_factory=list)
    daemon_turns: list[DaemonTurn] = field(default_factory=list)
    notable: list[str] = field(default_factory=list)
    barge_in_speech: list[float] = field(default_factory=list)  # daemon: s heard before cutting
    seconds: float = 0.0

    @property
    def replies_missing(self) -> int:
        """Utterances that got no agent audio at all (interruptions excluded)."""
        return sum(1 for t in self.turns if t.v2v_frame_ms is None)

    def to_json(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "error": self.error,
            "seconds": round(self.seconds, 1),
            "turns": [t.to_json() for t in self.turns],
            "daemon_turns": [t.to_json() for t in self.daemon_turns],
            "notable_log_lines": self.notable,
            "daemon_barge_in_speech_seconds": self.barge_in_speech,
        }


def _frame_peaks(ulaw: bytes) -> np.ndarray:
    from aicallerd.audio.mulaw import ulaw_decode

    pcm = ulaw_decode(ulaw).astype(np.int32)
    n = len(pcm) // FRAME
    return np.abs(pcm[: n * FRAME].reshape(n, FRAME)).max(axis=1) if n else np.zeros(0)


def _analyse_turn(
    turn: Any, said: Said, flog: fr.RecordingBuffer, window_end: float
) -> TurnMetrics:
    """Caller-side measures of one ``TurnResult`` (stand-in clock, 20 ms ticks)."""
    n_caller = math.ceil(len(said.line.pcm8) / FRAME)
    m = TurnMetrics(said.line.text, said.line.seconds, said.barge_in_after)
    m.gap_ms = int(turn.gap_frames) * 20
    m.underruns = int(turn.underruns)
    if turn.latency is not None:
        m.v2v_frame_ms = turn.latency * 1000
    # agent_audio[k] was played by the tick that sent caller frame k; tick n_caller - 1 is
    # the one at speech_end, so frame j plays (j - n_caller + 1) * 20 ms after it.
    peaks = _frame_peaks(bytes(turn.agent_audio))
    audible = np.flatnonzero(peaks[n_caller:] >= AUDIBLE_PEAK) + n_caller
    if len(audible) and turn.first_agent_audio is not None:
        m.v2v_heard_ms = (audible[0] - n_caller + 1) * 20.0
        m.reply_seconds = (audible[-1] - audible[0] + 1) * 0.02
    if math.isfinite(turn.speech_end):
        m.timing = fr.reply_timing(flog, turn.speech_end, window_end)
    if said.barge_in_after is not None and math.isfinite(turn.speech_end):
        onset = turn.speech_end - (n_caller - 1) * 0.02  # when the first speech frame went out
        end = onset + 0.02 if turn.clear_at is None else turn.clear_at
        if turn.clear_at is not None:
            m.onset_to_clear_ms = (turn.clear_at - onset) * 1000
        # Valid interruption: the agent's reply was playing from the onset to the clear.
        playing = fr.playing_fraction(flog, onset, end)
        if playing is None:  # no tick in the window: judge by the audible level instead
            k = max(1, min(n_caller, round((end - onset) / 0.02)))
            playing = float((peaks[:k] >= AUDIBLE_PEAK).any())
        m.talking_over_agent = playing >= 0.8
    return m


def _pair(metrics: list[TurnMetrics], daemon_turns: list[DaemonTurn]) -> None:
    """Attach daemon turn lines to caller utterances, in order, by transcript similarity."""
    pending = list(daemon_turns)
    for m in metrics:
        for i, d in enumerate(pending):
            if wer(m.said, d.caller) <= 0.6:
                m.heard, m.wer, m.agent = d.caller, wer(m.said, d.caller), d.agent
                m.legs, m.speculative, m.interrupted = d.legs, d.speculative, d.interrupted
                del pending[: i + 1]
                break


async def _wait_call_ended(daemon: Daemon, call_sid: str, timeout: float = 20.0) -> None:
    """Until the daemon logs the call's end (its turn lines are all written by then)."""
    wait = functools.partial(daemon.wait_for, f"[{call_sid}] call ended", timeout)
    with contextlib.suppress(DaemonError):
        await trio.to_thread.run_sync(wait, abandon_on_cancel=True)


async def one_call(daemon: Daemon, script: list[Said], start_delay: float = 0.0) -> CallOutcome:
    """Place one call through the stand-in and measure it."""
    from aicallerctl.testcall import Utterance, place_call

    await trio.sleep(start_delay)
    if not daemon.alive():
        return CallOutcome(None, f"aicallerd is not running (exit status {daemon.proc.poll()})")
    target = daemon.target()
    utterances = [Utterance(s.line.pcm8, s.line.text, s.barge_in_after) for s in script]
    budget = 60 + sum(s.line.seconds + REPLY_TIMEOUT + QUIET + PAUSE for s in script)
    flog = fr.RecordingBuffer()
    started = trio.current_time()
    try:
        with trio.fail_after(budget):
            result = await place_call(
                target,
                utterances,
                reply_timeout=REPLY_TIMEOUT,
                quiet_seconds=QUIET,
                pause_before_speaking=PAUSE,
                buffer_factory=lambda: flog,
            )
    except trio.TooSlowError:
        return CallOutcome(None, f"call did not finish within {budget:.0f}s")
    except Exception as exc:
        return CallOutcome(None, f"{type(exc).__name__}: {exc}")
    out = CallOutcome(result.call_sid, seconds=trio.current_time() - started)
    if result.refused:
        out.error = f"refused: {result.refused}"
        return out
    await _wait_call_ended(daemon, result.call_sid)
    turns = result.turns
    for i, (turn, said) in enumerate(zip(turns, script, strict=False)):
        end = turns[i + 1].speech_start if i + 1 < len(turns) else math.inf
        out.turns.append(_analyse_turn(turn, said, flog, end))
    if len(turns) < len(script):
        out.error = f"only {len(turns)} of {len(script)} utterances were spoken"
    out.daemon_turns = turns_of(daemon.lines, result.call_sid)
    out.notable = notable(daemon.lines, result.call_sid)
    out.barge_in_speech = barge_ins_of(daemon.lines, result.call_sid)
    _pair(out.turns, out.daemon_turns)
    return out


async def calls_at_once(daemon: Daemon, scripts: list[list[Said]], stagger: float) -> list[Any]:
    """Run the scripts as simultaneous calls (call i starts ``i * stagger`` s late)."""
    outcomes: list[CallOutcome | None] = [None] * len(scripts)

    async def run(i: int) -> None:
        outcomes[i] = await one_call(daemon, scripts[i], i * stagger)

    async with trio.open_nursery() as nursery:
        for i in range(len(scripts)):
            nursery.start_soon(run, i)
    return outcomes


# -- modes ---------------------------------------------------------------------------------


def answered(turns: list[TurnMetrics]) -> list[TurnMetrics]:
    """The turns the model answered (see ``TurnMetrics.apology``)."""
    return [t for t in turns if not t.apology]


def _legs_rows(turns: list[TurnMetrics]) -> list[list[object]]:
    turns = answered(turns)
    rows: list[list[object]] = []
    for leg in LEGS:
        values = [t.legs.get(leg) for t in turns if t.legs]
        rows.append(_stat_row(f"daemon {leg}", values))
    rows.append(
        _stat_row("**caller v2v: first agent frame received**", [t.v2v_frame_ms for t in turns])
    )
    rows.append(
        _stat_row("**caller v2v: first audible frame played**", [t.v2v_heard_ms for t in turns])
    )
    return rows


def _stat_row(name: str, values: list[float | None]) -> list[object]:
    vals = [v for v in values if v is not None]
    return [
        name,
        len(vals),
        ms(percentile(vals, 50)),
        ms(percentile(vals, 95)),
        ms(min(vals) if vals else None),
        ms(max(vals) if vals else None),
    ]


STAT_HEADER = ["measure (ms)", "n", "p50", "p95", "min", "max"]


def _short(text: str | None, n: int = 38) -> str:
    if text is None:
        return "-"
    return text if len(text) <= n else text[: n - 1] + "…"


def _gap_summary(turns: list[TurnMetrics]) -> str:
    replies = [t for t in turns if t.v2v_frame_ms is not None]
    silent = [t.gap_ms for t in replies]
    starved = [t.timing.starved_ms for t in replies if t.timing.starved_ms is not None]
    leads = [t.timing.lead_min_ms for t in replies if t.timing.lead_min_ms is not None]
    jit = [t.timing.jitter_ms for t in replies if t.timing.jitter_ms is not None]
    starved_text = (
        f"{sum(1 for s in starved if s)} of {len(starved)} replies, total {ms(sum(starved))} ms, "
        f"worst {ms(max(starved))} ms"
        if starved
        else "not recorded"
    )
    return "\n".join(
        [
            "Gaps inside replies (between a reply's first and last audible frame):",
            f"- starved (the simulated Twilio buffer ran empty: audio arrived late): "
            f"{starved_text}; underruns mid-sentence (stand-in): "
            f"{sum(t.underruns for t in replies)}",
            f"- silent frames heard (stand-in `gap_frames`: starved ticks plus digital silence "
            f"the daemon sent, e.g. between sentences): {sum(1 for g in silent if g)} of "
            f"{len(silent)} replies, total {sum(silent)} ms, worst {max(silent, default=0)} ms",
            f"- frame lead at arrival (audio already queued ahead of a steady-state frame): "
            f"min {ms(min(leads) if leads else None)} ms; arrival jitter (stdev of that lead) "
            f"p50 {ms(percentile(jit, 50), 1)} ms, max {ms(max(jit) if jit else None, 1)} ms",
        ]
    )


def _meter(daemon: Daemon) -> CpuMeter:
    """The machine's CPU and the daemon's per leg (read over its control socket)."""
    return CpuMeter(daemon.proc.pid, daemon.runtime_dir / "control.sock")


async def mode_conversation(daemon: Daemon, lines: list[Line], per_call: int) -> dict[str, Any]:
    """Mode 1: the whole script, ``per_call`` turns per call, one call at a time."""
    chunks = [lines[i : i + per_call] for i in range(0, len(lines), per_call)]
    outcomes = []
    meter = _meter(daemon)
    meter.start()
    for i, chunk in enumerate(chunks, 1):
        log(f"conversation: call {i}/{len(chunks)} ({len(chunk)} turns)")
        outcomes.append(await one_call(daemon, [Said(line) for line in chunk]))
    return {"outcomes": outcomes, "cpu": meter.stop()}


async def mode_concurrency(
    daemon: Daemon, lines: list[Line], levels: list[int], turns: int, stagger: float
) -> dict[str, Any]:
    """Mode 2: N simultaneous callers, each ``turns`` utterances (rotated through the script)."""
    out: dict[str, Any] = {"levels": {}, "turns_per_caller": turns, "stagger": stagger}
    for n in levels:
        scripts = [
            [Said(lines[(i * turns + k) % len(lines)]) for k in range(turns)] for i in range(n)
        ]
        log(f"concurrency: {n} simultaneous caller(s), {turns} turns each")
        meter = _meter(daemon)
        meter.start()
        outcomes = await calls_at_once(daemon, scripts, stagger)
        out["levels"][n] = {"outcomes": outcomes, "cpu": meter.stop()}
        await trio.sleep(1.0)
    return out


async def mode_barge_in(
    daemon: Daemon, lines: list[Line], calls: int, per_call: int, after: float
) -> dict[str, Any]:
    """Mode 3: each call has one normal turn, then ``per_call`` utterances that interrupt."""
    outcomes = []
    meter = _meter(daemon)
    meter.start()
    for c in range(calls):
        picked = [lines[(c * (per_call + 1) + k) % len(lines)] for k in range(per_call + 1)]
        script = [Said(picked[0])] + [Said(line, after) for line in picked[1:]]
        log(f"barge-in: call {c + 1}/{calls} ({per_call} interruptions at {after:.1f}s)")
        outcomes.append(await one_call(daemon, script))
    return {"outcomes": outcomes, "cpu": meter.stop()}


# -- reporting -----------------------------------------------------------------------------


def _failures(outcomes: list[CallOutcome]) -> list[str]:
    out = []
    for o in outcomes:
        if o.error:
            out.append(f"{o.call_sid or 'call'}: {o.error}")
        for t in o.turns:
            if t.v2v_frame_ms is None and t.barge_in_after is None:
                out.append(f"{o.call_sid}: no reply to {t.said!r}")
    return out


def report_conversation(res: dict[str, Any], cfg: dict[str, Any]) -> str:
    outcomes: list[CallOutcome] = res["outcomes"]
    turns = [t for o in outcomes for t in o.turns]
    parts = [
        f"## Conversation: {len(turns)} caller turns in {len(outcomes)} call(s)",
        "",
        f"End-of-turn silence threshold: **{cfg.get('done_speaking_ms', '?')} ms** "
        f"(`turn.done_speaking_silence_seconds`); chunk pause {cfg.get('chunk_ms', '?')} ms; "
        f"speculative turns: {cfg.get('speculative', '?')} "
        f"({sum(t.speculative for t in turns)} of {len(turns)} turns logged as speculative). "
        f"Apologies (no usable reply; left out of the latency rows): "
        f"{len(turns) - len(answered(turns))}.",
        "",
        table(STAT_HEADER, _legs_rows(turns)),
        "",
        "v2v daemon: end of speech as the daemon's VAD saw it -> first reply frame sent. "
        "v2v caller: last caller frame sent -> first agent frame received. v2v heard: -> first "
        f"frame with a peak >= {AUDIBLE_PEAK} (about -40 dBFS) played by the simulated Twilio "
        "buffer; the difference is quiet audio at the start of the reply (Piper's lead-in).",
        "",
        _gap_summary(turns),
        "",
        table(
            [
                "#",
                "said (s)",
                "daemon heard",
                "WER",
                "endpoint",
                "stt tail",
                "llm 1st tok",
                "1st sentence",
                "tts 1st audio",
                "v2v daemon",
                "v2v caller",
                "v2v heard",
                "reply (s)",
                "starved ms",
                "silent ms",
                "underruns",
                "lead min",
                "agent said",
            ],
            [
                [
                    i,
                    f"{t.said_seconds:.1f}",
                    _short(t.heard, 30),
                    ms(t.wer, 2),
                    ms(t.legs.get("endpoint_wait")),
                    ms(t.legs.get("stt_tail")),
                    ms(t.legs.get("llm_first_token")),
                    ms(t.legs.get("first_sentence")),
                    ms(t.legs.get("tts_first_audio")),
                    ms(t.legs.get("voice_to_voice")),
                    ms(t.v2v_frame_ms),
                    ms(t.v2v_heard_ms),
                    f"{t.reply_seconds:.1f}",
                    ms(t.timing.starved_ms),
                    t.gap_ms,
                    t.underruns,
                    ms(t.timing.lead_min_ms),
                    _short(t.agent),
                ]
                for i, t in enumerate(turns, 1)
            ],
        ),
    ]
    parts += ["", cpu_line(res["cpu"]), "", cpu_legs_table(res["cpu"].get("legs"))]
    fails = _failures(outcomes)
    if fails:
        parts += ["", "Failures:", *[f"- {f}" for f in fails]]
    return "\n".join(parts)


def _cpu_legs_by_level(res: dict[str, Any]) -> str:
    """CPU seconds per answered turn for each leg, one row per number of callers."""
    rows, header = [], ["N", "turns"]
    for n, level in res["levels"].items():
        legs = level["cpu"].get("legs")
        if not legs:
            continue
        if len(header) == 2:
            header += list(legs["per_turn"])
        rows.append([n, legs["turns"], *(ms(v, 3) for v in legs["per_turn"].values())])
    if not rows:
        return "CPU per leg: not available (the daemon's control socket did not answer)."
    return "\n".join(
        [
            "Daemon CPU seconds per answered turn, by leg (engine legs are their own threads "
            "plus the calling worker's share; framing is the event loop):",
            "",
            table(header, rows),
        ]
    )


def report_concurrency(res: dict[str, Any]) -> str:
    rows = []
    for n, level in res["levels"].items():
        outcomes: list[CallOutcome] = level["outcomes"]
        turns = [t for o in outcomes for t in o.turns]
        said = answered(turns)
        replies = [t for t in said if t.v2v_frame_ms is not None]
        frame = [t.v2v_frame_ms for t in replies]
        heard = [t.v2v_heard_ms for t in said if t.v2v_heard_ms is not None]
        daemon = [v for t in said if (v := t.legs.get("voice_to_voice")) is not None]
        leads = [t.timing.lead_min_ms for t in replies if t.timing.lead_min_ms is not None]
        jit = [t.timing.jitter_ms for t in replies if t.timing.jitter_ms is not None]
        gaps = [t.gap_ms for t in replies]
        starved = [t.timing.starved_ms for t in replies if t.timing.starved_ms is not None]
        fails = _failures(outcomes)
        rows.append(
            [
                n,
                f"{len(replies)}/{len(turns)}",
                len(turns) - len(said),
                len(fails),
                ms(percentile(frame, 50)),
                ms(percentile(frame, 95)),
                ms(percentile(heard, 50)),
                ms(percentile(heard, 95)),
                ms(percentile(daemon, 50)),
                ms(percentile(daemon, 95)),
                sum(t.underruns for t in replies),
                f"{sum(1 for g in starved if g)}/{len(starved)}",
                ms(sum(starved) / len(starved) if starved else None),
                ms(max(starved) if starved else None),
                ms(sum(gaps) / len(gaps) if gaps else None),
                ms(min(leads) if leads else None),
                ms(percentile(jit, 50), 1),
                ms(max(jit) if jit else None, 1),
                ms(level["cpu"]["daemon_pct"]),
                ms(level["cpu"]["others_pct"]),
            ]
        )
    header = [
        "N",
        "replies",
        "apologies",
        "failures",
        "v2v caller p50",
        "p95",
        "v2v heard p50",
        "p95",
        "v2v daemon p50",
        "p95",
        "underruns",
        "replies starved",
        "starved ms/reply",
        "worst starved",
        "silent ms/reply",
        "lead min ms",
        "jitter p50",
        "jitter max",
        "daemon CPU %",
        "others CPU %",
    ]
    parts = [
        "## Concurrency: N simultaneous callers",
        "",
        f"Each caller says {res['turns_per_caller']} utterances (rotating through the script); "
        f"call i starts {res['stagger']} s after call i-1, so later turns collide as they may.",
        "",
        table(header, rows),
        "",
        "v2v in ms (caller: end of caller speech -> first agent frame received; heard: -> first "
        "audible frame played; daemon: its own voice_to_voice leg). starved: playout ticks inside "
        "a reply that found the simulated Twilio buffer empty (late audio); silent: all silent "
        "frames inside a reply, including silence the daemon sent. lead: audio already queued "
        "when a steady-state frame arrived (how early it was); jitter: stdev of that lead within "
        "a reply. CPU % is of one core (200 % = both cores of a 2-core box); others: every "
        "process but the daemon and the benchmark.",
        "",
        _cpu_legs_by_level(res),
    ]
    busy = [n for n, level in res["levels"].items() if (level["cpu"].get("others_pct") or 0) > 15]
    if busy:
        parts += [
            "",
            f"**Warning: other processes used more than 15 % of a core during N = "
            f"{', '.join(map(str, busy))}: those rows are not representative.**",
        ]
    fails = [f for level in res["levels"].values() for f in _failures(level["outcomes"])]
    if fails:
        parts += ["", "Failures:", *[f"- {f}" for f in fails[:20]]]
    return "\n".join(parts)


def report_barge_in(res: dict[str, Any], cfg: dict[str, Any]) -> str:
    outcomes: list[CallOutcome] = res["outcomes"]
    barges = [t for o in outcomes for t in o.turns if t.barge_in_after is not None]
    valid = [t for t in barges if t.talking_over_agent and t.onset_to_clear_ms is not None]
    delays = [t.onset_to_clear_ms for t in valid]
    parts = [
        "## Barge-in: caller speech onset during agent playback -> `clear` received",
        "",
        f"`turn.barge_in_min_speech_seconds` = **{cfg.get('barge_in_min_speech_ms', '?')} ms**,"
        f" `barge_in_min_words` = {cfg.get('barge_in_min_words', '?')}; "
        f"{len(valid)} valid interruptions of {len(barges)} attempts (valid: the agent's "
        "reply was playing from the caller's onset until the clear).",
        "",
        table(STAT_HEADER, [_stat_row("onset -> clear", delays)]),
        "",
        table(
            ["#", "barge after (s)", "caller said", "onset -> clear ms", "over agent", "daemon"],
            [
                [
                    i,
                    t.barge_in_after,
                    _short(t.said, 34),
                    ms(t.onset_to_clear_ms),
                    t.talking_over_agent,
                    _short(t.heard, 30),
                ]
                for i, t in enumerate(barges, 1)
            ],
        ),
    ]
    if len(valid) < 8:
        parts += ["", f"**Only {len(valid)} valid interruptions: p95 is not meaningful.**"]
    interrupted = sum(d.interrupted for o in outcomes for d in o.daemon_turns)
    heard = [x * 1000 for o in outcomes for x in o.barge_in_speech]
    parts += [
        "",
        f"Daemon: {len(heard)} barge-in log lines, caller speech counted when it cut the reply "
        f"p50 {ms(percentile(heard, 50))} ms, max {ms(max(heard) if heard else None)} ms; "
        f"{interrupted} turn lines marked interrupted.",
    ]
    parts += ["", cpu_line(res["cpu"])]
    fails = _failures(outcomes)
    if fails:
        parts += ["", "Failures:", *[f"- {f}" for f in fails]]
    return "\n".join(parts)


def config_summary(daemon: Daemon) -> dict[str, Any]:
    """The settings that shape the numbers, as the daemon itself parses its config."""
    try:
        from aicallerd.config import load_config

        cfg = load_config(daemon.config_path, daemon.env)
    except Exception as exc:  # the config module is not ours; degrade to "?"
        return {"error": str(exc)}
    t = cfg.turn
    out: dict[str, Any] = {
        "done_speaking_ms": round(t.done_speaking_silence_seconds * 1000),
        "chunk_ms": round(t.chunk_silence_seconds * 1000),
        "vad": t.vad,
        "barge_in": t.barge_in,
        "barge_in_min_speech_ms": round(t.barge_in_min_speech_seconds * 1000),
        "max_tokens": cfg.llm.max_tokens,
        "history_turns": cfg.llm.history_turns,
        "llm_backend": cfg.llm.backend,
        "tts_engine": cfg.tts.engine,
        "stt_model": cfg.stt.model,
        "max_concurrent_calls": cfg.server.max_concurrent_calls,
    }
    for name in ("speculative", "barge_in_min_words"):
        out[name] = getattr(t, name, "n/a")
    return out


# -- main ----------------------------------------------------------------------------------


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"want e.g. 1,2,4,8, got {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("levels must be >= 1")
    return levels


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.latency", description=__doc__.split("\n", 1)[0]
    )
    ap.add_argument(
        "--conversation",
        action="store_true",
        help="run the conversation (the default when no mode is given)",
    )
    ap.add_argument("--turns-per-call", type=int, default=6, help="conversation (default 6)")
    ap.add_argument(
        "--concurrency", type=_levels, metavar="N,N,...", help="simultaneous callers, e.g. 1,2,4,8"
    )
    ap.add_argument("--load-turns", type=int, default=3, help="turns per concurrent caller")
    ap.add_argument(
        "--stagger",
        type=float,
        default=1.0,
        help="s between concurrent call starts (0: all at once)",
    )
    ap.add_argument("--barge-in", action="store_true", help="measure interruptions")
    ap.add_argument("--barge-calls", type=int, default=2)
    ap.add_argument("--barge-per-call", type=int, default=6, help="interruptions per call")
    ap.add_argument("--barge-after", type=float, default=1.0, help="s into the reply")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a daemon setting (repeatable), e.g. turn.done_speaking_silence_seconds=0.5",
    )
    ap.add_argument("--limit", type=int, help="use only the first LIMIT utterances (smoke test)")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds for other processes to leave the CPU alone",
    )
    ap.add_argument("--keep", action="store_true", help="keep the daemon's temp directory")
    ap.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = ap.parse_args(argv)
    if not (args.concurrency or args.barge_in):
        args.conversation = True
    return args


async def run_modes(daemon: Daemon, args: argparse.Namespace, lines: list[Line]) -> dict:
    """Run the selected modes; SIGTERM cancels them cleanly (then KeyboardInterrupt)."""
    out: dict[str, Any] = {}
    terminated = False

    async def watch_sigterm(scope: trio.CancelScope) -> None:
        nonlocal terminated
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                terminated = True
                scope.cancel()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_sigterm, nursery.cancel_scope)
        if args.conversation:
            out["conversation"] = await mode_conversation(daemon, lines, args.turns_per_call)
        if args.concurrency:
            out["concurrency"] = await mode_concurrency(
                daemon, lines, args.concurrency, args.load_turns, args.stagger
            )
        if args.barge_in:
            out["barge_in"] = await mode_barge_in(
                daemon, lines, args.barge_calls, args.barge_per_call, args.barge_after
            )
        nursery.cancel_scope.cancel()
    if terminated:
        raise KeyboardInterrupt
    return out


def _p(values: list[float | None]) -> dict[str, float | int | None]:
    vals = [v for v in values if v is not None]
    return {"n": len(vals), "p50": percentile(vals, 50), "p95": percentile(vals, 95)}


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers (ms) of each mode, for comparing runs without the raw turns."""
    out: dict[str, Any] = {}
    if "conversation" in results:
        turns = [t for o in results["conversation"]["outcomes"] for t in o.turns]
        replies = answered(turns)
        out["conversation"] = {
            **{f"daemon_{leg}": _p([t.legs.get(leg) for t in replies]) for leg in LEGS},
            "caller_v2v_frame": _p([t.v2v_frame_ms for t in replies]),
            "caller_v2v_heard": _p([t.v2v_heard_ms for t in replies]),
            "apologies": len(turns) - len(replies),
            "starved_ms_total": sum(t.timing.starved_ms or 0 for t in turns),
            "underruns": sum(t.underruns for t in turns),
            "cpu_legs": results["conversation"]["cpu"].get("legs"),
        }
    if "concurrency" in results:
        out["concurrency"] = {}
        for n, level in results["concurrency"]["levels"].items():
            turns = [t for o in level["outcomes"] for t in o.turns]
            replies = answered(turns)
            out["concurrency"][str(n)] = {
                "caller_v2v_frame": _p([t.v2v_frame_ms for t in replies]),
                "caller_v2v_heard": _p([t.v2v_heard_ms for t in replies]),
                "apologies": len(turns) - len(replies),
                "starved_ms_total": sum(t.timing.starved_ms or 0 for t in turns),
                "underruns": sum(t.underruns for t in turns),
                "failures": len(_failures(level["outcomes"])),
                "cpu": level["cpu"],
            }
    if "barge_in" in results:
        barges = [
            t
            for o in results["barge_in"]["outcomes"]
            for t in o.turns
            if t.barge_in_after is not None
        ]
        valid = [t.onset_to_clear_ms for t in barges if t.talking_over_agent]
        out["barge_in"] = {"onset_to_clear": _p(valid), "attempts": len(barges)}
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, CallOutcome):
        return obj.to_json()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return round(obj, 2)
    return obj


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BaseException as exc:
        if not _interrupted(exc):
            raise
        print("bench: interrupted (the daemon was stopped)", file=sys.stderr)
        return 130


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C or SIGTERM, possibly wrapped in trio's exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_interrupted(e) for e in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    # SIGTERM (e.g. from a CI timeout) unwinds like Ctrl-C, so the daemon is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    lines = load_script()[: args.limit]
    if args.wait_idle > 0:
        log(f"waiting up to {args.wait_idle:.0f}s for the machine to be idle")
    others = wait_idle(args.wait_idle, window=5.0 if args.wait_idle > 0 else 1.0)
    if others is not None and others > 15:
        log(f"warning: other processes use {others:.0f} % of a core; numbers will suffer")
    machine = machine_info()
    machine["others_cpu_pct_before"] = others
    stamp = time.strftime("%Y%m%d-%H%M%S")
    max_calls = max([16, *(args.concurrency or [])])
    log(f"starting aicallerd ({len(lines)} utterances, {sum(x.seconds for x in lines):.0f} s)")
    started = time.monotonic()
    try:
        with running_daemon(max_calls, args.set, args.keep) as daemon:
            log(f"daemon ready in {time.monotonic() - started:.1f}s: {daemon.ready_line}")
            cfg = config_summary(daemon)
            results = trio.run(run_modes, daemon, args, lines)
            daemon_log = list(daemon.lines)
            if not daemon.alive():
                print(f"bench: aicallerd died during the run:\n{daemon.tail()}", file=sys.stderr)
    except DaemonError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    total = time.monotonic() - started

    parts = [
        "# aicaller benchmark",
        "",
        f"Machine: {machine_line(machine)}.",
        "",
        f"Daemon: {daemon.ready_line.split('ready: ', 1)[-1]}",
        "",
        "Settings: "
        + ", ".join(f"{k}={v}" for k, v in cfg.items())
        + (f"; overrides: {', '.join(args.set)}" if args.set else " (embedded defaults)"),
        "",
        f"Caller voice: espeak-ng (bench/utterances/), {len(lines)} utterances of "
        f"{min(x.seconds for x in lines):.1f}-{max(x.seconds for x in lines):.1f} s; "
        f"stand-in pause before speaking {PAUSE} s, reply over after {QUIET} s of quiet.",
    ]
    if "conversation" in results:
        parts += ["", report_conversation(results["conversation"], cfg)]
    if "concurrency" in results:
        parts += ["", report_concurrency(results["concurrency"])]
    if "barge_in" in results:
        parts += ["", report_barge_in(results["barge_in"], cfg)]
    parts += ["", f"Total bench time {total:.0f} s (including daemon start)."]
    text = "\n".join(parts)
    print(text)

    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        doc = {
            "timestamp": stamp,
            "argv": sys.argv[1:] if argv is None else argv,
            "machine": machine,
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "daemon_ready_line": daemon.ready_line,
            "config": cfg,
            "overrides": args.set,
            "standin": {"pause": PAUSE, "quiet": QUIET, "reply_timeout": REPLY_TIMEOUT},
            "total_seconds": round(total, 1),
            "summary": _jsonable(summary(results)),
            "results": _jsonable(results),
            "report_markdown": text,
        }
        path = RESULTS / f"{stamp}.json"
        path.write_text(json.dumps(doc, indent=1))
        (RESULTS / f"{stamp}.daemon.log").write_text("\n".join(daemon_log) + "\n")
        log(f"wrote {path} and {path.with_suffix('').name}.daemon.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
