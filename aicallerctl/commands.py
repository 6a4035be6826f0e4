"""The aicallerctl commands that talk to a running aicallerd over its control socket.

``status``, ``call``, ``calls``, ``transcript``, ``hangup``, ``reload``. Results go to stdout
(tables for people, ``--json`` for scripts); every failure is one ``aicallerctl: ...`` line on
stderr and an exit code from `EXIT_CODES_HELP`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

from aicallerctl.client import (
    EXIT_OK,
    EXIT_USAGE,
    ControlClient,
    CtlError,
)

DEFAULT_CONFIG = "/etc/aicaller/aicaller.conf"
DEFAULT_SOCKET = "/run/aicaller/control.sock"
# Placing a call waits for Twilio's REST answer; a reload may reload engines.
_TIMEOUTS = {"call": 60.0, "reload": 300.0}
_DEFAULT_TIMEOUT = 30.0

EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  the daemon refused the request (e.g. reload with a bad config, no free line)
  2  usage error
  3  aicallerd is not running (no socket, or nobody listening on it)
  4  permission denied (join the socket's group)
  5  Twilio refused the call, or could not be reached
  6  unknown contact, invalid phone number, or no such call
  7  lost connection, timeout, or a garbled answer from aicallerd

The socket is --socket, else $AICALLER_SOCKET, else [control] socket from --config
(default $AICALLER_CONFIG, else /etc/aicaller/aicaller.conf), else /run/aicaller/control.sock.
"""


# -- where the socket is -------------------------------------------------------------------


def socket_from_config(path: str, environ: Mapping[str, str]) -> str:
    """``[control] socket`` of the daemon's config, resolved the way aicallerd resolves it.

    Only that key is read: a full load would fail for a user who cannot read the daemon's
    credentials, and the CLI does not need the rest. A missing or unreadable file means the
    default location.
    """
    value: Any = ""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError:
        doc = {}
    except tomllib.TOMLDecodeError as exc:
        raise CtlError(f"{path}: invalid TOML ({exc}); pass --socket PATH", EXIT_USAGE) from None
    control = doc.get("control", {})
    if isinstance(control, dict):
        value = control.get("socket", "")
    if not isinstance(value, str):
        raise CtlError(f"{path}: [control] socket must be a string; pass --socket", EXIT_USAGE)
    if value:
        return value
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return os.path.join(runtime, "control.sock") if runtime else DEFAULT_SOCKET


def resolve_socket(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    if getattr(args, "socket", None):
        return str(args.socket)
    if environ.get("AICALLER_SOCKET"):
        return environ["AICALLER_SOCKET"]
    config = getattr(args, "ctl_config", None) or environ.get("AICALLER_CONFIG") or DEFAULT_CONFIG
    return socket_from_config(config, environ)


def _ask(args: argparse.Namespace, cmd: str, cmd_args: Mapping[str, Any] | None = None) -> Any:
    timeout = args.timeout if getattr(args, "timeout", None) else _TIMEOUTS.get(cmd)
    path = resolve_socket(args, os.environ)
    with ControlClient(path, timeout or _DEFAULT_TIMEOUT) as client:
        return client.request(cmd, cmd_args)


# -- formatting ----------------------------------------------------------------------------


def clean(text: Any) -> str:
    """Text from callers and the LLM, made safe for a terminal (no escape sequences)."""
    return "".join(ch if ch.isprintable() else " " for ch in str(text))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def ms(value: Any) -> str:
    return "-" if value is None else f"{value}ms"


def short_direction(direction: Any) -> str:
    return {"inbound": "in", "outbound": "out"}.get(str(direction), clean(direction or "-"))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Left-aligned columns, two spaces apart; what `ps` and `systemctl` users read."""
    cells = [list(headers)] + [[clean(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def _emit_json(result: Any, out: TextIO) -> None:
    json.dump(result, out, indent=2, ensure_ascii=False)
    out.write("\n")


def _peer(row: Mapping[str, Any]) -> str:
    number = row.get("to_number") if row.get("direction") in ("out", "outbound") else None
    number = number or row.get("from_number") or row.get("peer") or "-"
    contact = row.get("contact")
    return f"{contact} ({number})" if contact else str(number)


def format_status(result: Mapping[str, Any]) -> list[str]:
    state = "ready" if result.get("ready") else "starting"
    if result.get("draining"):
        state = "shutting down"
    lines = [
        f"aicallerd {result.get('version', '?')} (pid {result.get('pid', '?')}): {state}, "
        f"up {duration(result.get('uptime_s'))}"
    ]
    if result.get("config"):
        lines.append(f"config: {clean(result['config'])}")
    engines = result.get("engines") or []
    if engines:
        lines.append("")
        lines += table(
            ("ENGINE", "READY", "HEALTH", "DETAIL"),
            (
                (
                    e.get("name", "?"),
                    "yes" if e.get("ready") else "no",
                    e.get("health", "ok"),
                    e.get("detail", ""),
                )
                for e in engines
            ),
        )
    calls = result.get("calls") or []
    lines.append("")
    limit = result.get("max_calls")
    of_max = f" of {limit}" if limit else ""
    if not calls:
        lines.append(f"active calls: none (0{of_max})")
    else:
        lines.append(f"active calls: {len(calls)}{of_max}")
        lines += table(
            ("SID", "DIR", "PEER", "DURATION", "TURNS", "STATE"),
            (
                (
                    c.get("sid", "?"),
                    short_direction(c.get("direction")),
                    _peer(c),
                    duration(c.get("duration_s")),
                    c.get("turns", 0),
                    c.get("state", "active"),
                )
                for c in calls
            ),
        )
    totals = result.get("totals") or {}
    if totals:
        lines.append("")
        lines.append("totals: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    latency = result.get("latency") or {}
    if latency:
        turns = max((leg.get("n", 0) for leg in latency.values()), default=0)
        lines.append("")
        lines.append(f"latency over the last {turns} turns:")
        lines += table(
            ("LEG", "P50", "P95", "N"),
            (
                (name, ms(leg.get("p50_ms")), ms(leg.get("p95_ms")), leg.get("n", 0))
                for name, leg in latency.items()
            ),
        )
    lines += format_cpu(result.get("cpu"))
    return lines


def cpu_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def format_cpu(cpu: Mapping[str, Any] | None) -> list[str]:
    """CPU seconds per answered turn for each leg, and in all, since the engines loaded."""
    if not cpu or not cpu.get("seconds"):
        return []
    turns = int(cpu.get("turns") or 0)
    seconds: Mapping[str, float] = cpu["seconds"]
    total = sum(seconds.values())
    rows = [
        (name, cpu_seconds(value / turns if turns else None), cpu_seconds(value))
        for name, value in [*seconds.items(), ("total", total)]
    ]
    return [
        "",
        f"CPU per answered turn over {turns} turns (in the {duration(cpu.get('since_s'))} "
        "since the engines loaded):",
        *table(("LEG", "CPU/TURN", "CPU"), rows),
    ]


def format_calls(calls: Sequence[Mapping[str, Any]]) -> list[str]:
    if not calls:
        return ["no calls yet"]

    def length(c: Mapping[str, Any]) -> str:
        start, end = c.get("answered_at") or c.get("started_at"), c.get("ended_at")
        return duration(end - start) if start is not None and end is not None else "-"

    return table(
        ("STARTED", "DIR", "PEER", "DURATION", "STATUS", "TURNS", "SID"),
        (
            (
                when(c.get("started_at")),
                short_direction(c.get("direction")),
                _peer(c),
                length(c),
                c.get("end_reason") or c.get("status") or "-",
                c.get("turns", 0),
                c.get("sid", "?"),
            )
            for c in calls
        ),
    )


def format_transcript(result: Mapping[str, Any]) -> list[str]:
    call = result.get("call") or {}
    sid = call.get("sid", "?")
    direction = {"in": "from", "inbound": "from"}.get(call.get("direction"), "to")
    ended = call.get("ended_at")
    started = call.get("answered_at") or call.get("started_at")
    length = f", {duration(ended - started)}" if ended is not None and started is not None else ""
    status = call.get("end_reason") or call.get("status") or "in progress"
    lines = [
        f"call {sid} {direction} {clean(_peer(call))}, {when(call.get('started_at'))}"
        f"{length}, {clean(status)}"
    ]
    turns = result.get("turns") or []
    if not turns:
        lines.append("(no turns)")
    for t in turns:
        who = clean(t.get("who", "?"))
        mark = "  [interrupted]" if t.get("interrupted") else ""
        lines.append(f"{who + ':':<8}{clean(t.get('text', ''))}{mark}")
    return lines


# -- commands ------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    result = _ask(args, "status")
    if args.json:
        _emit_json(result, sys.stdout)
    else:
        print("\n".join(format_status(result)))
    return EXIT_OK


def cmd_call(args: argparse.Namespace) -> int:
    result = _ask(args, "call", {"target": args.target, "prompt": args.prompt})
    print(result.get("sid", ""))
    return EXIT_OK


def cmd_calls(args: argparse.Namespace) -> int:
    result = _ask(args, "calls", {"limit": args.limit})
    if args.json:
        _emit_json(result, sys.stdout)
    else:
        print("\n".join(format_calls(result.get("calls") or [])))
    return EXIT_OK


def cmd_transcript(args: argparse.Namespace) -> int:
    result = _ask(args, "transcript", {"sid": args.sid})
    if args.json:
        _emit_json(result, sys.stdout)
    else:
        print("\n".join(format_transcript(result)))
    return EXIT_OK


def cmd_hangup(args: argparse.Namespace) -> int:
    result = _ask(args, "hangup", {"sid": args.sid})
    print(f"{result.get('sid', args.sid)}: {result.get('status', 'completed')}")
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    result = _ask(args, "reload")
    print(clean(result.get("message") or "configuration reloaded"))
    return EXIT_OK


def _guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn a CtlError into its one stderr line and exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except CtlError as exc:
            print(f"aicallerctl: {exc}", file=sys.stderr)
            return exc.exit_code

    return run


# -- argparse ------------------------------------------------------------------------------


def add_global_options(parser: argparse.ArgumentParser, *, in_subcommand: bool = False) -> None:
    """--socket/--config/--timeout, accepted before or after the command name.

    In subcommands the defaults are SUPPRESS, so ``aicallerctl --socket X status`` is not
    overwritten by the subcommand's own (unset) option.
    """
    default: Any = argparse.SUPPRESS if in_subcommand else None
    parser.add_argument(
        "--socket", metavar="PATH", default=default, help="control socket of aicallerd"
    )
    parser.add_argument(
        "--config",
        dest="ctl_config",
        metavar="FILE",
        default=default,
        help="aicallerd's config, to find the socket (default: $AICALLER_CONFIG or "
        f"{DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=default,
        help="how long to wait for an answer (default: 30, call 60, reload 300)",
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_global_options(common, in_subcommand=True)
    formatter = argparse.RawDescriptionHelpFormatter

    def command(name: str, help: str, fn: Callable[[argparse.Namespace], int]) -> Any:
        p = sub.add_parser(
            name,
            help=help,
            description=help,
            parents=[common],
            epilog=EXIT_CODES_HELP,
            formatter_class=formatter,
        )
        p.set_defaults(func=_guarded(fn))
        return p

    p = command("status", "uptime, engines, active calls, totals and latency", cmd_status)
    p.add_argument("--json", action="store_true", help="print the raw JSON result")

    p = command("call", "place an outbound call to a contact or an E.164 number", cmd_call)
    p.add_argument("target", metavar="NAME|NUMBER", help="contact name or +15551234567")
    p.add_argument("--prompt", metavar="TEXT", help="instructions for the agent on this call")

    p = command("calls", "recent calls from the call log", cmd_calls)
    p.add_argument("--limit", type=_limit, default=20, metavar="N", help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="print the raw JSON result")

    p = command("transcript", "what was said on a call", cmd_transcript)
    p.add_argument("sid", metavar="SID", help="the call SID (CA...)")
    p.add_argument("--json", action="store_true", help="print the raw JSON result")

    p = command("hangup", "end a call", cmd_hangup)
    p.add_argument("sid", metavar="SID", help="the call SID (CA...)")

    command("reload", "re-read the configuration (calls in progress keep theirs)", cmd_reload)


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"expected 1 to 1000, got {value}")
    return value
