"""PiperTTS for real (round trip through Whisper) and ElevenLabsTTS against a local fake."""

import logging
import time
from collections.abc import Iterator
from contextlib import aclosing

import httpx
import numpy as np
import pytest
import trio
from fakes.elevenlabs_server import CHUNK_BYTES, FakeElevenLabs, fake_audio

from aicallerd.audio.mulaw import ulaw_decode
from aicallerd.engines.stt import Transcriber
from aicallerd.engines.tts import ElevenLabsTTS, PiperTTS, Synthesizer, TTSError
from bench.daemon import free_port
from bench.wer import wer

TWO_SENTENCES = "Your table for two is booked for seven tonight. Is there anything else I can do?"


@pytest.fixture(scope="module")
def piper() -> PiperTTS:
    tts = PiperTTS()
    trio.run(tts.warm)
    return tts


@pytest.fixture(scope="module")
def stt() -> Transcriber:
    t = Transcriber()
    t.load()
    return t


async def collect(tts: Synthesizer, text: str) -> tuple[list[bytes], float]:
    """(chunks, seconds to the first chunk)."""
    chunks: list[bytes] = []
    t0 = time.monotonic()
    first = 0.0
    async with aclosing(tts.stream_ulaw(text)) as it:
        async for chunk in it:
            if not chunks:
                first = time.monotonic() - t0
            chunks.append(chunk)
    return chunks, first


# -- Piper ----------------------------------------------------------------------------------


def test_piper_streams_one_chunk_per_sentence(piper: PiperTTS, stt: Transcriber) -> None:
    chunks, first = trio.run(collect, piper, TWO_SENTENCES)
    assert len(chunks) == 2 and all(isinstance(c, bytes) and c for c in chunks)
    audio = b"".join(chunks)
    seconds = len(audio) / 8000
    # ~12-18 characters per second of natural speech.
    assert len(TWO_SENTENCES) * 0.03 < seconds < len(TWO_SENTENCES) * 0.12, seconds
    pcm = ulaw_decode(audio)
    assert 500 < np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) < 20000
    text = stt.transcribe_sync(pcm)
    print(f"\npiper: first audio {first * 1000:.0f} ms, {seconds:.2f} s: heard {text!r}")
    assert wer(TWO_SENTENCES, text) < 0.3, text


def test_piper_first_audio_of_a_sentence(piper: PiperTTS, stt: Transcriber) -> None:
    sentence = "Sure, I can help you with that."
    chunks, first = trio.run(collect, piper, sentence)
    assert len(chunks) == 1
    print(f"\npiper: one sentence, first audio {first * 1000:.0f} ms")
    assert first < 5.0
    assert wer(sentence, stt.transcribe_sync(ulaw_decode(chunks[0]))) < 0.3


def test_piper_speed_changes_duration(piper: PiperTTS) -> None:
    fast = PiperTTS(speed=1.5)
    normal_pcm, rate = piper.synthesize_pcm_sync("The weather is lovely today.")
    fast_pcm, fast_rate = fast.synthesize_pcm_sync("The weather is lovely today.")
    assert rate == fast_rate == piper.sample_rate == 22050
    assert normal_pcm.dtype == np.int16
    assert len(fast_pcm) < 0.85 * len(normal_pcm)
    assert fast.describe() == "piper en_US-joe-medium x1.5"


def test_piper_empty_text_yields_nothing(piper: PiperTTS) -> None:
    assert trio.run(collect, piper, "   ")[0] == []
    pcm, _ = piper.synthesize_pcm_sync("")
    assert pcm.size == 0


def test_piper_cancel_mid_stream_then_speak_again(piper: PiperTTS) -> None:
    long_text = " ".join([TWO_SENTENCES] * 3)

    async def main() -> tuple[int, list[bytes]]:
        got = 0
        with trio.CancelScope() as scope:
            async with aclosing(piper.stream_ulaw(long_text)) as it:
                async for _ in it:
                    got += 1
                    scope.cancel()  # barge-in after the first sentence
        again, _ = await collect(piper, "Okay.")
        return got, again

    got, again = trio.run(main)
    assert got == 1
    assert again and again[0]


def test_piper_missing_voice_is_a_clear_error() -> None:
    with pytest.raises(TTSError, match="does not exist"):
        PiperTTS(voice="/nonexistent/voice.onnx").load()


def test_piper_is_a_synthesizer(piper: PiperTTS) -> None:
    assert isinstance(piper, Synthesizer)
    assert piper.describe() == "piper en_US-joe-medium x1"


# -- ElevenLabs (fake) -------------------------------------------------------------------


@pytest.fixture
def eleven() -> Iterator[FakeElevenLabs]:
    with FakeElevenLabs(api_key="sk_test_key") as fake:
        yield fake


def eleven_run(fake: FakeElevenLabs, text: str, key: str = "sk_test_key", **kw: object) -> bytes:
    async def main() -> bytes:
        async with httpx.AsyncClient(timeout=5) as client:
            tts = ElevenLabsTTS(key, "voice123", client=client, base_url=fake.base_url, **kw)
            chunks, _ = await collect(tts, text)
            return b"".join(chunks)

    return trio.run(main)


def test_elevenlabs_streams_ulaw_and_sends_the_right_request(eleven: FakeElevenLabs) -> None:
    text = "Hello, this is your assistant calling about tomorrow."
    audio = eleven_run(eleven, text)
    assert audio == fake_audio(text)
    assert eleven.streamed_chunks == -(-len(audio) // CHUNK_BYTES) > 1
    (req,) = eleven.requests
    assert req.method == "POST"
    assert req.path == "/v1/text-to-speech/voice123/stream"
    assert req.query == "output_format=ulaw_8000"
    assert req.headers["xi-api-key"] == "sk_test_key"
    assert req.body == {
        "text": text,
        "model_id": "eleven_flash_v2_5",
        "voice_settings": {"stability": 0.5, "similarity_boost": 0.75, "speed": 0.9},
    }


def test_elevenlabs_yields_chunks_as_they_arrive(eleven: FakeElevenLabs) -> None:
    async def main() -> int:
        async with httpx.AsyncClient() as client:
            tts = ElevenLabsTTS("sk_test_key", "voice123", client=client, base_url=eleven.base_url)
            chunks, _ = await collect(tts, "A fairly long sentence so there are several chunks.")
            return len(chunks)

    assert trio.run(main) > 1


def test_elevenlabs_bad_key_is_401_without_leaking_it(
    eleven: FakeElevenLabs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TTSError) as info:
        eleven_run(eleven, "Hello.", key="sk_wrong_secret")
    assert info.value.status == 401
    assert "invalid_api_key" in str(info.value) and "Invalid API key" in str(info.value)
    assert "sk_wrong_secret" not in str(info.value)
    assert "sk_wrong_secret" not in caplog.text


def test_elevenlabs_validation_error_is_422(eleven: FakeElevenLabs) -> None:
    eleven.fail_status = 422
    with pytest.raises(TTSError, match=r"HTTP 422: body\.text: forced error") as info:
        eleven_run(eleven, "Hello.")
    assert info.value.status == 422


def test_elevenlabs_server_error(eleven: FakeElevenLabs) -> None:
    eleven.fail_status = 500
    with pytest.raises(TTSError, match="HTTP 500: internal_error: Something went wrong"):
        eleven_run(eleven, "Hello.")


def test_elevenlabs_unknown_voice(eleven: FakeElevenLabs) -> None:
    async def main() -> None:
        async with httpx.AsyncClient() as client:
            tts = ElevenLabsTTS("sk_test_key", "nobody", client=client, base_url=eleven.base_url)
            await tts.warm()

    with pytest.raises(TTSError, match="voice_not_found") as info:
        trio.run(main)
    assert info.value.status == 404


def test_elevenlabs_warm_checks_key_and_voice(eleven: FakeElevenLabs) -> None:
    async def main(key: str) -> None:
        async with httpx.AsyncClient() as client:
            await ElevenLabsTTS(key, "voice123", client=client, base_url=eleven.base_url).warm()

    trio.run(main, "sk_test_key")
    assert eleven.requests[-1].path == "/v1/voices/voice123"
    with pytest.raises(TTSError, match="401"):
        trio.run(main, "bad")


def test_elevenlabs_connection_refused_without_key_in_message() -> None:
    port = free_port()

    async def main() -> None:
        tts = ElevenLabsTTS("sk_secret", "voice123", base_url=f"http://127.0.0.1:{port}")
        try:
            await collect(tts, "Hello.")
        finally:
            await tts.aclose()

    with pytest.raises(TTSError, match="unreachable") as info:
        trio.run(main)
    assert "sk_secret" not in str(info.value)


def test_elevenlabs_speed_is_clamped_and_repr_hides_key() -> None:
    tts = ElevenLabsTTS("sk_secret", "voice123", client=httpx.AsyncClient(), speed=2.0)
    assert tts.voice_settings["speed"] == 1.2
    assert "sk_secret" not in repr(tts) and "sk_secret" not in tts.describe()
    assert isinstance(tts, Synthesizer)


def test_elevenlabs_empty_text_sends_nothing(eleven: FakeElevenLabs) -> None:
    assert eleven_run(eleven, "  ") == b""
    assert eleven.requests == []
