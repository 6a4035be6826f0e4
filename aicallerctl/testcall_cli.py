"""``aicallerctl test-call``: its command line only.

The stand-in (numpy, trio, httpx, trio-websocket) is imported when ``test-call`` runs
(:mod:`aicallerctl.testcall_run`), so ``aicallerctl status`` and the other commands start
without it.
"""

from __future__ import annotations

import argparse
import os


class _ScriptAction(argparse.Action):
    """Keep --say and --wav in the order given: they are one conversation script."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        script = getattr(namespace, "script", None) or []
        script.append((self.dest, values))
        namespace.script = script


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "test-call",
        help="place a call through the local Twilio stand-in (no Twilio needed)",
        description=(
            "Act as Twilio: signed /voice webhook, Media Stream with the TwiML token, caller "
            "audio streamed in real time, agent audio played through a simulated playout buffer."
        ),
    )
    p.add_argument(
        "--say",
        action=_ScriptAction,
        metavar="TEXT",
        dest="say",
        help="the caller says TEXT (spoken by the local TTS); repeatable",
    )
    p.add_argument(
        "--wav",
        action=_ScriptAction,
        metavar="FILE",
        dest="wav",
        help="the caller plays a WAV file; repeatable, mixes with --say in order",
    )
    p.add_argument("--save", metavar="DIR", help="write caller.wav and agent.wav to DIR")
    p.add_argument(
        "--config",
        default=os.environ.get("AICALLER_CONFIG", "/etc/aicaller/aicaller.conf"),
        help="daemon config to read the listen address, public URL and token from",
    )
    p.add_argument("--connect", help="base URL to connect to (default: http://<listen>)")
    p.add_argument("--cafile", help="CA bundle for https/wss connects (e.g. Caddy's local CA)")
    p.add_argument("--auth-token", help="Twilio auth token to sign with (default: from config)")
    p.add_argument("--reply-timeout", type=float, default=20.0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--no-transcribe", action="store_true", help="skip transcribing the agent's audio"
    )
    p.set_defaults(func=_run, script=[])


def _run(args: argparse.Namespace) -> int:
    from aicallerctl.testcall_run import run

    return run(args)
