"""Cloud engines against local fakes of their APIs, and their local fallbacks.

Every fault a cloud service shows in practice (401, 429, 500, a slow first byte, a stream
cut midway, a refused connection) must leave the caller with the whole transcript, reply
or sentence, from the local engine where the cloud one failed.
"""

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing

import httpx
import numpy as np
import pytest
import trio
from fakes.elevenlabs_server import CHUNK_BYTES, FakeElevenLabs, fake_audio
from fakes.ollama_server import FakeOllama
from fakes.openai_audio_server import FakeOpenAIAudio

from aicallerd.audio.mulaw import ulaw_decode
from aicallerd.engines.breaker import Breaker
from aicallerd.engines.elevenlabs_ws import ElevenLabsWebSocketTTS
from aicallerd.engines.fallback import FallbackChat, FallbackSynthesizer, FallbackTranscriber
from aicallerd.engines.llm import OllamaChat, OpenAIChat
from aicallerd.engines.openai_stt import OpenAITranscriber
from aicallerd.engines.openai_tts import OpenAISpeechTTS
from aicallerd.engines.stt import STTError
from aicallerd.engines.tts import ElevenLabsTTS, TTSError
from bench.daemon import free_port

LOCAL_TEXT = "local words"
CLOUD_REPLY = "Sure, we are open until nine tonight."
LOCAL_REPLY = "The local model says we open at nine."
SENTENCE = "Your table for two is booked for seven tonight."
PHRASE = (np.sin(2 * np.pi * 200 * np.arange(8000) / 8000) * 3000).astype(np.int16)


class LocalStt:
    """Stands in for Whisper: answers at once and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def transcribe(self, pcm8: np.ndarray) -> str:
        self.calls += 1
        return LOCAL_TEXT

    def describe(self) -> str:
        return "local whisper"


class LocalVoice:
    """Stands in for Piper: 0.1 s of audio per 2 characters, records what it was asked."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def stream_ulaw(self, text: str) -> AsyncIterator[bytes]:
        self.texts.append(text)
        yield b"\x55" * (400 * len(text))

    async def warm(self) -> None:
        pass

    def describe(self) -> str:
        return "local piper"


@pytest.fixture
def audio_api() -> Iterator[FakeOpenAIAudio]:
    with FakeOpenAIAudio() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def eleven() -> Iterator[FakeElevenLabs]:
    with FakeElevenLabs() as fake:
        yield fake  # type: ignore[misc]


def refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    out = b""
    async with aclosing(stream) as it:
        async for chunk in it:
            out += chunk
    return out


async def reply(llm: FallbackChat | OllamaChat | OpenAIChat) -> str:
    messages = [{"role": "user", "content": "When do you open?"}]
    out = ""
    async with aclosing(llm.stream_chat(messages, max_tokens=50, temperature=0.0)) as it:
        async for delta in it:
            out += delta
    return out


# -- OpenAI-compatible transcription ---------------------------------------------------------


def test_transcription_posts_a_wav_with_model_language_and_key(audio_api: FakeOpenAIAudio) -> None:
    async def main() -> str:
        async with httpx.AsyncClient() as http:
            stt = OpenAITranscriber(audio_api.base_url, "whisper-1", http, api_key="sk-test")
            await stt.check()
            return await stt.transcribe(PHRASE)

    assert trio.run(main) == "I would like a table."
    form = audio_api.forms[-1]
    assert form["model"] == "whisper-1" and form["language"] == "en"
    assert form["response_format"] == "json"
    filename, wav = form["file"]
    assert filename.endswith(".wav") and wav[:4] == b"RIFF"
    assert wav[24:28] == (8000).to_bytes(4, "little")  # the call's own rate


def test_transcription_accepts_the_full_endpoint_as_url(audio_api: FakeOpenAIAudio) -> None:
    async def main() -> str:
        async with httpx.AsyncClient() as http:
            url = audio_api.base_url + "/v1/audio/transcriptions"
            return await OpenAITranscriber(url, "whisper-1", http, api_key="sk-test").transcribe(
                PHRASE
            )

    assert trio.run(main) == "I would like a table."


@pytest.mark.parametrize("status", [401, 429, 500])
def test_transcription_errors_carry_status_and_message(
    audio_api: FakeOpenAIAudio, status: int
) -> None:
    audio_api.fail_status = None if status == 401 else status
    key = "wrong" if status == 401 else "sk-test"

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            await OpenAITranscriber(audio_api.base_url, "whisper-1", http, api_key=key).transcribe(
                PHRASE
            )

    with pytest.raises(STTError) as info:
        trio.run(main)
    assert info.value.status == status
    assert "wrong" not in str(info.value)


@pytest.mark.parametrize("fault", ["401", "429", "500", "slow", "refused"])
def test_failed_phrase_is_transcribed_locally(audio_api: FakeOpenAIAudio, fault: str) -> None:
    url = refused_url() if fault == "refused" else audio_api.base_url
    if fault == "slow":
        audio_api.first_byte_seconds = 2.0
    elif fault.isdigit():
        audio_api.fail_status = int(fault)
    local = LocalStt()

    async def main() -> tuple[str, str]:
        async with httpx.AsyncClient() as http:
            cloud = OpenAITranscriber(url, "whisper-1", http, api_key="sk-test")
            stt = FallbackTranscriber(cloud, local, deadline=0.3)
            return await stt.transcribe(PHRASE), stt.status()

    text, status = trio.run(main)
    assert text == LOCAL_TEXT and local.calls == 1
    assert status.startswith("degraded: ")


def test_stt_breaker_opens_then_recovers(audio_api: FakeOpenAIAudio) -> None:
    audio_api.fail_status = 500
    local = LocalStt()
    now = [0.0]

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            cloud = OpenAITranscriber(audio_api.base_url, "whisper-1", http, api_key="sk-test")
            breaker = Breaker(threshold=3, cooldown=30.0, retry_after=0.0)
            stt = FallbackTranscriber(cloud, local, breaker=breaker, clock=lambda: now[0])
            for _ in range(3):
                assert await stt.transcribe(PHRASE) == LOCAL_TEXT
            assert stt.status().startswith("open until ")
            asked = len(audio_api.requests)
            now[0] = 10.0
            assert await stt.transcribe(PHRASE) == LOCAL_TEXT
            assert len(audio_api.requests) == asked  # skipped while open
            audio_api.fail_status = None
            now[0] = 31.0
            assert await stt.transcribe(PHRASE) == "I would like a table."  # half-open trial
            assert stt.status() == "ok"

    trio.run(main)
    assert local.calls == 4


# -- LLM: endpoint URLs and fallback ----------------------------------------------------------


def test_ollama_accepts_the_seeds_full_endpoint_url() -> None:
    with FakeOllama(reply=CLOUD_REPLY) as fake:

        async def main() -> str:
            async with httpx.AsyncClient() as http:
                llm = OllamaChat(fake.base_url + "/api/chat", "gemma3:1b", http)
                await llm.health()
                return await reply(llm)

        assert trio.run(main) == CLOUD_REPLY
        assert {r.path for r in fake.requests} <= {"/api/chat", "/api/version", "/api/tags"}


def test_openai_accepts_the_full_endpoint_url_and_sends_the_key() -> None:
    with FakeOllama(reply=CLOUD_REPLY) as fake:

        async def main() -> str:
            async with httpx.AsyncClient() as http:
                url = fake.base_url + "/v1/chat/completions"
                return await reply(OpenAIChat(url, "gemma3:1b", http, api_key="vllm-key"))

        assert trio.run(main) == CLOUD_REPLY
        assert fake.requests[-1].path == "/v1/chat/completions"
        assert fake.requests[-1].headers["authorization"] == "Bearer vllm-key"


@pytest.mark.parametrize("backend", ["ollama", "openai"])
@pytest.mark.parametrize("fault", ["404", "503", "slow", "error-line", "drop", "refused"])
def test_failed_turn_is_answered_by_the_local_model(backend: str, fault: str) -> None:
    with FakeOllama(reply=CLOUD_REPLY) as cloud_fake, FakeOllama(reply=LOCAL_REPLY) as local_fake:
        url = refused_url() if fault == "refused" else cloud_fake.base_url
        model = "nope:1b" if fault == "404" else "gemma3:1b"
        cloud_fake.busy = fault == "503"
        cloud_fake.first_byte_seconds = 2.0 if fault == "slow" else 0.0
        cloud_fake.error_after = 0 if fault == "error-line" else None
        cloud_fake.drop_after = 0 if fault == "drop" else None

        async def main() -> tuple[str, str]:
            async with httpx.AsyncClient() as http:
                cloud = (
                    OllamaChat(url, model, http)
                    if backend == "ollama"
                    else OpenAIChat(url, model, http)
                )
                local = OllamaChat(local_fake.base_url, "gemma3:1b", http)
                llm = FallbackChat(cloud, local, first_token_seconds=0.3)
                return await reply(llm), llm.status()

        text, status = trio.run(main)
    assert text == LOCAL_REPLY
    assert status.startswith("degraded: ")


def test_a_stream_that_stalls_after_a_token_moves_to_the_local_model_unheard() -> None:
    """One token, then only keep-alives: nothing was speakable yet, so the local model
    answers the turn and the caller never hears the cloud's first word twice."""
    with FakeOllama(reply="We open at nine.") as cloud_fake, FakeOllama(reply=LOCAL_REPLY) as local:
        cloud_fake.stall_after = 1

        async def main() -> tuple[str, str]:
            async with httpx.AsyncClient() as http:
                llm = FallbackChat(
                    OpenAIChat(cloud_fake.base_url, "gemma3:1b", http),
                    OllamaChat(local.base_url, "gemma3:1b", http),
                    first_token_seconds=0.3,
                )
                return await reply(llm), llm.status()

        text, status = trio.run(main)
    assert text == LOCAL_REPLY
    assert status.startswith("degraded: ")


def test_cloud_reply_passes_through_and_a_late_drop_ends_the_reply() -> None:
    with FakeOllama(reply=CLOUD_REPLY) as cloud_fake, FakeOllama(reply=LOCAL_REPLY) as local_fake:

        async def main() -> tuple[str, str, str]:
            async with httpx.AsyncClient() as http:
                llm = FallbackChat(
                    OllamaChat(cloud_fake.base_url, "gemma3:1b", http),
                    OllamaChat(local_fake.base_url, "gemma3:1b", http),
                )
                whole = await reply(llm)
                cloud_fake.drop_after = 3
                cut = await reply(llm)
                return whole, cut, llm.status()

        whole, cut, status = trio.run(main)
    assert whole == CLOUD_REPLY
    assert cut == "Sure, we are"  # what was already spoken stays; no restart, no exception
    assert status.startswith("degraded: ")


# -- TTS: ElevenLabs (HTTP stream, MP3 files, WebSocket), OpenAI speech, fallback --------------


def test_elevenlabs_file_mode_decodes_the_mp3(eleven: FakeElevenLabs) -> None:
    async def main() -> bytes:
        async with httpx.AsyncClient() as http:
            tts = ElevenLabsTTS(
                "sk_test_key", "voice123", client=http, base_url=eleven.base_url, streaming=False
            )
            return await collect(tts.stream_ulaw(SENTENCE))

    audio = trio.run(main)
    rec = eleven.requests[-1]
    assert rec.path == "/v1/text-to-speech/voice123" and "output_format=mp3_44100_128" in rec.query
    expected = len(fake_audio(SENTENCE))
    assert abs(len(audio) - expected) < 0.05 * expected
    pcm = ulaw_decode(audio).astype(np.float64)
    assert 4000 < np.sqrt(np.mean(pcm[800:-800] ** 2)) < 7000  # the 8000-peak tone survived


def test_elevenlabs_sends_speed_and_model(eleven: FakeElevenLabs) -> None:
    async def main() -> None:
        async with httpx.AsyncClient() as http:
            tts = ElevenLabsTTS(
                "sk_test_key",
                "voice123",
                "eleven_turbo_v2_5",
                client=http,
                base_url=eleven.base_url,
                speed=1.1,
            )
            await collect(tts.stream_ulaw(SENTENCE))

    trio.run(main)
    body = eleven.requests[-1].body
    assert body["model_id"] == "eleven_turbo_v2_5" and body["voice_settings"]["speed"] == 1.1


def run_ws(eleven: FakeElevenLabs, key: str = "sk_test_key", text: str = SENTENCE) -> bytes:
    async def main() -> bytes | TTSError:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(eleven.serve_websocket)
            tts = ElevenLabsWebSocketTTS(key, "voice123", base_url=url, speed=0.9)
            try:
                return await collect(tts.stream_ulaw(text))
            except TTSError as exc:
                return exc
            finally:
                nursery.cancel_scope.cancel()

    result = trio.run(main)
    if isinstance(result, TTSError):
        raise result
    return result


def test_elevenlabs_websocket_streams_the_sentence(eleven: FakeElevenLabs) -> None:
    assert run_ws(eleven) == fake_audio(SENTENCE)
    first, text, close = eleven.ws_messages
    assert first["text"] == " " and first["voice_settings"]["speed"] == 0.9
    assert "chunk_length_schedule" in first["generation_config"]
    assert text == {"text": SENTENCE + " ", "flush": True}
    assert close == {"text": ""}


def test_elevenlabs_websocket_bad_key_and_drop(eleven: FakeElevenLabs) -> None:
    with pytest.raises(TTSError, match="invalid_api_key"):
        run_ws(eleven, key="wrong")
    eleven.drop_after_chunks = 2
    with pytest.raises(TTSError, match="1011"):
        run_ws(eleven)
    eleven.drop_after_chunks = None
    eleven.fail_status = 500
    with pytest.raises(TTSError, match="HTTP 500") as info:
        run_ws(eleven)
    assert info.value.status == 500


def test_elevenlabs_websocket_refused() -> None:
    async def main() -> bytes:
        tts = ElevenLabsWebSocketTTS("k", "voice123", base_url=refused_url())
        return await collect(tts.stream_ulaw(SENTENCE))

    with pytest.raises(TTSError, match="unreachable"):
        trio.run(main)


@pytest.mark.parametrize("fmt", ["pcm", "wav"])
def test_openai_speech_to_ulaw(audio_api: FakeOpenAIAudio, fmt: str) -> None:
    async def main() -> list[bytes]:
        async with httpx.AsyncClient() as http:
            url, key = audio_api.base_url, "sk-test"
            tts = OpenAISpeechTTS(url, "kokoro", "af_heart", http, api_key=key, response_format=fmt)
            out: list[bytes] = []
            async with aclosing(tts.stream_ulaw(SENTENCE)) as it:
                async for chunk in it:
                    out.append(chunk)
            return out

    chunks = trio.run(main)
    assert len(chunks) > (5 if fmt == "pcm" else 0)  # pcm is passed on as it arrives
    audio = b"".join(chunks)
    expected = len(SENTENCE) * 0.06 * 8000
    assert abs(len(audio) - expected) < 0.02 * expected
    body = audio_api.requests[-1].body
    assert body == {
        "model": "kokoro",
        "input": SENTENCE,
        "voice": "af_heart",
        "response_format": fmt,
        "speed": 1.0,
    }


def test_openai_speech_error(audio_api: FakeOpenAIAudio) -> None:
    audio_api.fail_status = 429

    async def main() -> bytes:
        async with httpx.AsyncClient() as http:
            tts = OpenAISpeechTTS(audio_api.base_url, "kokoro", "af_heart", http, api_key="sk-test")
            return await collect(tts.stream_ulaw(SENTENCE))

    with pytest.raises(TTSError, match="Rate limit") as info:
        trio.run(main)
    assert info.value.status == 429


def eleven_fallback(
    eleven: FakeElevenLabs, local: LocalVoice, *, base_url: str | None = None, sentences: int = 1
) -> tuple[bytes, str]:
    async def main() -> tuple[bytes, str]:
        async with httpx.AsyncClient() as http:
            cloud = ElevenLabsTTS(
                "sk_test_key", "voice123", client=http, base_url=base_url or eleven.base_url
            )
            tts = FallbackSynthesizer(cloud, local, first_audio_seconds=0.3, speed=0.9)
            audio = b""
            for _ in range(sentences):
                audio += await collect(tts.stream_ulaw(SENTENCE))
            return audio, tts.status()

    return trio.run(main)


@pytest.mark.parametrize("fault", ["401", "429", "500", "slow", "refused"])
def test_failed_sentence_is_spoken_by_the_local_voice(eleven: FakeElevenLabs, fault: str) -> None:
    if fault == "slow":
        eleven.first_byte_seconds = 2.0
    elif fault.isdigit():
        eleven.fail_status = int(fault)
    local = LocalVoice()
    url = refused_url() if fault == "refused" else None
    audio, status = eleven_fallback(eleven, local, base_url=url)
    assert local.texts == [SENTENCE]
    assert audio == b"\x55" * (400 * len(SENTENCE))
    assert status.startswith("degraded: ")


def test_dropped_stream_is_finished_by_the_local_voice_and_so_is_the_reply(
    eleven: FakeElevenLabs, caplog: pytest.LogCaptureFixture
) -> None:
    eleven.drop_after_chunks = 10  # 1.0 s of the sentence's ~2.8 s, then the connection is cut
    local = LocalVoice()
    with caplog.at_level(logging.WARNING, logger="aicallerd.engines"):
        audio, status = eleven_fallback(eleven, local, sentences=2)
    cloud_part = fake_audio(SENTENCE)[: 10 * CHUNK_BYTES]
    assert audio.startswith(cloud_part)
    # The words not yet heard (and one back), then the next sentence whole, all local.
    assert local.texts == ["table for two is booked for seven tonight.", SENTENCE]
    assert status.startswith("degraded: ")
    assert len(eleven.requests) == 1  # the rest of the reply did not go back to the cloud
    [line] = [r.getMessage() for r in caplog.records]
    assert "elevenlabs" in line and "local voice" in line
