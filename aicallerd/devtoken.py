"""A development auth token for a daemon started without Twilio credentials.

``make run`` must work on a fresh machine with no Twilio account, yet every webhook and
stream is signature-checked. Rather than switching checks off, the daemon generates a
random token once, keeps it in the state directory (mode 0600) and warns that real Twilio
requests will be refused; ``aicallerctl test-call`` signs with the same file.

The token is never "": an HMAC keyed with b"" is one anybody can compute, so a token that
would resolve to nothing (an empty or unreadable file, or none to read) is a `ConfigError`,
and the daemon refuses to start (exit 78) instead of running open.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from aicallerd.config import Config, ConfigError

FILENAME = "dev-auth-token"
_KEY = "twilio.auth_token"
_EXPECTED = "a non-empty auth token"


def dev_token_path(cfg: Config) -> Path:
    return Path(cfg.storage.state_dir) / FILENAME


def resolve_auth_token(cfg: Config, *, create: bool) -> str:
    """The configured token, else the development token (created when ``create``).

    Raises `ConfigError` rather than return "".
    """
    if cfg.twilio.auth_token:
        return cfg.twilio.auth_token
    path = dev_token_path(cfg)
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        if not create:
            raise _no_token(path, "missing", "") from None
        return _create(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise _no_token(path, f"unreadable ({reason})", reason) from None
    if not token:
        raise _no_token(path, "empty", "")
    return token


def _create(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _no_token(path: Path, what: str, got: str) -> ConfigError:
    return ConfigError(
        f"{path}: [twilio] auth_token is empty and the development token is {what}: "
        f"expected {_EXPECTED} (set [twilio] auth_token, TWILIO_AUTH_TOKEN or the "
        "twilio_auth_token credential)",
        file=str(path),
        key=_KEY,
        expected=_EXPECTED,
        got=got,
    )
