"""Configuration: one TOML file, environment overrides, systemd credentials.

The keys, their defaults, checks, environment variables and comments are declared once, in
`aicallerd.configschema`; etc/aicaller.conf is rendered from it (`python -m
aicallerd.configfile`) and documents every key.

`load_config(path, environ)` reads the file (``path=None``: the embedded defaults only),
applies the environment overrides (they win over the file), fills empty secrets from
``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``), validates everything and returns a
frozen `Config`. Nothing else here does I/O, so a SIGHUP reload is just another call. Every
mistake is a `ConfigError` naming the file (or environment variable), the key, what was
expected and what was found, e.g.::

    /etc/aicaller/aicaller.conf: [server] listen: expected host:port, got '127.0.0.1'
    environment MAX_SILENCE_SECONDS: expected a number > 0, got 'abc'

Unknown sections and keys are errors (with a did-you-mean), so a typo never silently falls
back to a default. An integer is accepted where a number is expected, a string never is.
Environment booleans accept true/false/1/0/yes/no. An empty environment variable counts as
unset unless "" is a valid value for its key (``FORCE_LANGUAGE=`` means "detect the language"),
so ``MAX_TOKENS=`` in an env file is harmless. Secrets are masked in repr() and in errors.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from aicallerd.configchecks import E164, E164_EXPECTED, Invalid
from aicallerd.configkeys import MASK, Key
from aicallerd.configschema import (
    ENV_VARS,
    KEYS,
    SCHEMA,
    SECTIONS,
    CallConfig,
    Config,
    Contact,
    ControlConfig,
    LlmConfig,
    LogConfig,
    ServerConfig,
    StorageConfig,
    SttConfig,
    TtsConfig,
    TurnConfig,
    TwilioConfig,
)

__all__ = [
    "ENV_VARS",
    "CallConfig",
    "Config",
    "ConfigError",
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
    "load_config",
]

ENV_WHERE = "environment"
DEFAULTS_WHERE = "<defaults>"


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


def error(
    where: str,
    key: str,
    expected: str,
    got: Any,
    *,
    hint: str = "",
    is_table: bool = False,
    secret: bool = False,
) -> ConfigError:
    """The `ConfigError` for a bad value of `key` found in `where` (a file or the environment)."""
    shown = MASK if secret and got not in ("", None) else got
    if where == ENV_WHERE:
        prefix = f"{ENV_WHERE} {key}"
    else:
        prefix = f"{where}: {_location(key, is_table=is_table)}"
    message = f"{prefix}: expected {expected}, got {_show(shown)}{hint}"
    return ConfigError(message, file=where, key=key, expected=expected, got=shown)


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_CONTACT_KEYS = ("number", "prompt", "greeting")
_CONTACT_NAME = re.compile(r"[a-z0-9_-]+", re.IGNORECASE)
_CONTACT_EXPECTED = f"{E164_EXPECTED} or a table {{number, prompt, greeting}}"


# --- one value ------------------------------------------------------------------------------


def _typed(key: Key, value: Any) -> Any:
    """Check a TOML value's type; int is fine where a float is expected, bool never is."""
    kind = key.spec.check.kind
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, kind):
        return value
    raise Invalid()


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _from_env(key: Key, raw: str) -> Any:
    text = raw.strip()
    kind = key.spec.check.kind
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise Invalid()
    if kind is int:
        if not re.fullmatch(r"[+-]?\d+", text):
            raise Invalid()
        return int(text)
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise Invalid() from None
    return text


def _accepts_empty(key: Key) -> bool:
    """Whether "" is a meaningful value for a string key (FORCE_LANGUAGE= means "detect")."""
    if key.spec.check.kind is not str:
        return False
    try:
        key.spec.check("")
    except Invalid:
        return False
    return True


def _apply(key: Key, convert: Callable[[], Any], where: str, name: str, raw: Any) -> Any:
    check = key.spec.check
    try:
        return check(convert())
    except Invalid as bad:
        raise error(
            where, name, bad.expected or check.expected, raw, secret=key.spec.secret
        ) from None


# --- the sources ----------------------------------------------------------------------------


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


def _apply_file(doc: dict[str, Any], where: str, values: dict[str, Any]) -> dict[str, Contact]:
    """Put the file's values into `values`; returns its contacts."""
    contacts: dict[str, Contact] = {}
    for section, table in doc.items():
        if section == "contacts":
            contacts = _parse_contacts(table, where)
            continue
        if section not in KEYS:
            known = [*KEYS, "contacts"]
            raise error(
                where,
                section,
                "one of: " + ", ".join(f"[{s}]" for s in known),
                section,
                hint=_did_you_mean(section, known),
                is_table=True,
            )
        if not isinstance(table, dict):
            raise error(where, section, "a [section] table", table, is_table=True)
        keys = KEYS[section]
        for name, value in table.items():
            key = keys.get(name)
            if key is None:
                raise error(
                    where,
                    f"{section}.{name}",
                    "one of: " + ", ".join(keys),
                    name,
                    hint=_did_you_mean(name, list(keys)),
                )
            values[key.dotted] = _apply(
                key, lambda k=key, v=value: _typed(k, v), where, key.dotted, value
            )
    return contacts


def _parse_contacts(table: Any, where: str) -> dict[str, Contact]:
    if not isinstance(table, dict):
        raise error(where, "contacts", "a table of name = number", table, is_table=True)
    contacts: dict[str, Contact] = {}
    for name, value in table.items():
        key = f"contacts.{name}"
        if not _CONTACT_NAME.fullmatch(name):
            raise error(where, key, "a contact name of letters, digits, _ and -", name)
        if name.lower() in contacts:
            raise error(where, key, "each contact name once (names ignore case)", name)
        if isinstance(value, str):
            number, prompt, greeting = value, "", ""
        elif isinstance(value, dict):
            for sub in value:
                if sub not in _CONTACT_KEYS:
                    raise error(
                        where,
                        f"{key}.{sub}",
                        "one of: " + ", ".join(_CONTACT_KEYS),
                        sub,
                        hint=_did_you_mean(sub, list(_CONTACT_KEYS)),
                    )
            number = value.get("number", _MISSING)
            if not isinstance(number, str):
                raise error(where, f"{key}.number", E164_EXPECTED, number)
            prompt = value.get("prompt", "")
            greeting = value.get("greeting", "")
            for sub, text in (("prompt", prompt), ("greeting", greeting)):
                if not isinstance(text, str):
                    raise error(where, f"{key}.{sub}", "a string", text)
        else:
            raise error(where, key, _CONTACT_EXPECTED, value)
        if not E164.fullmatch(number):
            where_key = f"{key}.number" if isinstance(value, dict) else key
            raise error(where, where_key, E164_EXPECTED, number)
        contacts[name.lower()] = Contact(name.lower(), number, prompt, greeting)
    return contacts


def _apply_env(environ: Mapping[str, str], values: dict[str, Any], origin: dict[str, str]) -> None:
    for key in SCHEMA:
        env = key.spec.env
        if env is None or env not in environ:
            continue
        raw = environ[env]
        if not raw.strip() and not _accepts_empty(key):
            continue  # "MAX_TOKENS=" in an env file means "not set"
        values[key.dotted] = _apply(key, lambda k=key, r=raw: _from_env(k, r), ENV_WHERE, env, raw)
        origin[key.dotted] = ENV_WHERE


def _apply_credentials(cred_dir: str, values: dict[str, Any], origin: dict[str, str]) -> None:
    """Fill empty secrets from credential files; a file that is there but empty is an error."""
    for key in SCHEMA:
        if key.spec.credential is None or values[key.dotted]:
            continue
        cred_path = os.path.join(cred_dir, key.spec.credential)
        if not os.path.exists(cred_path):
            continue
        where = f"credential {cred_path}"
        try:
            with open(cred_path, encoding="utf-8") as f:
                raw = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(
                f"{where}: cannot read: {reason}",
                file=cred_path,
                key=key.dotted,
                expected="a readable UTF-8 file",
                got=reason,
            ) from None
        if not raw:  # LoadCredential= pointed at an empty file: never sign with ""
            raise error(where, key.dotted, f"a non-empty {key.name.replace('_', ' ')}", raw)
        values[key.dotted] = _apply(key, lambda v=raw: v, where, key.dotted, raw)
        origin[key.dotted] = where


def _check_across(values: dict[str, Any], origin: dict[str, str]) -> None:
    """Rules that involve two keys; the error names the first one where it was set."""

    def fail(dotted: str, expected: str) -> None:
        section, name = dotted.split(".")
        key = KEYS[section][name]
        where = origin[dotted]
        shown = key.spec.env if where == ENV_WHERE and key.spec.env else dotted
        raise error(where, shown, expected, values[dotted], secret=key.spec.secret)

    done = values["turn.done_speaking_silence_seconds"]
    if values["turn.chunk_silence_seconds"] >= done:
        fail(
            "turn.chunk_silence_seconds",
            f"less than [turn] done_speaking_silence_seconds ({done:g})",
        )
    chunk = values["turn.chunk_silence_seconds"]
    for name in ("turn.complete_silence_seconds", "turn.unfinished_silence_seconds"):
        if values[name] <= chunk:
            fail(name, f"more than [turn] chunk_silence_seconds ({chunk:g})")
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


def _resolve_directories(environ: Mapping[str, str], values: dict[str, Any]) -> None:
    """Empty socket / state paths: what systemd gave us, else the packaged locations."""
    if not values["control.socket"]:
        runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        values["control.socket"] = (
            os.path.join(runtime, "control.sock") if runtime else "/run/aicaller/control.sock"
        )
    if not values["storage.state_dir"]:
        values["storage.state_dir"] = (
            environ.get("STATE_DIRECTORY", "").split(":")[0] or "/var/lib/aicaller"
        )


def load_config(path: str | Path | None, environ: Mapping[str, str]) -> Config:
    """Read, override, validate; see the module docstring. Raises `ConfigError`."""
    file_where = str(path) if path is not None else DEFAULTS_WHERE
    values: dict[str, Any] = {k.dotted: k.default for k in SCHEMA}
    origin: dict[str, str] = {k.dotted: file_where for k in SCHEMA}
    contacts: dict[str, Contact] = {}
    if path is not None:
        contacts = _apply_file(_read_toml(path), file_where, values)
    _apply_env(environ, values, origin)
    cred_dir = environ.get("CREDENTIALS_DIRECTORY", "")
    if cred_dir:
        _apply_credentials(cred_dir, values, origin)
    _check_across(values, origin)
    _resolve_directories(environ, values)
    sections = {
        section: cls(**{name: values[f"{section}.{name}"] for name in KEYS[section]})
        for section, cls in SECTIONS.items()
    }
    return Config(
        **sections,  # type: ignore[arg-type]
        contacts=MappingProxyType(contacts),
        source=str(path) if path is not None else None,
    )
