"""Configuration: one TOML file, environment overrides, systemd credentials.

`load_config(path, environ)` reads the file (``path=None``: the embedded defaults only),
applies the environment overrides (the seed's variable names; they win over the file), reads
empty secrets from ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``), validates
everything and returns a frozen `Config`. Nothing else here does I/O, so a SIGHUP reload is just
another call. Every mistake is a `ConfigError` that names the file (or environment variable),
the key, what was expected and what was found, e.g.::

    /etc/aicaller/aicaller.conf: [server] listen: expected host:port, got '127.0.0.1'
    environment MAX_SILENCE_SECONDS: expected a number > 0, got 'abc'

Unknown sections and keys are errors (with a did-you-mean), so a typo never silently falls
back to a default. An integer is accepted where a number is expected, a string never is.
Environment booleans accept true/false/1/0/yes/no. An empty environment variable counts as
unset unless "" is a valid value for its key (``FORCE_LANGUAGE=`` means "detect the language",
``TWILIO_AUTH_TOKEN=`` clears the token), so ``MAX_TOKENS=`` in an env file is harmless.
Secrets (twilio.auth_token, twilio.call_trigger_token, tts.elevenlabs_api_key) are masked in
repr() and in error messages.

Schema (``section.key = default  [ENVIRONMENT_VARIABLE]``; etc/aicaller.conf documents each):

[server]
    listen = "127.0.0.1:5000"               host:port, IPv6 in brackets ("[::1]:5000")
    public_url = "https://aicaller.example.net"  [PUBLIC_BASE_URL]  https://, no query; the
                                            URL Twilio signs; trailing slash stripped
    stream_path = "/ai_caller/stream"       the Media Streams WebSocket path
    max_concurrent_calls = 4                >= 1; more calls hear busy_message
    shutdown_grace_seconds = 30.0           > 0; SIGTERM waits this long for calls to end
[twilio]   ("credential": when still empty, read from $CREDENTIALS_DIRECTORY/twilio_auth_token,
           twilio_account_sid, call_trigger_token, elevenlabs_api_key respectively)
    auth_token = ""                         [TWILIO_AUTH_TOKEN]   secret; credential
    account_sid = ""                        [TWILIO_ACCOUNT_SID]  "" or AC + 32 hex; credential
    from_number = ""                        [TWILIO_FROM_NUMBER]  "" or E.164
    api_base = "https://api.twilio.com"     http(s) URL of the REST API
    call_trigger_token = ""                 [CALL_TRIGGER_TOKEN]  secret; credential
[call]
    greeting = "Hello! You've reached ..."  spoken when a call connects ("" = say nothing)
    goodbye = "I haven't heard anything ..." spoken before hanging up on silence
    busy_message = "Sorry, all of our lines ..." spoken when max_concurrent_calls is reached
    max_silence_seconds = 30.0              [MAX_SILENCE_SECONDS] > 0
    max_call_seconds = 1800.0               > 0
    store_all_response_audio = false        [STORE_ALL_RESPONSE_AUDIO]
[turn]
    vad = "silero"                          silero | rms
    vad_threshold = 0.5                     0-1 (speech probability)
    min_speech_rms_threshold = 200.0        [MIN_SPEECH_RMS_THRESHOLD] int16 RMS, 0-32768
    chunk_silence_seconds = 0.3             [CHUNK_SILENCE_DURATION_SECONDS] > 0, < done_speaking
    done_speaking_silence_seconds = 0.6     [DONE_SPEAKING_SILENCE_DURATION_SECONDS] > 0
    min_chunk_seconds = 0.5                 [MINCHUNK_DURATION_SECONDS] > 0, <= max_chunk
    max_chunk_seconds = 10.0                [MAXCHUNK_DURATION_SECONDS] > 0
    lead_in_seconds = 0.2                   [LEAD_IN_DURATION_SECONDS] >= 0
    barge_in = true
    barge_in_min_speech_seconds = 0.2       >= 0
    barge_in_min_words = 0                  >= 0
    barge_in_ignore_backchannels = true
    speculative = true
[stt]
    use_local_whisper = true                [USE_LOCAL_WHISPER] must be true for now
    model = "bundled"                       [LOCAL_MODEL_NAME] "bundled" = tiny.en, or a name/path
    compute_type = "int8"                   [LOCAL_COMPUTE_TYPE] int8 | int8_float32 | float32 |
                                            float16 | int16 | default | auto
    beam_size = 1                           [LOCAL_BEAM_SIZE] 1-10
    language = "en"                         [FORCE_LANGUAGE] "" = detect
    cpu_threads = 0                         >= 0, 0 = auto
[llm]
    backend = "embedded"                    embedded | ollama | openai
    url = "http://127.0.0.1:11434"          [OLLAMA_URL] http(s); for ollama and openai
    model = "gemma3:1b"                     [MODEL_NAME] for ollama and openai
    embedded_model = "bundled"              GGUF path, "bundled" = SmolLM2-135M-Instruct
    max_tokens = 120                        [MAX_TOKENS] 1-4096
    temperature = 0.4                       [TEMPERATURE] 0-2
    history_turns = 4                       >= 0
    keep_alive = "30m"                      Ollama duration ("30m", "1h", "-1")
    timeout_seconds = 20.0                  > 0
    system_prompt = guardrail.SYSTEM_PROMPT
[tts]
    engine = "piper"                        piper | elevenlabs
    voice = "bundled"                       Piper .onnx path, "bundled" = en_US-joe-medium
    speed = 1.0                             0.5-2
    elevenlabs_api_key = ""                 [ELEVENLABS_API_KEY] secret; credential; required
                                            for engine = "elevenlabs"
    elevenlabs_voice_id = ""                [ELEVENLABS_VOICE_ID] required for elevenlabs
    elevenlabs_model = "eleven_flash_v2_5"
    elevenlabs_url = "https://api.elevenlabs.io"
[control]
    socket = ""                             "" = $RUNTIME_DIRECTORY/control.sock, else
                                            /run/aicaller/control.sock (resolved in Config)
[storage]
    state_dir = ""                          "" = $STATE_DIRECTORY, else /var/lib/aicaller
                                            (resolved in Config)
[log]
    level = "info"                          [LOG_LEVEL] debug | info | warning | error
[contacts]
    name = "+15551234567"                   or a table {number, prompt?, greeting?};
                                            name [a-z0-9_-]+, looked up case-insensitively
"""

import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from aicallerd.text.guardrail import SYSTEM_PROMPT

ENV_WHERE = "environment"
DEFAULTS_WHERE = "<defaults>"
_MASK = "<hidden>"


class ConfigError(Exception):
    """A configuration mistake, said in one line a person can act on.

    `file` is the config file path, "environment" or a credential file; `key` is the dotted key
    ("server.listen") or, for the environment, the variable name; `expected` and `got` say what
    was wrong (`got` is masked for secrets). `line` is set for TOML syntax errors.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str,
        key: str | None,
        expected: str,
        got: Any,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.file = file
        self.key = key
        self.expected = expected
        self.got = got
        self.line = line


class _Missing:
    def __repr__(self) -> str:
        return "nothing"


_MISSING = _Missing()


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _location(key: str, *, is_table: bool = False) -> str:
    """ "server.listen" -> "[server] listen"; a table name -> "[server]"."""
    if is_table:
        return f"[{key}]"
    if "." not in key:
        return key
    section, name = key.rsplit(".", 1)
    return f"[{section}] {name}"


def _error(
    where: str,
    key: str,
    expected: str,
    got: Any,
    *,
    hint: str = "",
    is_table: bool = False,
    secret: bool = False,
) -> ConfigError:
    shown = _MASK if secret and got not in ("", None) else got
    if where == ENV_WHERE:
        prefix = f"{ENV_WHERE} {key}"
    else:
        prefix = f"{where}: {_location(key, is_table=is_table)}"
    message = f"{prefix}: expected {expected}, got {_show(shown)}{hint}"
    return ConfigError(message, file=where, key=key, expected=expected, got=shown)


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- the sections -------------------------------------------------------------------------


class _Section:
    """Base for the section dataclasses: a repr that never shows a secret."""

    _SECRETS: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name in self._SECRETS and value:
                parts.append(f"{f.name}={_MASK!r}")
            else:
                parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class ServerConfig(_Section):
    listen: str
    public_url: str
    stream_path: str
    max_concurrent_calls: int
    shutdown_grace_seconds: float


@dataclass(frozen=True, repr=False)
class TwilioConfig(_Section):
    _SECRETS = frozenset({"auth_token", "call_trigger_token"})
    auth_token: str
    account_sid: str
    from_number: str
    api_base: str
    call_trigger_token: str


@dataclass(frozen=True, repr=False)
class CallConfig(_Section):
    greeting: str
    goodbye: str
    busy_message: str
    max_silence_seconds: float
    max_call_seconds: float
    store_all_response_audio: bool


@dataclass(frozen=True, repr=False)
class TurnConfig(_Section):
    vad: str
    vad_threshold: float
    min_speech_rms_threshold: float
    chunk_silence_seconds: float
    done_speaking_silence_seconds: float
    min_chunk_seconds: float
    max_chunk_seconds: float
    lead_in_seconds: float
    barge_in: bool
    barge_in_min_speech_seconds: float
    barge_in_min_words: int
    barge_in_ignore_backchannels: bool
    speculative: bool


@dataclass(frozen=True, repr=False)
class SttConfig(_Section):
    use_local_whisper: bool
    model: str
    compute_type: str
    beam_size: int
    language: str
    cpu_threads: int


@dataclass(frozen=True, repr=False)
class LlmConfig(_Section):
    backend: str
    url: str
    model: str
    embedded_model: str
    max_tokens: int
    temperature: float
    history_turns: int
    keep_alive: str
    timeout_seconds: float
    system_prompt: str


@dataclass(frozen=True, repr=False)
class TtsConfig(_Section):
    _SECRETS = frozenset({"elevenlabs_api_key"})
    engine: str
    voice: str
    speed: float
    elevenlabs_api_key: str
    elevenlabs_voice_id: str
    elevenlabs_model: str
    elevenlabs_url: str


@dataclass(frozen=True, repr=False)
class ControlConfig(_Section):
    socket: str
    """Resolved: never empty."""


@dataclass(frozen=True, repr=False)
class StorageConfig(_Section):
    state_dir: str
    """Resolved: never empty."""


@dataclass(frozen=True, repr=False)
class LogConfig(_Section):
    level: str


@dataclass(frozen=True)
class Contact:
    """A number `aicallerctl call NAME` can dial, with an optional per-contact prompt/greeting."""

    name: str
    number: str
    prompt: str = ""
    greeting: str = ""


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    twilio: TwilioConfig
    call: CallConfig
    turn: TurnConfig
    stt: SttConfig
    llm: LlmConfig
    tts: TtsConfig
    control: ControlConfig
    storage: StorageConfig
    log: LogConfig
    contacts: Mapping[str, Contact] = field(default_factory=lambda: MappingProxyType({}))
    """Keyed by the lowercased name."""
    source: str | None = field(default=None, compare=False)
    """The file this came from (None: embedded defaults only)."""

    @property
    def listen_host(self) -> str:
        """The host to bind, without IPv6 brackets."""
        return _split_listen(self.server.listen)[0]

    @property
    def listen_port(self) -> int:
        return _split_listen(self.server.listen)[1]

    @property
    def stream_url(self) -> str:
        """The wss:// URL Twilio opens for the Media Stream."""
        return "wss://" + self.server.public_url.removeprefix("https://") + self.server.stream_path

    @property
    def voice_url(self) -> str:
        """The public URL of the /voice webhook (what Twilio signs)."""
        return self.server.public_url + "/voice"

    def contact(self, name: str) -> Contact | None:
        """Look a contact up by name, ignoring case."""
        return self.contacts.get(name.lower())


# --- value checks -------------------------------------------------------------------------


class _Bad(Exception):
    """Raised by a check; the key's `expected` text is used unless a message is given."""

    def __init__(self, expected: str | None = None) -> None:
        super().__init__(expected)
        self.expected = expected


Check = Callable[[Any], Any]


@dataclass(frozen=True)
class _Key:
    section: str
    name: str
    default: Any
    kind: type
    expected: str
    check: Check | None = None
    env: str | None = None
    secret: bool = False
    credential: str | None = None

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


def _number(kind: type, lo: float | None = None, hi: float | None = None, *, above: bool = False):
    """A numeric key: expected text and range check in one place."""
    noun = "an integer" if kind is int else "a number"
    if lo is not None and hi is not None:
        expected = f"{noun} from {lo:g} to {hi:g}"
    elif lo is not None:
        expected = f"{noun} {'>' if above else '>='} {lo:g}"
    else:
        expected = noun

    def check(value: float) -> float:
        if not math.isfinite(value):
            raise _Bad()
        if lo is not None and (value <= lo if above else value < lo):
            raise _Bad()
        if hi is not None and value > hi:
            raise _Bad()
        return value

    return kind, expected, check


def _choice(*options: str):
    expected = "one of: " + ", ".join(options)

    def check(value: str) -> str:
        if value.lower() not in options:
            raise _Bad()
        return value.lower()

    return str, expected, check


def _pattern(regex: str, expected: str):
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise _Bad()
        return value

    return str, expected, check


def _text(nonempty: bool = False):
    def check(value: str) -> str:
        if nonempty and not value.strip():
            raise _Bad()
        return value

    return str, "a non-empty string" if nonempty else "a string", check


def _url(schemes: tuple[str, ...], expected: str):
    def check(value: str) -> str:
        value = value.strip()
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise _Bad() from None
        if parts.scheme not in schemes or not parts.hostname:
            raise _Bad()
        if parts.query or parts.fragment or "?" in value or "#" in value or " " in value:
            raise _Bad()
        return value.rstrip("/")

    return str, expected, check


_LISTEN = re.compile(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9._-]+):(\d{1,5})")


def _split_listen(value: str) -> tuple[str, int]:
    m = _LISTEN.fullmatch(value)
    if not m:
        raise _Bad()
    if m.group(1) is not None:
        try:
            ipaddress.IPv6Address(m.group(1))
        except ValueError:
            raise _Bad() from None
        host, port = m.group(1), int(m.group(2))
    else:
        host, port = m.group(3), int(m.group(4))
    if not 1 <= port <= 65535:
        raise _Bad("host:port with a port from 1 to 65535")
    return host, port


def _listen():
    def check(value: str) -> str:
        _split_listen(value.strip())
        return value.strip()

    return str, "host:port", check


def _stream_path():
    def check(value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", value) or "//" in value:
            raise _Bad()
        return value

    return str, "a URL path starting with /", check


def _abs_path_or_empty(expected: str):
    def check(value: str) -> str:
        if value and not value.startswith("/"):
            raise _Bad()
        return value

    return str, expected, check


def _socket_path():
    kind, expected, base = _abs_path_or_empty('"" or an absolute path shorter than 108 bytes')

    def check(value: str) -> str:
        value = base(value)
        if len(value.encode()) >= 108:
            raise _Bad()
        return value

    return kind, expected, check


def _language():
    def check(value: str) -> str:
        if not re.fullmatch(r"([A-Za-z]{2,3})?", value):
            raise _Bad()
        return value.lower()

    return str, '"" (detect) or a language code like "en"', check


def _local_whisper():
    def check(value: bool) -> bool:
        if not value:
            raise _Bad()
        return value

    return bool, "true: the OpenAI Whisper API is not supported yet", check


def _boolean():
    return bool, "true or false", None


E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_E164_EXPECTED = "a phone number in E.164 form (+ and 8-15 digits)"


def _key(section: str, name: str, default: Any, spec: tuple, **kw: Any) -> _Key:
    kind, expected, check = spec
    return _Key(section, name, default, kind, expected, check, **kw)


_SCHEMA: tuple[_Key, ...] = (
    # [server]
    _key("server", "listen", "127.0.0.1:5000", _listen()),
    _key(
        "server",
        "public_url",
        "https://aicaller.example.net",
        _url(("https",), "an https:// URL without query or fragment"),
        env="PUBLIC_BASE_URL",
    ),
    _key("server", "stream_path", "/ai_caller/stream", _stream_path()),
    _key("server", "max_concurrent_calls", 4, _number(int, 1)),
    _key("server", "shutdown_grace_seconds", 30.0, _number(float, 0, above=True)),
    # [twilio]
    _key(
        "twilio",
        "auth_token",
        "",
        _text(),
        env="TWILIO_AUTH_TOKEN",
        secret=True,
        credential="twilio_auth_token",
    ),
    _key(
        "twilio",
        "account_sid",
        "",
        _pattern(r"(AC[0-9a-fA-F]{32})?", '"" or an account SID (AC and 32 hex digits)'),
        env="TWILIO_ACCOUNT_SID",
        credential="twilio_account_sid",
    ),
    _key(
        "twilio",
        "from_number",
        "",
        _pattern(f"({E164.pattern})?", f'"" or {_E164_EXPECTED}'),
        env="TWILIO_FROM_NUMBER",
    ),
    _key(
        "twilio",
        "api_base",
        "https://api.twilio.com",
        _url(("http", "https"), "an http:// or https:// URL"),
    ),
    _key(
        "twilio",
        "call_trigger_token",
        "",
        _text(),
        env="CALL_TRIGGER_TOKEN",
        secret=True,
        credential="call_trigger_token",
    ),
    # [call]
    _key(
        "call",
        "greeting",
        "Hello! You've reached the aicaller assistant. How can I help you today?",
        _text(),
    ),
    _key(
        "call",
        "goodbye",
        "I haven't heard anything for a while, so I'll hang up now. Goodbye!",
        _text(nonempty=True),
    ),
    _key(
        "call",
        "busy_message",
        "Sorry, all of our lines are busy right now. Please call again later. Goodbye.",
        _text(nonempty=True),
    ),
    _key(
        "call",
        "max_silence_seconds",
        30.0,
        _number(float, 0, above=True),
        env="MAX_SILENCE_SECONDS",
    ),
    _key("call", "max_call_seconds", 1800.0, _number(float, 0, above=True)),
    _key("call", "store_all_response_audio", False, _boolean(), env="STORE_ALL_RESPONSE_AUDIO"),
    # [turn]
    _key("turn", "vad", "silero", _choice("silero", "rms")),
    _key("turn", "vad_threshold", 0.5, _number(float, 0, 1)),
    _key(
        "turn",
        "min_speech_rms_threshold",
        200.0,
        _number(float, 0, 32768),
        env="MIN_SPEECH_RMS_THRESHOLD",
    ),
    _key(
        "turn",
        "chunk_silence_seconds",
        0.3,
        _number(float, 0, above=True),
        env="CHUNK_SILENCE_DURATION_SECONDS",
    ),
    _key(
        "turn",
        "done_speaking_silence_seconds",
        0.6,
        _number(float, 0, above=True),
        env="DONE_SPEAKING_SILENCE_DURATION_SECONDS",
    ),
    _key(
        "turn",
        "min_chunk_seconds",
        0.5,
        _number(float, 0, above=True),
        env="MINCHUNK_DURATION_SECONDS",
    ),
    _key(
        "turn",
        "max_chunk_seconds",
        10.0,
        _number(float, 0, above=True),
        env="MAXCHUNK_DURATION_SECONDS",
    ),
    _key("turn", "lead_in_seconds", 0.2, _number(float, 0), env="LEAD_IN_DURATION_SECONDS"),
    _key("turn", "barge_in", True, _boolean()),
    _key("turn", "barge_in_min_speech_seconds", 0.2, _number(float, 0)),
    _key("turn", "barge_in_min_words", 0, _number(int, 0)),
    _key("turn", "barge_in_ignore_backchannels", True, _boolean()),
    _key("turn", "speculative", True, _boolean()),
    # [stt]
    _key("stt", "use_local_whisper", True, _local_whisper(), env="USE_LOCAL_WHISPER"),
    _key("stt", "model", "bundled", _text(nonempty=True), env="LOCAL_MODEL_NAME"),
    _key(
        "stt",
        "compute_type",
        "int8",
        _choice("int8", "int8_float32", "float32", "float16", "int16", "default", "auto"),
        env="LOCAL_COMPUTE_TYPE",
    ),
    _key("stt", "beam_size", 1, _number(int, 1, 10), env="LOCAL_BEAM_SIZE"),
    _key(
        "stt",
        "language",
        "en",
        _language(),
        env="FORCE_LANGUAGE",
    ),
    _key("stt", "cpu_threads", 0, _number(int, 0)),
    # [llm]
    _key("llm", "backend", "embedded", _choice("embedded", "ollama", "openai")),
    _key(
        "llm",
        "url",
        "http://127.0.0.1:11434",
        _url(("http", "https"), "an http:// or https:// URL"),
        env="OLLAMA_URL",
    ),
    _key("llm", "model", "gemma3:1b", _text(nonempty=True), env="MODEL_NAME"),
    _key("llm", "embedded_model", "bundled", _text(nonempty=True)),
    _key("llm", "max_tokens", 120, _number(int, 1, 4096), env="MAX_TOKENS"),
    _key("llm", "temperature", 0.4, _number(float, 0, 2), env="TEMPERATURE"),
    _key("llm", "history_turns", 4, _number(int, 0)),
    _key(
        "llm",
        "keep_alive",
        "30m",
        _pattern(
            r"-1|\d+|(\d+(\.\d+)?(ns|us|ms|s|m|h))+", 'an Ollama duration like "30m", "1h" or "-1"'
        ),
    ),
    _key("llm", "timeout_seconds", 20.0, _number(float, 0, above=True)),
    _key("llm", "system_prompt", SYSTEM_PROMPT, _text(nonempty=True)),
    # [tts]
    _key("tts", "engine", "piper", _choice("piper", "elevenlabs")),
    _key("tts", "voice", "bundled", _text(nonempty=True)),
    _key("tts", "speed", 1.0, _number(float, 0.5, 2)),
    _key(
        "tts",
        "elevenlabs_api_key",
        "",
        _text(),
        env="ELEVENLABS_API_KEY",
        secret=True,
        credential="elevenlabs_api_key",
    ),
    _key("tts", "elevenlabs_voice_id", "", _text(), env="ELEVENLABS_VOICE_ID"),
    _key("tts", "elevenlabs_model", "eleven_flash_v2_5", _text(nonempty=True)),
    _key(
        "tts",
        "elevenlabs_url",
        "https://api.elevenlabs.io",
        _url(("http", "https"), "an http:// or https:// URL"),
    ),
    # [control], [storage], [log]
    _key("control", "socket", "", _socket_path()),
    _key("storage", "state_dir", "", _abs_path_or_empty('"" or an absolute path')),
    _key("log", "level", "info", _choice("debug", "info", "warning", "error"), env="LOG_LEVEL"),
)

_SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "twilio": TwilioConfig,
    "call": CallConfig,
    "turn": TurnConfig,
    "stt": SttConfig,
    "llm": LlmConfig,
    "tts": TtsConfig,
    "control": ControlConfig,
    "storage": StorageConfig,
    "log": LogConfig,
}
_KEYS: dict[str, dict[str, _Key]] = {s: {} for s in _SECTIONS}
for _k in _SCHEMA:
    _KEYS[_k.section][_k.name] = _k
for _s, _cls in _SECTIONS.items():  # the dataclasses and the schema must not drift
    assert [f.name for f in fields(_cls)] == list(_KEYS[_s]), _s

ENV_VARS: dict[str, str] = {k.env: k.dotted for k in _SCHEMA if k.env}
"""Environment variable -> the key it overrides."""

_CONTACT_KEYS = ("number", "prompt", "greeting")
_CONTACT_NAME = re.compile(r"[a-z0-9_-]+", re.IGNORECASE)
_CONTACT_EXPECTED = f"{_E164_EXPECTED} or a table {{number, prompt, greeting}}"


# --- loading ------------------------------------------------------------------------------


def _typed(key: _Key, value: Any) -> Any:
    """Check a TOML value's type; int is fine where a float is expected, bool never is."""
    if key.kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif key.kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, key.kind):
        return value
    raise _Bad()


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _from_env(key: _Key, raw: str) -> Any:
    text = raw.strip()
    if key.kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise _Bad()
    if key.kind is int:
        if not re.fullmatch(r"[+-]?\d+", text):
            raise _Bad()
        return int(text)
    if key.kind is float:
        try:
            return float(text)
        except ValueError:
            raise _Bad() from None
    return text


def _accepts_empty(key: _Key) -> bool:
    """Whether "" is a meaningful value for a string key (FORCE_LANGUAGE= means "detect")."""
    if key.kind is not str:
        return False
    try:
        _validate(key, "")
    except _Bad:
        return False
    return True


def _validate(key: _Key, value: Any) -> Any:
    return key.check(value) if key.check else value


def _apply(key: _Key, convert: Callable[[], Any], where: str, name: str, raw: Any) -> Any:
    try:
        return _validate(key, convert())
    except _Bad as bad:
        raise _error(where, name, bad.expected or key.expected, raw, secret=key.secret) from None


def _read_toml(path: str | Path) -> dict[str, Any]:
    where = str(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"{where}: cannot read the configuration file: {reason}",
            file=where,
            key=None,
            expected="a readable file",
            got=reason,
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where}: expected UTF-8 text, got byte {exc.object[exc.start]:#04x} "
            f"at offset {exc.start}",
            file=where,
            key=None,
            expected="UTF-8 text",
            got=exc.reason,
        ) from None
    except tomllib.TOMLDecodeError as exc:
        text = str(exc)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", text)
        line = int(m.group(1)) if m else None
        what = text[: m.start()] if m else text
        at = f"line {m.group(1)}, column {m.group(2)}: " if m else ""
        raise ConfigError(
            f"{where}: {at}invalid TOML: {what}",
            file=where,
            key=None,
            expected="valid TOML",
            got=what,
            line=line,
        ) from None


def _parse_contacts(table: Any, where: str) -> dict[str, Contact]:
    if not isinstance(table, dict):
        raise _error(where, "contacts", "a table of name = number", table, is_table=True)
    contacts: dict[str, Contact] = {}
    for name, value in table.items():
        key = f"contacts.{name}"
        if not _CONTACT_NAME.fullmatch(name):
            raise _error(where, key, "a contact name of letters, digits, _ and -", name)
        if name.lower() in contacts:
            raise _error(where, key, "each contact name once (names ignore case)", name)
        if isinstance(value, str):
            number, prompt, greeting = value, "", ""
        elif isinstance(value, dict):
            for sub in value:
                if sub not in _CONTACT_KEYS:
                    raise _error(
                        where,
                        f"{key}.{sub}",
                        "one of: " + ", ".join(_CONTACT_KEYS),
                        sub,
                        hint=_did_you_mean(sub, list(_CONTACT_KEYS)),
                    )
            number = value.get("number", _MISSING)
            if not isinstance(number, str):
                raise _error(where, f"{key}.number", _E164_EXPECTED, number)
            prompt = value.get("prompt", "")
            greeting = value.get("greeting", "")
            for sub, text in (("prompt", prompt), ("greeting", greeting)):
                if not isinstance(text, str):
                    raise _error(where, f"{key}.{sub}", "a string", text)
        else:
            raise _error(where, key, _CONTACT_EXPECTED, value)
        if not E164.fullmatch(number):
            where_key = f"{key}.number" if isinstance(value, dict) else key
            raise _error(where, where_key, _E164_EXPECTED, number)
        contacts[name.lower()] = Contact(name.lower(), number, prompt, greeting)
    return contacts


def load_config(path: str | Path | None, environ: Mapping[str, str]) -> Config:
    """Read, override, validate; see the module docstring. Raises `ConfigError`."""
    file_where = str(path) if path is not None else DEFAULTS_WHERE
    values: dict[str, Any] = {k.dotted: k.default for k in _SCHEMA}
    origin: dict[str, str] = {k.dotted: file_where for k in _SCHEMA}
    contacts: dict[str, Contact] = {}

    if path is not None:
        doc = _read_toml(path)
        for section, table in doc.items():
            if section == "contacts":
                contacts = _parse_contacts(table, file_where)
                continue
            if section not in _KEYS:
                known = [*_KEYS, "contacts"]
                raise _error(
                    file_where,
                    section,
                    "one of: " + ", ".join(f"[{s}]" for s in known),
                    section,
                    hint=_did_you_mean(section, known),
                    is_table=True,
                )
            if not isinstance(table, dict):
                raise _error(file_where, section, "a [section] table", table, is_table=True)
            keys = _KEYS[section]
            for name, value in table.items():
                key = keys.get(name)
                if key is None:
                    raise _error(
                        file_where,
                        f"{section}.{name}",
                        "one of: " + ", ".join(keys),
                        name,
                        hint=_did_you_mean(name, list(keys)),
                    )
                values[key.dotted] = _apply(
                    key, lambda k=key, v=value: _typed(k, v), file_where, key.dotted, value
                )

    for key in _SCHEMA:
        if key.env is None or key.env not in environ:
            continue
        raw = environ[key.env]
        if not raw.strip() and not _accepts_empty(key):
            continue  # "MAX_TOKENS=" in an env file means "not set"
        values[key.dotted] = _apply(
            key, lambda k=key, r=raw: _from_env(k, r), ENV_WHERE, key.env, raw
        )
        origin[key.dotted] = ENV_WHERE

    cred_dir = environ.get("CREDENTIALS_DIRECTORY", "")
    if cred_dir:
        for key in _SCHEMA:
            if key.credential is None or values[key.dotted]:
                continue
            cred_path = os.path.join(cred_dir, key.credential)
            if not os.path.exists(cred_path):
                continue
            try:
                with open(cred_path, encoding="utf-8") as f:
                    raw = f.read().strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                raise ConfigError(
                    f"credential {cred_path}: cannot read: {reason}",
                    file=cred_path,
                    key=key.dotted,
                    expected="a readable UTF-8 file",
                    got=reason,
                ) from None
            values[key.dotted] = _apply(
                key, lambda v=raw: v, f"credential {cred_path}", key.dotted, raw
            )
            origin[key.dotted] = f"credential {cred_path}"

    _check_across(values, origin)

    if not values["control.socket"]:
        runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        values["control.socket"] = (
            os.path.join(runtime, "control.sock") if runtime else "/run/aicaller/control.sock"
        )
    if not values["storage.state_dir"]:
        values["storage.state_dir"] = (
            environ.get("STATE_DIRECTORY", "").split(":")[0] or "/var/lib/aicaller"
        )

    sections = {
        section: cls(**{name: values[f"{section}.{name}"] for name in _KEYS[section]})
        for section, cls in _SECTIONS.items()
    }
    return Config(
        **sections,
        contacts=MappingProxyType(contacts),
        source=str(path) if path is not None else None,
    )


def _check_across(values: dict[str, Any], origin: dict[str, str]) -> None:
    """Rules that involve two keys; the error names the first one where it was set."""

    def fail(dotted: str, expected: str) -> None:
        where = origin[dotted]
        name = next(k.env for k in _SCHEMA if k.dotted == dotted) if where == ENV_WHERE else dotted
        secret = any(k.secret for k in _SCHEMA if k.dotted == dotted)
        raise _error(where, name, expected, values[dotted], secret=secret)

    done = values["turn.done_speaking_silence_seconds"]
    if values["turn.chunk_silence_seconds"] >= done:
        fail(
            "turn.chunk_silence_seconds",
            f"less than [turn] done_speaking_silence_seconds ({done:g})",
        )
    max_chunk = values["turn.max_chunk_seconds"]
    if values["turn.min_chunk_seconds"] > max_chunk:
        fail("turn.min_chunk_seconds", f"at most [turn] max_chunk_seconds ({max_chunk:g})")
    if values["tts.engine"] == "elevenlabs":
        if not values["tts.elevenlabs_api_key"]:
            fail(
                "tts.elevenlabs_api_key",
                'an API key when [tts] engine = "elevenlabs" (or set ELEVENLABS_API_KEY, '
                "or the elevenlabs_api_key credential)",
            )
        if not values["tts.elevenlabs_voice_id"]:
            fail(
                "tts.elevenlabs_voice_id",
                'a voice id when [tts] engine = "elevenlabs" (or set ELEVENLABS_VOICE_ID)',
            )
