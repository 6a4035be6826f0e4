"""How many simultaneous talking calls one node holds when its engines are remote.

    make bench-cloud                                  # N = 10, 25, 50, 75
    python -m bench.cloudload --levels 10,25 --turns 2
    python -m bench.cloudload --cloud-stt             # STT on the stand-in too (see below)

The daemon runs with the LLM and TTS on local stand-ins of hosted engines
(``bench.engine_standins``: Ollama ``/api/chat`` or OpenAI ``/v1/chat/completions``, and
ElevenLabs HTTP streaming in ulaw_8000, first byte after 150-300 ms), so its own work is
moving audio. Speech to text is local Whisper (the embedded default) unless ``--cloud-stt``:
that sets ``stt.use_local_whisper = false`` and ``stt.api_url`` to the stand-in's
OpenAI-compatible ``/v1/audio/transcriptions``; ``--set section.key={engines}`` sets other
keys (``{engines}`` = the stand-in URL).

For each level N, N calls through the Twilio stand-in start within ``--spread`` seconds and
each says ``--turns`` utterances, waiting for each reply. A reply is on time when it came and
its audio never ran dry at the simulated Twilio buffer (``bench.frames.RecordingBuffer``: no
starved tick between its first and last frame, no mid-sentence underrun). Each level is cut
after ``--level-seconds``; unfinished calls count as late. The report is the table and the
largest N with every reply on time. All traffic is loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from aicallerd.call.metrics import percentile
from bench.daemon import Daemon, free_port, running_daemon
from bench.engine_standins import API_KEY, MODEL, VOICE
from bench.latency import CallOutcome, Said, log, one_call
from bench.report import CpuMeter, machine_info, machine_line, ms, table
from bench.utterances import Line, load_script

RESULTS = Path(__file__).parent / "results"
LEVELS = (10, 25, 50, 75)


@dataclass
class Level:
    """One concurrency level: what every call and reply did."""

    calls: int
    turns_per_call: int
    outcomes: list[CallOutcome | None] = field(default_factory=list)
    cpu: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def expected(self) -> int:
        return self.calls * self.turns_per_call

    @property
    def unfinished(self) -> int:
        """Calls cut by the level's time limit, refused, or failed."""
        return sum(1 for o in self.outcomes if o is None or o.error)

    def replies(self) -> list[Any]:
        return [t for o in self.outcomes if o is not None for t in o.turns]

    def on_time(self) -> int:
        """Replies that came and whose audio never ran dry."""
        return sum(1 for t in self.replies() if reply_on_time(t))

    def late(self) -> int:
        return self.expected - self.on_time()

    def ran_dry(self) -> int:
        """Replies that came but whose audio ran dry while playing."""
        return sum(1 for t in self.replies() if t.v2v_frame_ms is not None and not reply_on_time(t))

    def v2v(self, which: str) -> list[float]:
        return [v for t in self.replies() if (v := getattr(t, which)) is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "turns_per_call": self.turns_per_call,
            "replies_expected": self.expected,
            "replies_on_time": self.on_time(),
            "unfinished_calls": self.unfinished,
            "seconds": round(self.seconds, 1),
            "cpu": self.cpu,
            "outcomes": [o.to_json() if o is not None else None for o in self.outcomes],
        }


def reply_on_time(turn: Any) -> bool:
    """A reply arrived and played without the buffer running dry."""
    if turn.v2v_frame_ms is None:
        return False
    return not turn.timing.starved_ms and not turn.underruns


def largest_on_time(levels: list[Level]) -> int | None:
    """The largest N whose every reply was on time, counting up until the first level that
    was not (a larger N that happened to pass after a failure does not count)."""
    best = None
    for level in sorted(levels, key=lambda lv: lv.calls):
        if level.late():
            break
        best = level.calls
    return best


def settings_for(engines: str, llm: str, cloud_stt: bool, extra: list[str]) -> list[str]:
    """The daemon's ``--set`` list: every engine that can be remote on the stand-ins."""
    base = [
        f"llm.backend={llm}",
        f"llm.url={engines}",
        f"llm.model={MODEL}",
        "tts.engine=elevenlabs",
        f"tts.elevenlabs_url={engines}",
        f"tts.elevenlabs_api_key={API_KEY}",
        f"tts.elevenlabs_voice_id={VOICE}",
    ]
    if cloud_stt:
        base += ["stt.use_local_whisper=false", f"stt.api_url={engines}", "stt.api_key=sk-bench"]
    return base + [s.replace("{engines}", engines) for s in extra]


@contextlib.contextmanager
def engine_standins(first_byte: str) -> Iterator[str]:
    """Run ``bench.engine_standins`` in its own process; yield its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "bench.engine_standins", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--first-byte", first_byte],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "listening on ..." once it accepts connections
        if not line.startswith("listening on "):
            raise RuntimeError(f"engine stand-ins did not start (exit {proc.poll()})")
        yield line.removeprefix("listening on ").strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def run_level(
    daemon: Daemon, lines: list[Line], n: int, turns: int, spread: float, limit: float
) -> Level:
    """N calls starting within ``spread`` s, cut at ``limit`` s."""
    level = Level(n, turns, [None] * n)
    scripts = [[Said(lines[(i * turns + k) % len(lines)]) for k in range(turns)] for i in range(n)]
    stagger = spread / n

    async def call(i: int) -> None:
        level.outcomes[i] = await one_call(daemon, scripts[i], i * stagger)

    meter = CpuMeter(daemon.proc.pid)
    meter.start()
    started = trio.current_time()
    with trio.move_on_after(limit):
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(call, i)
    level.seconds = trio.current_time() - started
    level.cpu = meter.stop()
    return level


def report(levels: list[Level], meta: dict[str, Any]) -> str:
    rows = []
    for lv in levels:
        heard, frame = lv.v2v("v2v_heard_ms"), lv.v2v("v2v_frame_ms")
        rows.append(
            [
                lv.calls,
                f"{lv.on_time()}/{lv.expected}",
                lv.late(),
                lv.ran_dry(),
                lv.unfinished,
                ms(percentile(frame, 50)),
                ms(percentile(frame, 95)),
                ms(percentile(heard, 50)),
                ms(percentile(heard, 95)),
                ms(lv.cpu.get("daemon_pct")),
                ms(lv.cpu.get("others_pct")),
                f"{lv.seconds:.0f}",
            ]
        )
    header = [
        "N calls",
        "replies on time",
        "late",
        "of which ran dry",
        "calls unfinished",
        "v2v frame p50",
        "p95",
        "v2v heard p50",
        "p95",
        "daemon CPU %",
        "others CPU %",
        "s",
    ]
    best = largest_on_time(levels)
    return "\n".join(
        [
            "## aicaller cloud-engine load",
            "",
            machine_line(meta["machine"]),
            f"STT: {meta['stt']}; LLM: {meta['llm']} stand-in; TTS: ElevenLabs stand-in; "
            f"first byte {meta['first_byte']} ms; {meta['turns']} turns a call, calls start "
            f"within {meta['spread']:g} s",
            "",
            table(header, rows),
            "",
            "v2v (ms): caller's last speech frame -> first agent frame received (frame) / first "
            "audible frame played (heard). Late: no reply, or its audio ran dry while playing. "
            "CPU: % of one core; others = the engine stand-ins, the bench's Twilio stand-in "
            "threads and anything else on the machine.",
            "",
            f"**Largest N with every reply on time: {best if best is not None else 'none'}**",
        ]
    )


async def run(daemon: Daemon, args: argparse.Namespace) -> list[Level]:
    lines = load_script()
    levels = []
    for n in args.levels:
        log(f"{n} simultaneous calls, {args.turns} turns each")
        level = await run_level(daemon, lines, n, args.turns, args.spread, args.level_seconds)
        levels.append(level)
        log(f"{n} calls: {level.on_time()}/{level.expected} replies on time")
        if level.late() and not args.keep_going:
            log("stopping: this level had late replies (--keep-going runs the rest)")
            break
        await trio.sleep(2.0)  # let the last calls' ends settle before the next level
    return levels


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--levels", default=",".join(map(str, LEVELS)), help="e.g. 10,25,50,75")
    p.add_argument("--turns", type=int, default=2, help="utterances per call")
    p.add_argument("--spread", type=float, default=5.0, help="seconds over which calls start")
    p.add_argument("--level-seconds", type=float, default=60.0, help="cut a level after this")
    p.add_argument("--llm", choices=("ollama", "openai"), default="ollama")
    p.add_argument("--cloud-stt", action="store_true", help="STT on the stand-in as well")
    p.add_argument("--first-byte", default="150,300", help="stand-ins' first byte, ms range")
    p.add_argument("--keep-going", action="store_true", help="run every level even after one fails")
    p.add_argument("--set", action="append", default=[], help="section.key=value for the daemon")
    args = p.parse_args(argv)
    args.levels = sorted({int(x) for x in args.levels.split(",") if x.strip()})
    if not args.levels or min(args.levels) < 1 or not 0 < args.level_seconds <= 600:
        p.error("levels must be positive; --level-seconds in (0, 600]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    meta = {
        "machine": machine_info(),
        "stt": "stand-in (cloud)" if args.cloud_stt else "local faster-whisper (embedded default)",
        "llm": "Ollama /api/chat" if args.llm == "ollama" else "OpenAI /v1/chat/completions",
        "first_byte": args.first_byte.replace(",", "-"),
        "turns": args.turns,
        "spread": args.spread,
    }
    with engine_standins(args.first_byte) as engines:
        settings = settings_for(engines, args.llm, args.cloud_stt, args.set)
        log(f"engine stand-ins at {engines}; starting aicallerd")
        with running_daemon(max_calls=max(args.levels), settings=settings) as daemon:
            levels = trio.run(run, daemon, args)
            text = report(levels, meta)
            RESULTS.mkdir(exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = RESULTS / f"cloud-{stamp}.json"
            dump = {"meta": meta, "settings": settings, "levels": [lv.to_json() for lv in levels]}
            out.write_text(json.dumps(dump, indent=1, default=str))
            (RESULTS / f"cloud-{stamp}.daemon.log").write_text(daemon.log_text() + "\n")
    print(text)
    log(f"saved {out}")
    best = largest_on_time(levels)
    return 0 if best is not None else 1


if __name__ == "__main__":
    sys.exit(main())
