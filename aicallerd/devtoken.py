"""A development auth token for a daemon started without Twilio credentials.

``make run`` must work on a fresh machine with no Twilio account, yet every webhook and
stream is signature-checked. Rather than switching checks off, the daemon generates a
random token once, keeps it in the state directory (mode 0600) and warns that real Twilio
requests will be refused; ``aicallerctl test-call`` signs with the same file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from aicallerd.config import Config

FILENAME = "dev-auth-token"


def dev_token_path(cfg: Config) -> Path:
    return Path(cfg.storage.state_dir) / FILENAME


def resolve_auth_token(cfg: Config, *, create: bool) -> str:
    """The configured token, else the development token (created when ``create``)."""
    if cfg.twilio.auth_token:
        return cfg.twilio.auth_token
    path = dev_token_path(cfg)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if not create:
            return ""
    except PermissionError:
        return ""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token
