"""The configuration schema: every key written once, with everything said about it.

Each section is a frozen dataclass whose fields are declared with `key()`: the default, the
value check, the one-line comment, the environment variable that overrides it, the systemd
credential that fills it when empty, whether it is a secret and whether a change needs a
restart. The loader, the environment table, the reload rules, the log filter and the shipped
etc/aicaller.conf (see `aicallerd.configfile`) are all derived from these fields, so they
cannot drift apart. A section's docstring is its comment in the file.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from aicallerd.configchecks import (
    E164,
    E164_EXPECTED,
    abs_path_or_empty,
    boolean,
    choice,
    listen,
    number,
    pattern,
    split_listen,
    stream_path,
    text,
    trigger_token,
    url,
)
from aicallerd.configengines import HTTP_URL, LlmConfig, SttConfig, TtsConfig
from aicallerd.configkeys import Key, Section, key, keys_of, section_comment

__all__ = [
    "COMMENTS",
    "ENV_VARS",
    "KEYS",
    "SCHEMA",
    "SECTIONS",
    "CallConfig",
    "Config",
    "Contact",
    "ControlConfig",
    "LlmConfig",
    "LogConfig",
    "ServerConfig",
    "StorageConfig",
    "SttConfig",
    "TtsConfig",
    "TurnConfig",
    "TwilioConfig",
]


@dataclass(frozen=True, repr=False)
class ServerConfig(Section):
    """The HTTP/WebSocket server Twilio talks to (through the TLS reverse proxy, see Caddyfile)."""

    listen: str = key(
        "127.0.0.1:5000",
        listen(),
        restart=True,
        comment='Address the daemon binds, host:port; IPv6 in brackets, e.g. "[::1]:5000".',
    )
    public_url: str = key(
        "https://aicaller.example.net",
        url(("https",), "an https:// URL without query or fragment"),
        env="PUBLIC_BASE_URL",
        comment="Public https:// base URL of the reverse proxy; Twilio signs requests to it.",
    )
    stream_path: str = key(
        "/ai_caller/stream",
        stream_path(),
        restart=True,
        comment="Path of the Media Streams WebSocket under public_url (wss://).",
    )
    node: str = key(
        "",
        pattern(r"([a-z0-9-]{1,32})?", '"" or a node name of a-z, 0-9 and -, at most 32'),
        env="AICALLER_NODE",
        restart=True,
        comment='This daemon\'s name behind a shared proxy: its stream is at stream_path + "/" '
        '+ node (docs/Caddyfile.cluster); "" = the only node.',
    )
    max_concurrent_calls: int = key(
        4,
        number(int, 1),
        comment="Calls answered at once; further callers hear [call] busy_message. 4 is what "
        "two cores hold with the embedded engines (README, Latency); raise it when the "
        "engines run elsewhere.",
    )
    shutdown_grace_seconds: float = key(
        30.0,
        number(float, 0, above=True),
        comment="On stop (SIGTERM), how long calls in progress may continue before they are cut.",
    )


@dataclass(frozen=True, repr=False)
class TwilioConfig(Section):
    """Twilio account. Secrets may also come from $CREDENTIALS_DIRECTORY (file named as noted)."""

    auth_token: str = key(
        "",
        text(),
        env="TWILIO_AUTH_TOKEN",
        credential="twilio_auth_token",
        secret=True,
        comment="Auth token: validates X-Twilio-Signature and authenticates REST calls.",
    )
    account_sid: str = key(
        "",
        pattern(r"(AC[0-9a-fA-F]{32})?", '"" or an account SID (AC and 32 hex digits)'),
        env="TWILIO_ACCOUNT_SID",
        credential="twilio_account_sid",
        comment="Account SID (AC + 32 hex digits), needed to place outbound calls.",
    )
    from_number: str = key(
        "",
        pattern(f"({E164.pattern})?", f'"" or {E164_EXPECTED}'),
        env="TWILIO_FROM_NUMBER",
        comment='Caller ID for outbound calls, E.164 like "+15551234567".',
    )
    api_base: str = key(
        "https://api.twilio.com",
        HTTP_URL,
        comment="Base URL of the Twilio REST API.",
    )
    call_trigger_token: str = key(
        "",
        trigger_token(),
        env="CALL_TRIGGER_TOKEN",
        credential="call_trigger_token",
        secret=True,
        comment="Bearer token for the HTTP call trigger, at least 32 characters; "
        "empty disables the trigger.",
    )


@dataclass(frozen=True, repr=False)
class CallConfig(Section):
    """What the assistant says outside the conversation, and call limits."""

    greeting: str = key(
        "Hello! You've reached the aicaller assistant. How can I help you today?",
        text(),
        comment="Spoken when a call connects; empty = wait for the caller to speak first.",
    )
    goodbye: str = key(
        "I haven't heard anything for a while, so I'll hang up now. Goodbye!",
        text(nonempty=True),
        comment="Spoken before hanging up because the caller went silent.",
    )
    busy_message: str = key(
        "Sorry, all of our lines are busy right now. Please call again later. Goodbye.",
        text(nonempty=True),
        comment="Spoken (then hang up) when max_concurrent_calls calls are already in progress.",
    )
    max_silence_seconds: float = key(
        30.0,
        number(float, 0, above=True),
        env="MAX_SILENCE_SECONDS",
        comment="Hang up after this long without caller speech.",
    )
    max_call_seconds: float = key(
        1800.0,
        number(float, 0, above=True),
        comment="Hard limit on a call's length.",
    )
    store_all_response_audio: bool = key(
        False,
        boolean(),
        env="STORE_ALL_RESPONSE_AUDIO",
        comment="Keep every synthesized reply as a WAV in the state directory.",
    )
    first_audio_seconds: float = key(
        4.0,
        number(float, 0, above=True),
        comment="Deadline from the end of the caller's turn to the reply's first audio; "
        "past it the caller hears the apology.",
    )
    reply_seconds: float = key(
        20.0,
        number(float, 0, above=True),
        comment="Deadline for generating a whole reply; what is ready by then is spoken.",
    )
    transcribe_seconds: float = key(
        5.0,
        number(float, 0, above=True),
        comment="Deadline for one transcription; past it that audio counts as unheard.",
    )
    farewell: str = key(
        "Thank you for calling. Goodbye!",
        text(nonempty=True),
        comment="Spoken before hanging up when the caller's turn ends with a goodbye (\"Okay, "
        'thanks. Bye!").',
    )
    hold_line: str = key(
        "Sure, take your time.",
        text(nonempty=True),
        comment='Said when the caller asks to wait ("hold on", "one moment"); the assistant '
        "then waits, with the silence limit tripled, until the caller speaks again.",
    )
    dtmf: str = key(
        "pass",
        choice("pass", "ignore"),
        comment='Key presses: "pass" = collected into a turn the model reads '
        '("the caller pressed 1 2 3"); "ignore" = only logged.',
    )
    dtmf_pause_seconds: float = key(
        1.5,
        number(float, 0, above=True),
        comment="Keys end their turn after this pause without a key (or at once on #).",
    )
    max_reply_words: int = key(
        30,
        number(int, 1),
        comment="A reply stops before the sentence that would take it past this many words "
        "(about ten seconds of speech).",
    )


@dataclass(frozen=True, repr=False)
class TurnConfig(Section):
    """Turn taking: when the caller is speaking, and when they are done."""

    vad: str = key(
        "silero",
        choice("silero", "rms"),
        restart=True,
        comment='Voice activity detector: "silero" (neural, robust to noise) '
        'or "rms" (energy threshold).',
    )
    vad_threshold: float = key(
        0.5,
        number(float, 0, 1),
        comment="Silero speech probability above which a frame counts as speech (0-1).",
    )
    min_speech_rms_threshold: float = key(
        200.0,
        number(float, 0, 32768),
        env="MIN_SPEECH_RMS_THRESHOLD",
        comment="RMS level (int16 scale) a frame needs to count as speech, with either vad.",
    )
    chunk_silence_seconds: float = key(
        0.12,
        number(float, 0, above=True),
        env="CHUNK_SILENCE_DURATION_SECONDS",
        comment="A pause this long: the phrase so far is transcribed and, with speculative, "
        "its reply prepared, held back until the turn ends (dropped if the caller goes on).",
    )
    done_speaking_silence_seconds: float = key(
        0.6,
        number(float, 0, above=True),
        env="DONE_SPEAKING_SILENCE_DURATION_SECONDS",
        comment="A pause this long ends the caller's turn (must exceed chunk_silence_seconds); "
        'with end_of_turn = "adaptive", when the words so far say neither way.',
    )
    end_of_turn: str = key(
        "adaptive",
        choice("adaptive", "fixed"),
        comment='"adaptive": the words heard at a pause choose the pause that ends the turn '
        "(complete question or sentence: complete_silence_seconds; a number, a name being "
        'spelled, a trailing "and" or comma: unfinished_silence_seconds); '
        '"fixed": done_speaking_silence_seconds always.',
    )
    complete_silence_seconds: float = key(
        0.5,
        number(float, 0, above=True),
        comment="End of turn after a complete question or sentence "
        "(must exceed chunk_silence_seconds).",
    )
    unfinished_silence_seconds: float = key(
        1.8,
        number(float, 0, above=True),
        comment="End of turn when what was said so far is clearly unfinished.",
    )
    min_chunk_seconds: float = key(
        0.5,
        number(float, 0, above=True),
        env="MINCHUNK_DURATION_SECONDS",
        comment="Chunks shorter than this are merged into the next one.",
    )
    max_chunk_seconds: float = key(
        10.0,
        number(float, 0, above=True),
        env="MAXCHUNK_DURATION_SECONDS",
        comment="A chunk is cut here even without a pause.",
    )
    lead_in_seconds: float = key(
        0.2,
        number(float, 0),
        env="LEAD_IN_DURATION_SECONDS",
        comment="Audio kept from before speech was detected, so first syllables are not clipped.",
    )
    barge_in: bool = key(
        True,
        boolean(),
        comment="Let the caller interrupt the assistant by speaking.",
    )
    barge_in_min_speech_seconds: float = key(
        0.2,
        number(float, 0),
        comment="Caller speech needed before it counts as an interruption "
        "(ignores coughs, clicks).",
    )
    barge_in_min_words: int = key(
        0,
        number(int, 0),
        comment="Words the interruption must contain once transcribed; "
        "0 = do not wait for the transcript.",
    )
    barge_in_ignore_backchannels: bool = key(
        True,
        boolean(),
        comment='An interruption that turns out to be only "mm-hm", "yeah", "okay" (or no words '
        "at all) is not answered: the assistant picks its reply up again at the sentence that "
        "was cut.",
    )
    speculative: bool = key(
        True,
        boolean(),
        comment="Start the reply at a short pause and keep it if the pause becomes the end of "
        "the turn.",
    )


@dataclass(frozen=True, repr=False)
class ControlConfig(Section):
    """The aicallerctl control socket."""

    socket: str = key(
        "",
        abs_path_or_empty('"" or an absolute path shorter than 108 bytes', max_bytes=108),
        restart=True,
        comment="Unix socket path; empty = $RUNTIME_DIRECTORY/control.sock, "
        "else /run/aicaller/control.sock.",
    )
    """Resolved by the loader: never empty."""


@dataclass(frozen=True, repr=False)
class StorageConfig(Section):
    """Where call history (SQLite) and stored audio live, and for how long."""

    state_dir: str = key(
        "",
        abs_path_or_empty(),
        restart=True,
        comment="State directory; empty = $STATE_DIRECTORY (systemd StateDirectory=), "
        "else /var/lib/aicaller.",
    )
    """Resolved by the loader: never empty."""
    retention_days: int = key(
        90,
        number(int, 0),
        env="CALL_RETENTION_DAYS",
        comment="Calls, transcripts and stored audio older than this many days are deleted; "
        "0 = keep forever.",
    )


@dataclass(frozen=True, repr=False)
class LogConfig(Section):
    """Logging (to the journal)."""

    level: str = key(
        "info",
        choice("debug", "info", "warning", "error"),
        env="LOG_LEVEL",
        comment="debug, info, warning or error.",
    )


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
        return split_listen(self.server.listen)[0]

    @property
    def listen_port(self) -> int:
        return split_listen(self.server.listen)[1]

    @property
    def stream_route(self) -> str:
        """The path this daemon serves its Media Stream on: behind a shared proxy the node's
        name is appended, so the proxy can send each stream to the node that issued its token."""
        node = self.server.node
        return f"{self.server.stream_path.rstrip('/')}/{node}" if node else self.server.stream_path

    @property
    def stream_url(self) -> str:
        """The wss:// URL Twilio opens for the Media Stream (and signs its upgrade for)."""
        return "wss://" + self.server.public_url.removeprefix("https://") + self.stream_route

    @property
    def voice_url(self) -> str:
        """The public URL of the /voice webhook (what Twilio signs)."""
        return self.server.public_url + "/voice"

    def contact(self, name: str) -> Contact | None:
        """Look a contact up by name, ignoring case."""
        return self.contacts.get(name.lower())


# --- derived tables -----------------------------------------------------------------------

SECTIONS: dict[str, type[Section]] = {
    name: hint
    for name, hint in typing.get_type_hints(Config).items()
    if isinstance(hint, type) and issubclass(hint, Section)
}
"""Section name -> its dataclass, in file order."""

KEYS: dict[str, dict[str, Key]] = {
    section: {k.name: k for k in keys_of(section, cls)} for section, cls in SECTIONS.items()
}
"""Section -> key name -> `Key`, in file order."""

SCHEMA: tuple[Key, ...] = tuple(k for keys in KEYS.values() for k in keys.values())
"""Every key, in file order."""

ENV_VARS: dict[str, str] = {k.spec.env: k.dotted for k in SCHEMA if k.spec.env}
"""Environment variable -> the key it overrides."""

COMMENTS: dict[str, str] = {section: section_comment(cls) for section, cls in SECTIONS.items()}
"""Section -> its comment in etc/aicaller.conf (the dataclass's docstring)."""
