"""``aicallerctl test-call`` at work: build the caller's script, place the call through the
stand-in, transcribe and print what happened (the parser is in :mod:`aicallerctl.testcall_cli`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import trio

from aicallerctl.testcall import CallResult, Target, Utterance, place_call
from aicallerd.audio.mulaw import ulaw_decode
from aicallerd.audio.resample import float_to_pcm16, resample
from aicallerd.audio.wav import read_wav, write_wav


def _trim(pcm8: np.ndarray, threshold: int = 300) -> np.ndarray:
    """Drop leading/trailing silence so 'end of speech' means the last spoken sound."""
    loud = np.flatnonzero(np.abs(pcm8.astype(np.int32)) > threshold)
    if not len(loud):
        return pcm8
    return pcm8[max(0, loud[0] - 80) : loud[-1] + 80]


def build_script(items: list[tuple[str, str]]) -> list[Utterance]:
    script: list[Utterance] = []
    tts = None
    for kind, value in items:
        if kind == "say":
            if tts is None:
                from aicallerd.engines.tts import PiperTTS

                tts = PiperTTS()
                tts.load()
            pcm, rate = tts.synthesize_pcm_sync(value)
            text = value
        else:
            pcm, rate = read_wav(value)
            text = f"<{Path(value).name}>"
        pcm8 = float_to_pcm16(resample(pcm.astype(np.float32) / 32768.0, rate, 8000))
        script.append(Utterance(_trim(pcm8), text))
    return script


def transcribe_result(result: CallResult) -> None:
    from aicallerd.engines.stt import Transcriber

    stt = Transcriber()
    stt.load()
    if result.greeting_audio:
        result.greeting_text = stt.transcribe_sync(ulaw_decode(bytes(result.greeting_audio)))
    for turn in result.turns:
        if turn.agent_audio:
            turn.agent_text = stt.transcribe_sync(ulaw_decode(bytes(turn.agent_audio)))


def target_from_args(args: argparse.Namespace) -> Target:
    from aicallerd.config import load_config
    from aicallerd.devtoken import resolve_auth_token

    cfg = load_config(args.config if Path(args.config).exists() else None, os.environ)
    token = args.auth_token or resolve_auth_token(cfg, create=False)
    if not token:
        raise SystemExit(
            "aicallerctl: no Twilio auth token: pass --auth-token or set [twilio] auth_token"
        )
    connect = args.connect or f"http://{cfg.server.listen}"
    return Target(
        connect=connect,
        public_url=cfg.server.public_url,
        auth_token=token,
        verify=args.cafile or True,
    )


def print_result(result: CallResult) -> None:
    print(f"call {result.call_sid}")
    if result.refused:
        print(f"  refused: {result.refused}")
        return
    if result.greeting_text:
        print(f"  agent : {result.greeting_text}")
    for i, turn in enumerate(result.turns, 1):
        lat = "no reply" if turn.latency is None else f"{turn.latency * 1000:.0f} ms"
        print(f"  caller: {turn.caller_text}")
        print(f"  agent : {turn.agent_text or '(no speech)'}")
        extra = f", {turn.gap_frames * 20} ms of gaps" if turn.gap_frames else ""
        print(f"  turn {i}: voice-to-voice {lat}{extra}")
    lats = [t.latency for t in result.turns if t.latency is not None]
    if lats:
        print(f"  median voice-to-voice {np.median(lats) * 1000:.0f} ms over {len(lats)} turns")
    print(
        f"  {'daemon ended the call' if result.closed_by_daemon else 'caller hung up'};"
        f" marks echoed {result.marks_echoed}, clears {result.clears}"
    )


def run(args: argparse.Namespace) -> int:
    if not args.script:
        print("aicallerctl test-call: give at least one --say TEXT or --wav FILE", file=sys.stderr)
        return 2
    target = target_from_args(args)
    script = build_script(args.script)
    result = trio.run(lambda: place_call(target, script, reply_timeout=args.reply_timeout))
    if not args.no_transcribe and not result.refused:
        transcribe_result(result)
    if args.save:
        out = Path(args.save)
        out.mkdir(parents=True, exist_ok=True)
        write_wav(out / "caller.wav", ulaw_decode(bytes(result.caller_track)), 8000)
        write_wav(out / "agent.wav", ulaw_decode(bytes(result.agent_track)), 8000)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_result(result)
    return 1 if result.refused else 0
