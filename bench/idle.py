"""Idle-call benchmark: many silent callers held while one caller talks.

    make bench-idle                         # 200 idle calls, digital silence and -60 dBFS hiss
    .venv/bin/python -m bench.idle --idle 50 --hold 30 --line silence

Each idle call is a real Media Stream (signed ``/voice``, TwiML token, signed upgrade,
``connected``/``start``) that then sends a 20 ms frame of silence or line hiss every 20 ms
and drains what the daemon sends. With them held, one speaking call (the conversation
script) runs through the stand-in; its voice-to-voice latency and dead air are compared
with the same call placed alone. The daemon's resident memory per idle call and its CPU
while holding them are printed too, and its CPU-seconds per 10,000 inbound media frames: a
figure that holds on a shared machine, where the pacer may fall behind and wall-clock
percentages move with whatever else runs. Only loopback traffic; every level is bounded in
time.

    .venv/bin/python -m bench.idle --idle 100 --hold 30 --line silence --no-talker --remote

measures the cost of frames alone: no talking call, and the engines on local stand-ins of
hosted ones (``bench.engine_standins``) so the daemon starts in seconds.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import random
import socket
import struct
import sys
import time
from typing import Any

import httpx
import numpy as np
import trio

from aicallerctl.testcall import Target, _stream_target, new_sid
from aicallerd.audio.mulaw import ulaw_encode
from aicallerd.call.metrics import percentile
from aicallerd.twilio import media
from aicallerd.twilio.signature import compute_signature
from bench.cloudload import RESULTS, engine_standins, settings_for
from bench.daemon import Daemon, running_daemon
from bench.latency import Said, one_call
from bench.report import CpuMeter, machine_info, machine_line, ms, table
from bench.utterances import load_script

FRAME = 160
SETTLE = 12.0  # let every idle call's greeting play out before measuring


def log(msg: str) -> None:
    print(f"[idle {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def line_frames(kind: str, n: int = 50) -> list[bytes]:
    """Frames an idle caller sends: digital silence, or hiss at about -60 dBFS."""
    if kind == "silence":
        return [b"\xff" * FRAME]
    rng = np.random.default_rng(11)
    return [ulaw_encode((rng.normal(0, 33, FRAME)).astype(np.int16)) for _ in range(n)]


def masked(text: str) -> bytes:
    """One client text frame, masked as RFC 6455 requires of a client (as Twilio's are)."""
    payload = text.encode()
    n, mask = len(payload), random.randbytes(4)
    head = bytes((0x81, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return head + mask + (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


class IdleCall:
    """One silent caller on a raw socket: Twilio does its framing on its own machines, so
    the pacer here writes prebuilt frames with one syscall each (through trio-websocket
    the benchmark's senders took 70 % of a core from the daemon and its engines)."""

    def __init__(self, sock: trio.socket.SocketType, stream_sid: str) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.stream_sid = stream_sid
        self.seq = 1
        self.closed = False

    def send(self, data: bytes) -> None:
        """Write without waiting: a socket whose buffer is full (a daemon that stopped
        reading) counts as closed rather than stalling every other call's pacing."""
        try:
            if os.write(self.fd, data) != len(data):  # the socket is non-blocking
                self.closed = True
        except OSError:
            self.closed = True

    async def drain(self) -> None:
        """Read (and drop) what the daemon sends until it closes the stream."""
        try:
            while await self.sock.recv(1 << 16):
                pass
        except (OSError, trio.ClosedResourceError):
            pass
        self.closed = True


async def upgrade(sock: trio.socket.SocketType, host: str, path: str, signature: str) -> bool:
    """The signed WebSocket upgrade, as Twilio sends it; True if switched (101)."""
    key = base64.b64encode(random.randbytes(16)).decode()
    request = (
        f"GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"X-Twilio-Signature: {signature}\r\n\r\n"
    )
    await sock.send(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = await sock.recv(4096)
        if not data:
            return False
        head += data
    return head.startswith(b"HTTP/1.1 101")


async def open_idle(target: Target, nursery: trio.Nursery) -> IdleCall | None:
    """Ring the daemon like Twilio and open the stream; None if it refused."""
    call_sid, account_sid, stream_sid = new_sid("CA"), new_sid("AC"), new_sid("MZ")
    form = {
        "AccountSid": account_sid,
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": "+15550003333",
        "To": "+15550002222",
    }
    url = target.public_url + "/voice"
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.post(
            target.connect + "/voice",
            data=form,
            headers={"X-Twilio-Signature": compute_signature(target.auth_token, url, form)},
        )
    parsed = _stream_target(resp.text)
    if isinstance(parsed, str):
        return None
    stream_url, params = parsed
    path = stream_url.split("://", 1)[1].split("/", 1)[1]
    host, port = target.connect.removeprefix("http://").rsplit(":", 1)
    sock = trio.socket.socket()
    await sock.connect((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    signature = compute_signature(target.auth_token, stream_url, {})
    if not await upgrade(sock, f"{host}:{port}", path, signature):
        sock.close()
        return None
    call = IdleCall(sock, stream_sid)
    call.send(masked(media.connected_event()))
    call.send(masked(media.start_event(1, stream_sid, call_sid, account_sid, params)))
    nursery.start_soon(call.drain)
    return call


class Sent:
    """Media messages the pacer has written, for the daemon's CPU cost per inbound frame."""

    def __init__(self) -> None:
        self.frames = 0


async def pace(calls: list[IdleCall], frames: list[bytes], stop: trio.Event, sent: Sent) -> None:
    """Every 20 ms, one frame to every idle call, against absolute deadlines."""
    payloads = [base64.b64encode(f).decode() for f in frames]
    t0 = trio.current_time()
    n = 0
    while not stop.is_set():
        n += 1
        ms_ = n * 20
        for call in calls:
            if call.closed:
                continue
            call.seq += 1
            raw = (
                f'{{"event":"media","sequenceNumber":"{call.seq}","streamSid":"{call.stream_sid}",'
                f'"media":{{"track":"inbound","chunk":"{n}","timestamp":"{ms_}",'
                f'"payload":"{payloads[n % len(payloads)]}"}}}}'
            )
            call.send(masked(raw))
            sent.frames += not call.closed
        await trio.sleep_until(t0 + n * 0.02)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_cell(cpu: dict[str, Any]) -> str:
    return f"{cpu.get('daemon_pct') or 0:.0f} % (bench {cpu.get('bench_pct') or 0:.0f} %)"


def summarise(outcome: Any) -> dict[str, Any]:
    v2v = [t.v2v_frame_ms for t in outcome.turns if t.v2v_frame_ms is not None]
    return {
        "p50": percentile(v2v, 50),
        "p95": percentile(v2v, 95),
        "turns": len(v2v),
        "starved_ms": sum(t.timing.starved_ms or 0 for t in outcome.turns),
        "error": outcome.error,
    }


async def run_level(
    daemon: Daemon, script: list[Said] | None, idle: int, line: str, hold: float
) -> dict:
    """Hold ``idle`` calls on ``line`` for ``hold`` s (while ``script`` talks, unless None)."""
    target = daemon.target()
    rss0 = rss_mb(daemon.proc.pid)
    stop = trio.Event()
    sent = Sent()
    async with trio.open_nursery() as nursery:
        calls: list[IdleCall] = []
        # Twilio streams from the moment a call connects: pace each call as soon as it opens
        # (the pacer walks the growing list), or the first ones would look like dead peers.
        nursery.start_soon(pace, calls, line_frames(line), stop, sent)
        for i in range(idle):
            call = await open_idle(target, nursery)
            if call is not None:
                calls.append(call)
            if i % 50 == 49:
                log(f"{len(calls)} idle calls open")
        await trio.sleep(SETTLE)
        rss1 = rss_mb(daemon.proc.pid)
        meter = CpuMeter(daemon.proc.pid)
        meter.start()
        frames0 = sent.frames
        started = trio.current_time()
        talking = None
        if script is None:
            log(f"holding {len(calls)} idle calls ({line})")
        else:
            log(f"holding {len(calls)} idle calls ({line}); one caller talks")
            talking = await one_call(daemon, script)
        left = hold - (trio.current_time() - started)
        if left > 0:
            await trio.sleep(left)
        cpu = meter.stop()
        frames = sent.frames - frames0
        still_open = sum(not c.closed for c in calls)
        stop.set()
        for c in calls:
            c.sock.close()
        nursery.cancel_scope.cancel()
    return {
        "idle": len(calls),
        "line": line,
        "held": still_open,
        "mb_per_idle_call": (rss1 - rss0) / max(1, len(calls)),
        "cpu": cpu,
        "frames": frames,
        "cpu_s_per_10k": per_10k(cpu, frames),
        "talking": None if talking is None else summarise(talking),
    }


def per_10k(cpu: dict[str, Any], frames: int) -> float | None:
    """The daemon's CPU-seconds per 10,000 inbound media frames: robust to a shared machine,
    where wall-clock figures are not (the pacer may fall behind; the daemon may wait)."""
    pct, wall = cpu.get("daemon_pct"), cpu.get("wall_seconds")
    if pct is None or not wall or not frames:
        return None
    return pct / 100 * wall / frames * 10_000


async def main_async(args: argparse.Namespace) -> None:
    script = [Said(line) for line in load_script()[: args.turns]] if args.talker else None
    info = machine_info()
    with contextlib.ExitStack() as stack:
        settings = ["call.max_silence_seconds=3600"]
        if args.remote:
            engines = stack.enter_context(engine_standins("150,300"))
            settings = settings_for(engines, "ollama", True, settings)
        settings += args.set
        daemon = stack.enter_context(running_daemon(max_calls=args.idle + 4, settings=settings))
        solo = None
        if script is not None:
            log("solo call")
            solo = summarise(await one_call(daemon, script))
        levels = [await run_level(daemon, script, args.idle, ln, args.hold) for ln in args.line]
        RESULTS.mkdir(exist_ok=True)
        saved = RESULTS / f"idle-{time.strftime('%Y%m%d-%H%M%S')}.daemon.log"
        saved.write_text(daemon.log_text() + "\n")  # the talker's turns, leg by leg
        log(f"daemon log: {saved}")
    print(machine_line(info))
    print()
    print(table(HEADERS, rows(solo, levels)))


HEADERS = [
    "calls",
    "idle held",
    "talker v2v p50",
    "p95",
    "p50 vs solo",
    "dead air ms",
    "MB / idle call",
    "daemon CPU",
    "CPU s / 10k frames",
]


def rows(solo: dict[str, Any] | None, levels: list[dict[str, Any]]) -> list[list[Any]]:
    """The report's table: the solo call (if any talked), then one row per line kind."""
    out: list[list[Any]] = []
    if solo is not None:
        out.append(["solo (no idle calls)", "-", ms(solo["p50"]), ms(solo["p95"]), "-"])
        out[-1] += [solo["starved_ms"], "-", "-", "-"]
    for lv in levels:
        row: list[Any] = [f"{lv['idle']} idle ({lv['line']})", lv["held"]]
        t = lv["talking"]
        if t is None or solo is None:
            row += ["-"] * 4
        else:
            ratio = t["p50"] / solo["p50"] if t["p50"] and solo["p50"] else None
            row += [ms(t["p50"]), ms(t["p95"]), "-" if ratio is None else f"{ratio:.2f}x"]
            row += [t["starved_ms"]]
        per = lv["cpu_s_per_10k"]
        row += [f"{lv['mb_per_idle_call']:.2f}", cpu_cell(lv["cpu"])]
        row += ["-" if per is None else f"{per:.2f} ({lv['frames']} frames)"]
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.split("\n")[0])
    ap.add_argument("--idle", type=int, default=200, help="idle calls held (default 200)")
    ap.add_argument("--hold", type=float, default=120.0, help="seconds to hold them (120)")
    ap.add_argument("--line", nargs="+", default=["silence", "hiss"], choices=["silence", "hiss"])
    ap.add_argument("--turns", type=int, default=6, help="the talking caller's utterances")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument(
        "--talker",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="place the talking call (default); --no-talker measures the idle load alone",
    )
    ap.add_argument(
        "--remote",
        action="store_true",
        help="engines on local stand-ins of hosted ones (bench.engine_standins): fast start",
    )
    args = ap.parse_args(argv)
    trio.run(main_async, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
