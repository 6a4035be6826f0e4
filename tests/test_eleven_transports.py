"""ElevenLabs HTTP streaming vs WebSocket input streaming, per sentence, with realistic delays.

The fake charges what the network and the model would: a new connection pays TCP and TLS
(`connect_seconds`), every request a round trip (`rtt_seconds`), every sentence the model's
time to first audio (`model_seconds`). Printed numbers are in the lead's report; the test
checks that the configured default ([tts] elevenlabs_transport) is the faster one.
"""

import time
from contextlib import aclosing

import httpx
import trio
from fakes.elevenlabs_server import FakeElevenLabs, fake_audio

from aicallerd.configschema import TtsConfig
from aicallerd.engines.elevenlabs_ws import ElevenLabsWebSocketTTS
from aicallerd.engines.tts import ElevenLabsTTS, Synthesizer

SENTENCES = [
    "Sure, I can help with that.",
    "We are open from nine to five on weekdays.",
    "On Saturdays we close at noon.",
    "Is there anything else I can do for you?",
]
CONNECT, RTT, MODEL = 0.10, 0.05, 0.15  # TCP+TLS to a cloud region, one round trip, flash v2.5


async def timed(tts: Synthesizer, text: str) -> tuple[float, float, bytes]:
    t0 = time.monotonic()
    first = 0.0
    audio = b""
    async with aclosing(tts.stream_ulaw(text)) as it:
        async for chunk in it:
            if not audio:
                first = time.monotonic() - t0
            audio += chunk
    return first, time.monotonic() - t0, audio


def test_http_streaming_starts_sooner_than_websocket_per_sentence() -> None:
    with FakeElevenLabs() as eleven:
        eleven.connect_seconds, eleven.rtt_seconds, eleven.model_seconds = CONNECT, RTT, MODEL

        async def main() -> dict[str, list[tuple[float, float]]]:
            results: dict[str, list[tuple[float, float]]] = {"http": [], "websocket": []}
            async with httpx.AsyncClient() as http, trio.open_nursery() as nursery:
                ws_url = await nursery.start(eleven.serve_websocket)
                key, voice = "sk_test_key", "voice123"
                engines: dict[str, Synthesizer] = {
                    "http": ElevenLabsTTS(key, voice, client=http, base_url=eleven.base_url),
                    "websocket": ElevenLabsWebSocketTTS(key, voice, base_url=ws_url),
                }
                for name, tts in engines.items():
                    for text in SENTENCES:
                        first, total, audio = await timed(tts, text)
                        assert audio == fake_audio(text)
                        results[name].append((first, total))
                nursery.cancel_scope.cancel()
            return results

        results = trio.run(main)
    means = {}
    for name, rows in results.items():
        firsts = [f for f, _ in rows]
        means[name] = sum(firsts) / len(firsts)
        print(
            f"\n{name}: first audio per sentence "
            + ", ".join(f"{f * 1000:.0f}" for f in firsts)
            + f" ms (mean {means[name] * 1000:.0f}); whole sentence mean "
            f"{sum(t for _, t in rows) / len(rows) * 1000:.0f} ms"
        )
    default = TtsConfig().elevenlabs_transport
    assert means[default] == min(means.values())
