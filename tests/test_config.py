# ruff: noqa: E501 - the error-message tables are the point; one case per line reads best
import dataclasses
import tomllib
from pathlib import Path

import pytest

from aicallerd.config import ENV_VARS, Config, ConfigError, Contact, load_config
from aicallerd.configfile import render_default_config
from aicallerd.configschema import SCHEMA
from aicallerd.text.guardrail import SYSTEM_PROMPT

ETC = Path(__file__).resolve().parent.parent / "etc" / "aicaller.conf"
SID = "AC" + "0123456789abcdef" * 2
TRIGGER = "trigger-" + "0123456789abcdef" * 2  # 40 characters


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aicaller.conf"
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ or {})
    return info.value


# --- defaults and the documented file ---------------------------------------------------------


def test_defaults() -> None:
    c = load_config(None, {})
    assert c.server.listen == "127.0.0.1:5000"
    assert c.server.public_url == "https://aicaller.example.net"
    assert c.server.stream_path == "/ai_caller/stream"
    assert c.server.max_concurrent_calls == 4
    assert c.server.shutdown_grace_seconds == 30.0
    assert c.twilio.auth_token == ""
    assert c.twilio.api_base == "https://api.twilio.com"
    assert c.call.max_silence_seconds == 30.0
    assert c.call.max_call_seconds == 1800.0
    assert c.call.store_all_response_audio is False
    assert c.call.greeting.startswith("Hello! You've reached")
    assert c.turn.vad == "silero"
    assert c.turn.chunk_silence_seconds == 0.12
    assert c.turn.done_speaking_silence_seconds == 0.6
    assert c.turn.barge_in is True and c.turn.speculative is True
    assert c.turn.barge_in_min_words == 0
    assert c.stt.use_local_whisper is True
    assert (c.stt.model, c.stt.compute_type, c.stt.beam_size, c.stt.language) == (
        "bundled",
        "int8",
        1,
        "en",
    )
    assert c.llm.backend == "embedded"
    assert c.llm.url == "http://127.0.0.1:11434"
    assert c.llm.model == "gemma3:1b"
    assert (c.llm.max_tokens, c.llm.temperature, c.llm.history_turns) == (120, 0.4, 4)
    assert c.llm.keep_alive == "30m"
    assert c.llm.system_prompt == SYSTEM_PROMPT
    assert (c.tts.engine, c.tts.voice, c.tts.speed) == ("piper", "bundled", 1.0)
    assert c.tts.elevenlabs_model == "eleven_flash_v2_5"
    assert c.control.socket == "/run/aicaller/control.sock"
    assert c.storage.state_dir == "/var/lib/aicaller"
    assert c.storage.retention_days == 90
    assert c.log.level == "info"
    assert dict(c.contacts) == {}
    assert c.source is None


def test_helpers() -> None:
    c = load_config(None, {})
    assert (c.listen_host, c.listen_port) == ("127.0.0.1", 5000)
    assert c.stream_url == "wss://aicaller.example.net/ai_caller/stream"
    assert c.voice_url == "https://aicaller.example.net/voice"


def test_etc_file_is_the_rendered_schema() -> None:
    assert ETC.read_text(encoding="utf-8") == render_default_config(), (
        "etc/aicaller.conf is generated: python -m aicallerd.configfile > etc/aicaller.conf"
    )


def test_etc_file_is_exactly_the_defaults() -> None:
    from_file = load_config(ETC, {})
    assert from_file == load_config(None, {})
    assert from_file.source == str(ETC)
    with open(ETC, "rb") as f:
        doc = tomllib.load(f)
    assert {k.dotted: doc[k.section][k.name] for k in SCHEMA} == {
        k.dotted: k.default for k in SCHEMA
    }


def test_etc_file_lists_every_key() -> None:
    with open(ETC, "rb") as f:
        doc = tomllib.load(f)
    listed = {f"{s}.{k}" for s, table in doc.items() if s != "contacts" for k in table}
    c = load_config(None, {})
    known = {
        f"{f.name}.{sub.name}"
        for f in dataclasses.fields(c)
        if f.name not in ("contacts", "source")
        for sub in dataclasses.fields(getattr(c, f.name))
    }
    assert listed == known
    assert doc["contacts"] == {}


def test_etc_file_comments_every_key() -> None:
    lines = ETC.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith(("#", "[", " ")) and "=" in line:
            if lines[i - 1].startswith("# ") or line.startswith(("You are", "spoken")):
                continue
            pytest.fail(f"no comment above: {line}")


# --- the environment ------------------------------------------------------------------------

ENV_CASES = [
    (
        "PUBLIC_BASE_URL",
        "https://calls.example.org/",
        "server.public_url",
        "https://calls.example.org",
    ),
    ("AICALLER_NODE", "node-2", "server.node", "node-2"),
    ("TWILIO_AUTH_TOKEN", "tok", "twilio.auth_token", "tok"),
    ("TWILIO_ACCOUNT_SID", SID, "twilio.account_sid", SID),
    ("TWILIO_FROM_NUMBER", "+15551234567", "twilio.from_number", "+15551234567"),
    ("CALL_TRIGGER_TOKEN", TRIGGER, "twilio.call_trigger_token", TRIGGER),
    ("CALL_TRIGGER_TOKEN", "", "twilio.call_trigger_token", ""),
    ("MAX_SILENCE_SECONDS", "12.5", "call.max_silence_seconds", 12.5),
    ("STORE_ALL_RESPONSE_AUDIO", "yes", "call.store_all_response_audio", True),
    ("MIN_SPEECH_RMS_THRESHOLD", "350", "turn.min_speech_rms_threshold", 350.0),
    ("CHUNK_SILENCE_DURATION_SECONDS", "0.25", "turn.chunk_silence_seconds", 0.25),
    ("DONE_SPEAKING_SILENCE_DURATION_SECONDS", "0.9", "turn.done_speaking_silence_seconds", 0.9),
    ("MINCHUNK_DURATION_SECONDS", "0.7", "turn.min_chunk_seconds", 0.7),
    ("MAXCHUNK_DURATION_SECONDS", "8", "turn.max_chunk_seconds", 8.0),
    ("LEAD_IN_DURATION_SECONDS", "0", "turn.lead_in_seconds", 0.0),
    ("USE_LOCAL_WHISPER", "1", "stt.use_local_whisper", True),
    ("USE_LOCAL_WHISPER", "false", "stt.use_local_whisper", False),
    ("OPENAI_STT_URL", "http://10.0.0.3:8000/", "stt.api_url", "http://10.0.0.3:8000"),
    (
        "OPENAI_STT_MODEL",
        "Systran/faster-whisper-small",
        "stt.api_model",
        "Systran/faster-whisper-small",
    ),
    ("OPENAI_API_KEY", "sk-test", "stt.api_key", "sk-test"),
    ("LLM_BACKEND", "OpenAI", "llm.backend", "openai"),
    ("LLM_API_KEY", "vllm-key", "llm.api_key", "vllm-key"),
    ("TTS_ENGINE", "openai", "tts.engine", "openai"),
    ("ELEVENLABS_MODEL", "eleven_turbo_v2_5", "tts.elevenlabs_model", "eleven_turbo_v2_5"),
    ("ELEVEN_STREAMING", "false", "tts.elevenlabs_streaming", False),
    ("ELEVENLABS_SPEED", "1.1", "tts.elevenlabs_speed", 1.1),
    ("OPENAI_TTS_URL", "http://kokoro:8880", "tts.api_url", "http://kokoro:8880"),
    ("OPENAI_TTS_MODEL", "tts-1", "tts.api_model", "tts-1"),
    ("OPENAI_TTS_VOICE", "alloy", "tts.api_voice", "alloy"),
    ("OPENAI_TTS_API_KEY", "sk-tts", "tts.api_key", "sk-tts"),
    ("LOCAL_MODEL_NAME", "/srv/models/small.en", "stt.model", "/srv/models/small.en"),
    ("LOCAL_COMPUTE_TYPE", "float32", "stt.compute_type", "float32"),
    ("LOCAL_BEAM_SIZE", "5", "stt.beam_size", 5),
    ("FORCE_LANGUAGE", "de", "stt.language", "de"),
    ("FORCE_LANGUAGE", "", "stt.language", ""),
    ("OLLAMA_URL", "http://10.0.0.2:11434/", "llm.url", "http://10.0.0.2:11434"),
    ("OLLAMA_URL", "http://localhost:11434/api/chat", "llm.url", "http://localhost:11434/api/chat"),
    ("MODEL_NAME", "qwen2.5:0.5b", "llm.model", "qwen2.5:0.5b"),
    ("MAX_TOKENS", "200", "llm.max_tokens", 200),
    ("TEMPERATURE", "0", "llm.temperature", 0.0),
    ("ELEVENLABS_API_KEY", "key", "tts.elevenlabs_api_key", "key"),
    ("ELEVENLABS_VOICE_ID", "voice", "tts.elevenlabs_voice_id", "voice"),
    ("CALL_RETENTION_DAYS", "0", "storage.retention_days", 0),
    ("LOG_LEVEL", "DEBUG", "log.level", "debug"),
]


def get(c: Config, dotted: str) -> object:
    section, name = dotted.split(".")
    return getattr(getattr(c, section), name)


@pytest.mark.parametrize(("var", "raw", "dotted", "value"), ENV_CASES)
def test_env_override(var: str, raw: str, dotted: str, value: object) -> None:
    assert ENV_VARS[var] == dotted
    assert get(load_config(None, {var: raw}), dotted) == value


def test_every_env_var_is_tested() -> None:
    assert {case[0] for case in ENV_CASES} == set(ENV_VARS)


def test_env_wins_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[call]\nmax_silence_seconds = 10\n[llm]\nmodel = 'from-file'\n")
    c = load_config(path, {"MAX_SILENCE_SECONDS": "20", "MODEL_NAME": "from-env"})
    assert c.call.max_silence_seconds == 20.0
    assert c.llm.model == "from-env"
    assert load_config(path, {}).call.max_silence_seconds == 10.0


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("YES", True),
        (" false ", False),
        ("0", False),
        ("no", False),
    ],
)
def test_env_booleans(raw: str, value: bool) -> None:
    assert (
        load_config(None, {"STORE_ALL_RESPONSE_AUDIO": raw}).call.store_all_response_audio is value
    )


def test_empty_env_is_unset_for_numbers() -> None:
    c = load_config(None, {"MAX_TOKENS": "", "STORE_ALL_RESPONSE_AUDIO": " ", "LOG_LEVEL": ""})
    assert c == load_config(None, {})


@pytest.mark.parametrize(
    ("var", "raw", "message"),
    [
        ("MAX_SILENCE_SECONDS", "abc", "environment MAX_SILENCE_SECONDS: expected a number > 0, got 'abc'"),
        ("MAX_SILENCE_SECONDS", "0", "environment MAX_SILENCE_SECONDS: expected a number > 0, got '0'"),
        ("MAX_SILENCE_SECONDS", "nan", "environment MAX_SILENCE_SECONDS: expected a number > 0, got 'nan'"),
        ("STORE_ALL_RESPONSE_AUDIO", "maybe", "environment STORE_ALL_RESPONSE_AUDIO: expected true or false, got 'maybe'"),
        ("LOCAL_BEAM_SIZE", "1.5", "environment LOCAL_BEAM_SIZE: expected an integer from 1 to 10, got '1.5'"),
        ("LOCAL_BEAM_SIZE", "11", "environment LOCAL_BEAM_SIZE: expected an integer from 1 to 10, got '11'"),
        ("TEMPERATURE", "2.5", "environment TEMPERATURE: expected a number from 0 to 2, got '2.5'"),
        ("PUBLIC_BASE_URL", "http://x.example", "environment PUBLIC_BASE_URL: expected an https:// URL without query or fragment, got 'http://x.example'"),
        ("PUBLIC_BASE_URL", "https://x.example/?a=1", "environment PUBLIC_BASE_URL: expected an https:// URL without query or fragment, got 'https://x.example/?a=1'"),
        ("TWILIO_FROM_NUMBER", "555-1234", "environment TWILIO_FROM_NUMBER: expected \"\" or a phone number in E.164 form (+ and 8-15 digits), got '555-1234'"),
        ("TWILIO_ACCOUNT_SID", "AC123", "environment TWILIO_ACCOUNT_SID: expected \"\" or an account SID (AC and 32 hex digits), got 'AC123'"),
        ("LOCAL_COMPUTE_TYPE", "int4", "environment LOCAL_COMPUTE_TYPE: expected one of: int8, int8_float32, float32, float16, int16, default, auto, got 'int4'"),
        ("USE_LOCAL_WHISPER", "maybe", "environment USE_LOCAL_WHISPER: expected true or false, got 'maybe'"),
        ("ELEVENLABS_SPEED", "1.5", "environment ELEVENLABS_SPEED: expected a number from 0.7 to 1.2, got '1.5'"),
        ("LLM_BACKEND", "vllm", "environment LLM_BACKEND: expected one of: embedded, ollama, openai, got 'vllm'"),
        ("OPENAI_STT_URL", "api.openai.com", "environment OPENAI_STT_URL: expected an http:// or https:// URL, got 'api.openai.com'"),
        ("LOG_LEVEL", "verbose", "environment LOG_LEVEL: expected one of: debug, info, warning, error, got 'verbose'"),
        ("OLLAMA_URL", "ftp://x", "environment OLLAMA_URL: expected an http:// or https:// URL, got 'ftp://x'"),
        ("CHUNK_SILENCE_DURATION_SECONDS", "0.6", "environment CHUNK_SILENCE_DURATION_SECONDS: expected less than [turn] done_speaking_silence_seconds (0.6), got 0.6"),
        ("MINCHUNK_DURATION_SECONDS", "11", "environment MINCHUNK_DURATION_SECONDS: expected at most [turn] max_chunk_seconds (10), got 11.0"),
        ("CALL_TRIGGER_TOKEN", "x" * 31, "environment CALL_TRIGGER_TOKEN: expected \"\" (trigger off) or a token of at least 32 characters, got '<hidden>'"),
        ("CALL_RETENTION_DAYS", "-1", "environment CALL_RETENTION_DAYS: expected an integer >= 0, got '-1'"),
    ],
)  # fmt: skip
def test_bad_env_value(var: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {var: raw})
    assert str(info.value) == message
    assert info.value.file == "environment"
    assert info.value.key == var


def test_runtime_and_state_directories() -> None:
    c = load_config(None, {"RUNTIME_DIRECTORY": "/run/aicaller2", "STATE_DIRECTORY": "/var/lib/x"})
    assert c.control.socket == "/run/aicaller2/control.sock"
    assert c.storage.state_dir == "/var/lib/x"


def test_explicit_socket_and_state_dir_win(tmp_path: Path) -> None:
    path = write(tmp_path, '[control]\nsocket = "/tmp/a.sock"\n[storage]\nstate_dir = "/srv/ai"\n')
    c = load_config(path, {"RUNTIME_DIRECTORY": "/run/x", "STATE_DIRECTORY": "/var/lib/x"})
    assert (c.control.socket, c.storage.state_dir) == ("/tmp/a.sock", "/srv/ai")


# --- the file: values, types, ranges ---------------------------------------------------------


def test_file_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[server]
listen = "[::1]:8080"
public_url = "https://calls.example.org/prefix/"
max_concurrent_calls = 1
shutdown_grace_seconds = 5
[twilio]
account_sid = "{SID}"
from_number = "+442071234567"
[turn]
vad = "rms"
vad_threshold = 1
barge_in = false
[llm]
backend = "ollama"
keep_alive = "-1"
[tts]
engine = "elevenlabs"
elevenlabs_api_key = "k"
elevenlabs_voice_id = "v"
""".replace("{SID}", SID),
    )
    c = load_config(path, {})
    assert (c.listen_host, c.listen_port) == ("::1", 8080)
    assert c.server.public_url == "https://calls.example.org/prefix"
    assert c.stream_url == "wss://calls.example.org/prefix/ai_caller/stream"
    assert c.voice_url == "https://calls.example.org/prefix/voice"
    assert c.server.shutdown_grace_seconds == 5.0
    assert isinstance(c.server.shutdown_grace_seconds, float)
    assert c.twilio.account_sid == SID
    assert c.turn.vad == "rms" and c.turn.vad_threshold == 1.0 and c.turn.barge_in is False
    assert c.llm.backend == "ollama" and c.llm.keep_alive == "-1"
    assert c.tts.engine == "elevenlabs"


F = "{file}"
BAD_FILES = [
    ('[server]\nlisten = "127.0.0.1"\n', f"{F}: [server] listen: expected host:port, got '127.0.0.1'"),
    ('[server]\nlisten = "localhost:0"\n', f"{F}: [server] listen: expected host:port with a port from 1 to 65535, got 'localhost:0'"),
    ('[server]\nlisten = "[::zz]:80"\n', f"{F}: [server] listen: expected host:port, got '[::zz]:80'"),
    ('[server]\nlisten = 5000\n', f"{F}: [server] listen: expected host:port, got 5000"),
    ('[server]\npublic_url = "http://a.example"\n', f"{F}: [server] public_url: expected an https:// URL without query or fragment, got 'http://a.example'"),
    ('[server]\nstream_path = "stream"\n', f"{F}: [server] stream_path: expected a URL path starting with /, got 'stream'"),
    ('[server]\nmax_concurrent_calls = 0\n', f"{F}: [server] max_concurrent_calls: expected an integer >= 1, got 0"),
    ('[server]\nmax_concurrent_calls = 2.0\n', f"{F}: [server] max_concurrent_calls: expected an integer >= 1, got 2.0"),
    ('[server]\nshutdown_grace_seconds = -1\n', f"{F}: [server] shutdown_grace_seconds: expected a number > 0, got -1"),
    ('[call]\nmax_silence_seconds = "30"\n', f"{F}: [call] max_silence_seconds: expected a number > 0, got '30'"),
    ('[call]\nmax_silence_seconds = true\n', f"{F}: [call] max_silence_seconds: expected a number > 0, got true"),
    ('[call]\nmax_call_seconds = inf\n', f"{F}: [call] max_call_seconds: expected a number > 0, got inf"),
    ('[call]\nstore_all_response_audio = "yes"\n', f"{F}: [call] store_all_response_audio: expected true or false, got 'yes'"),
    ('[call]\ngoodbye = ""\n', f"{F}: [call] goodbye: expected a non-empty string, got ''"),
    ('[call]\ngreeting = 1\n', f"{F}: [call] greeting: expected a string, got 1"),
    ('[turn]\nvad = "webrtc"\n', f"{F}: [turn] vad: expected one of: silero, rms, got 'webrtc'"),
    ('[turn]\nvad_threshold = 1.5\n', f"{F}: [turn] vad_threshold: expected a number from 0 to 1, got 1.5"),
    ('[turn]\nbarge_in_min_words = -1\n', f"{F}: [turn] barge_in_min_words: expected an integer >= 0, got -1"),
    ('[turn]\nchunk_silence_seconds = 0.8\n', f"{F}: [turn] chunk_silence_seconds: expected less than [turn] done_speaking_silence_seconds (0.6), got 0.8"),
    ('[turn]\nmin_chunk_seconds = 3.0\nmax_chunk_seconds = 2.0\n', f"{F}: [turn] min_chunk_seconds: expected at most [turn] max_chunk_seconds (2), got 3.0"),
    ('[stt]\napi_timeout_seconds = 0\n', f"{F}: [stt] api_timeout_seconds: expected a number > 0, got 0"),
    ('[tts]\nengine = "kokoro"\n', f"{F}: [tts] engine: expected one of: piper, elevenlabs, openai, got 'kokoro'"),
    ('[tts]\nelevenlabs_transport = "grpc"\n', f"{F}: [tts] elevenlabs_transport: expected one of: http, websocket, got 'grpc'"),
    ('[tts]\napi_format = "mp3"\n', f"{F}: [tts] api_format: expected one of: pcm, wav, got 'mp3'"),
    ('[stt]\nbeam_size = 0\n', f"{F}: [stt] beam_size: expected an integer from 1 to 10, got 0"),
    ('[stt]\nlanguage = "english"\n', f"{F}: [stt] language: expected \"\" (detect) or a language code like \"en\", got 'english'"),
    ('[llm]\nbackend = "vllm"\n', f"{F}: [llm] backend: expected one of: embedded, ollama, openai, got 'vllm'"),
    ('[llm]\ntemperature = 3\n', f"{F}: [llm] temperature: expected a number from 0 to 2, got 3"),
    ('[llm]\nmax_tokens = 0\n', f"{F}: [llm] max_tokens: expected an integer from 1 to 4096, got 0"),
    ('[llm]\nkeep_alive = "soon"\n', f"{F}: [llm] keep_alive: expected an Ollama duration like \"30m\", \"1h\" or \"-1\", got 'soon'"),
    ('[llm]\nurl = "127.0.0.1:11434"\n', f"{F}: [llm] url: expected an http:// or https:// URL, got '127.0.0.1:11434'"),
    ('[tts]\nspeed = 3\n', f"{F}: [tts] speed: expected a number from 0.5 to 2, got 3"),
    ('[tts]\nengine = "elevenlabs"\nelevenlabs_api_key = "k"\n', f"{F}: [tts] elevenlabs_voice_id: expected a voice id when [tts] engine = \"elevenlabs\" (or set ELEVENLABS_VOICE_ID), got ''"),
    ('[control]\nsocket = "control.sock"\n', f"{F}: [control] socket: expected \"\" or an absolute path shorter than 108 bytes, got 'control.sock'"),
    ('[storage]\nstate_dir = "state"\n', f"{F}: [storage] state_dir: expected \"\" or an absolute path, got 'state'"),
    ('[storage]\nretention_days = 1.5\n', f"{F}: [storage] retention_days: expected an integer >= 0, got 1.5"),
    ('[twilio]\ncall_trigger_token = "short"\n', f"{F}: [twilio] call_trigger_token: expected \"\" (trigger off) or a token of at least 32 characters, got '<hidden>'"),
    ('[log]\nlevel = "trace"\n', f"{F}: [log] level: expected one of: debug, info, warning, error, got 'trace'"),
    # unknown sections and keys, with a suggestion
    ('[server]\nlisen = "127.0.0.1:5000"\n', f"{F}: [server] lisen: expected one of: listen, public_url, stream_path, node, max_concurrent_calls, shutdown_grace_seconds, got 'lisen' (did you mean 'listen'?)"),
    ('[call]\nmax_silence = 3\n', f"{F}: [call] max_silence: expected one of: greeting, goodbye, busy_message, max_silence_seconds, max_call_seconds, store_all_response_audio, first_audio_seconds, reply_seconds, transcribe_seconds, farewell, hold_line, dtmf, dtmf_pause_seconds, max_reply_words, got 'max_silence' (did you mean 'max_silence_seconds'?)"),
    ('[stt]\nxyzzy = 3\n', f"{F}: [stt] xyzzy: expected one of: use_local_whisper, api_url, api_model, api_key, api_timeout_seconds, model, compute_type, beam_size, language, cpu_threads, got 'xyzzy'"),
    ('[servr]\n', f"{F}: [servr]: expected one of: [server], [twilio], [call], [turn], [stt], [llm], [tts], [control], [storage], [log], [contacts], got 'servr' (did you mean 'server'?)"),
    ('listen = "127.0.0.1:5000"\n', f"{F}: [listen]: expected one of: [server], [twilio], [call], [turn], [stt], [llm], [tts], [control], [storage], [log], [contacts], got 'listen'"),
    ('server = 1\n', f"{F}: [server]: expected a [section] table, got 1"),
    # contacts
    ('[contacts]\nmom = "5551234"\n', f"{F}: [contacts] mom: expected a phone number in E.164 form (+ and 8-15 digits), got '5551234'"),
    ('[contacts]\n"my mom" = "+15551234567"\n', f"{F}: [contacts] my mom: expected a contact name of letters, digits, _ and -, got 'my mom'"),
    ('[contacts]\nmom = 15551234567\n', f"{F}: [contacts] mom: expected a phone number in E.164 form (+ and 8-15 digits) or a table {{number, prompt, greeting}}, got 15551234567"),
    ('[contacts]\nMom = "+15551234567"\nmom = "+15551234568"\n', f"{F}: [contacts] mom: expected each contact name once (names ignore case), got 'mom'"),
    ('[contacts.dad]\nnumbr = "+15551234567"\n', f"{F}: [contacts.dad] numbr: expected one of: number, prompt, greeting, got 'numbr' (did you mean 'number'?)"),
    ('[contacts.dad]\nprompt = "x"\n', f"{F}: [contacts.dad] number: expected a phone number in E.164 form (+ and 8-15 digits), got nothing"),
    ('[contacts.dad]\nnumber = "+1555"\n', f"{F}: [contacts.dad] number: expected a phone number in E.164 form (+ and 8-15 digits), got '+1555'"),
    ('[contacts.dad]\nnumber = "+15551234567"\ngreeting = false\n', f"{F}: [contacts.dad] greeting: expected a string, got false"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_file(tmp_path: Path, text: str, message: str) -> None:
    err = error_for(tmp_path, text)
    path = str(tmp_path / "aicaller.conf")
    assert str(err) == message.replace("{file}", path)
    assert err.file == path


def test_error_attributes(tmp_path: Path) -> None:
    err = error_for(tmp_path, '[server]\nlisten = "127.0.0.1"\n')
    assert (err.key, err.expected, err.got) == ("server.listen", "host:port", "127.0.0.1")


def test_toml_syntax_error(tmp_path: Path) -> None:
    err = error_for(tmp_path, '[server]\nlisten = "127.0.0.1:5000"\npublic_url =\n')
    path = str(tmp_path / "aicaller.conf")
    assert str(err) == f"{path}: line 3, column 13: invalid TOML: Invalid value"
    assert err.line == 3
    assert err.file == path
    assert err.expected == "valid TOML"


def test_toml_duplicate_key(tmp_path: Path) -> None:
    err = error_for(tmp_path, "[llm]\nmax_tokens = 1\nmax_tokens = 2\n")
    assert err.line == 3
    assert "invalid TOML" in str(err)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "aicaller.conf"
    path.write_bytes(b'[call]\ngreeting = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(info.value).startswith(f"{path}: expected UTF-8 text")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.conf"
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert (
        str(info.value) == f"{path}: cannot read the configuration file: No such file or directory"
    )
    assert info.value.file == str(path)


def test_int_accepted_for_float(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, "[llm]\ntemperature = 1\n"), {})
    assert c.llm.temperature == 1.0 and isinstance(c.llm.temperature, float)


def test_enum_case_is_normalized(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, '[turn]\nvad = "RMS"\n[stt]\nlanguage = "DE"\n'), {})
    assert (c.turn.vad, c.stt.language) == ("rms", "de")


def test_empty_file_is_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), {}) == load_config(None, {})


def test_elevenlabs_needs_key_and_voice_id(tmp_path: Path) -> None:
    path = write(tmp_path, '[tts]\nengine = "elevenlabs"\n')
    err = error_for(tmp_path, '[tts]\nengine = "elevenlabs"\n')
    assert err.key == "tts.elevenlabs_api_key"
    assert "ELEVENLABS_API_KEY" in str(err)
    c = load_config(path, {"ELEVENLABS_API_KEY": "k", "ELEVENLABS_VOICE_ID": "v"})
    assert (c.tts.elevenlabs_api_key, c.tts.elevenlabs_voice_id) == ("k", "v")


# --- contacts --------------------------------------------------------------------------------


def test_contacts(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[contacts]
Mom = "+15551234567"
work-line_2 = "+4930123456"

[contacts.dentist]
number = "+15557654321"
prompt = "Move the appointment."
greeting = "Hi, calling about an appointment."
""",
    )
    c = load_config(path, {})
    assert set(c.contacts) == {"mom", "work-line_2", "dentist"}
    assert c.contact("MOM") == Contact("mom", "+15551234567")
    assert c.contact("mom") is c.contacts["mom"]
    assert c.contact("dentist") == Contact(
        "dentist", "+15557654321", "Move the appointment.", "Hi, calling about an appointment."
    )
    assert c.contact("nobody") is None


# --- secrets and credentials -----------------------------------------------------------------


def test_secrets_are_masked() -> None:
    env = {
        "TWILIO_AUTH_TOKEN": "s3cr3t-auth",
        "CALL_TRIGGER_TOKEN": "s3cr3t-trigger-" + "x" * 32,
        "ELEVENLABS_API_KEY": "s3cr3t-eleven",
        "TWILIO_ACCOUNT_SID": SID,
    }
    c = load_config(None, env)
    assert c.twilio.auth_token == "s3cr3t-auth"
    for text in (repr(c), str(c), repr(c.twilio), str(c.tts)):
        assert "s3cr3t" not in text
    assert "auth_token='<hidden>'" in repr(c)
    assert SID in repr(c)  # an account SID is not a secret
    assert "call_trigger_token=''" in repr(load_config(None, {}))


def test_secret_masked_in_errors(tmp_path: Path) -> None:
    err = error_for(tmp_path, "[twilio]\nauth_token = 12345\n")
    assert "12345" not in str(err)
    assert str(err).endswith("[twilio] auth_token: expected a string, got '<hidden>'")


def test_credentials_directory(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "twilio_auth_token").write_text("cred-auth\n")
    (creds / "call_trigger_token").write_text(f"  {TRIGGER}  \n")
    (creds / "elevenlabs_api_key").write_text("cred-eleven")
    (creds / "twilio_account_sid").write_text(SID + "\n")
    c = load_config(None, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert c.twilio.auth_token == "cred-auth"
    assert c.twilio.call_trigger_token == TRIGGER
    assert c.tts.elevenlabs_api_key == "cred-eleven"
    assert c.twilio.account_sid == SID


def test_credentials_only_fill_empty_values(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "twilio_auth_token").write_text("cred-auth")
    c = load_config(None, {"CREDENTIALS_DIRECTORY": str(creds), "TWILIO_AUTH_TOKEN": "env-auth"})
    assert c.twilio.auth_token == "env-auth"
    path = write(tmp_path, '[twilio]\nauth_token = "file-auth"\n')
    assert load_config(path, {"CREDENTIALS_DIRECTORY": str(creds)}).twilio.auth_token == "file-auth"
    # a missing credential file is simply not used
    assert load_config(None, {"CREDENTIALS_DIRECTORY": str(creds)}).twilio.call_trigger_token == ""


def test_bad_credential_is_named(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "twilio_account_sid").write_text("nope")
    with pytest.raises(ConfigError) as info:
        load_config(None, {"CREDENTIALS_DIRECTORY": str(creds)})
    where = f"credential {creds / 'twilio_account_sid'}"
    assert str(info.value).startswith(f"{where}: [twilio] account_sid: expected")
    assert info.value.file == where


@pytest.mark.parametrize("name", ["twilio_auth_token", "call_trigger_token"])
def test_empty_credential_file_is_an_error(tmp_path: Path, name: str) -> None:
    """LoadCredential= pointing at an empty file must not leave a secret silently empty."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / name).write_text("\n")
    with pytest.raises(ConfigError) as info:
        load_config(None, {"CREDENTIALS_DIRECTORY": str(creds)})
    key = {"twilio_auth_token": "auth_token", "call_trigger_token": "call_trigger_token"}[name]
    assert info.value.key == f"twilio.{key}"
    assert info.value.expected == f"a non-empty {key.replace('_', ' ')}"
    assert str(info.value).startswith(f"credential {creds / name}: [twilio] {key}: expected")


def test_short_trigger_token_credential_is_refused(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "call_trigger_token").write_text("s3cr3t")
    with pytest.raises(ConfigError) as info:
        load_config(None, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert info.value.key == "twilio.call_trigger_token"
    assert "at least 32 characters" in str(info.value)
    assert "s3cr3t" not in str(info.value)


def test_elevenlabs_key_from_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "elevenlabs_api_key").write_text("k")
    path = write(tmp_path, '[tts]\nengine = "elevenlabs"\nelevenlabs_voice_id = "v"\n')
    c = load_config(path, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert c.tts.elevenlabs_api_key == "k"


def test_config_is_frozen() -> None:
    c = load_config(None, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.server.listen = "0.0.0.0:1"  # type: ignore[misc]
