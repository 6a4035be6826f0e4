"""The development auth token: made once, reused, and never "" (an HMAC keyed with b"")."""

import stat
from pathlib import Path

import pytest

from aicallerd.config import ConfigError, load_config
from aicallerd.devtoken import dev_token_path, resolve_auth_token


def config(tmp_path: Path, auth_token: str = ""):
    env = {"STATE_DIRECTORY": str(tmp_path / "state"), "TWILIO_AUTH_TOKEN": auth_token}
    return load_config(None, env)


def test_configured_token_wins(tmp_path: Path) -> None:
    assert resolve_auth_token(config(tmp_path, "real-token"), create=True) == "real-token"
    assert not dev_token_path(config(tmp_path)).exists()


def test_dev_token_is_created_once_private_and_reused(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    token = resolve_auth_token(cfg, create=True)
    assert len(token) == 32 and int(token, 16) >= 0
    path = dev_token_path(cfg)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_auth_token(cfg, create=True) == token
    assert resolve_auth_token(cfg, create=False) == token


def assert_fails_closed(cfg, *, create: bool, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_auth_token(cfg, create=create)
    err = info.value
    assert (err.file, err.key, err.expected) == (
        str(dev_token_path(cfg)),
        "twilio.auth_token",
        "a non-empty auth token",
    )
    assert says in str(err) and "expected a non-empty auth token" in str(err)


@pytest.mark.parametrize("content", ["", "\n", "   \n"])
def test_empty_dev_token_file_fails_closed(tmp_path: Path, content: str) -> None:
    cfg = config(tmp_path)
    path = dev_token_path(cfg)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert_fails_closed(cfg, create=True, says="development token is empty")
    assert path.read_text() == content  # not silently replaced either


def test_unreadable_dev_token_fails_closed(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    dev_token_path(cfg).mkdir(parents=True)  # a directory: unreadable even for root
    assert_fails_closed(cfg, create=True, says="development token is unreadable")


def test_missing_dev_token_without_create_fails_closed(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert_fails_closed(cfg, create=False, says="development token is missing")
    assert not dev_token_path(cfg).exists()
