"""The schema is the one source: the rendered file, the reload rules and the secrets follow it."""

import dataclasses
import tomllib

import pytest

from aicallerd.config import load_config
from aicallerd.configfile import render_default_config, toml_value
from aicallerd.configschema import SCHEMA
from aicallerd.reload import RESTART_ONLY, merge_reloadable, secrets_of
from aicallerd.text.guardrail import SYSTEM_PROMPT


def test_every_key_is_documented_with_its_env_and_credential() -> None:
    lines = render_default_config().splitlines()
    for key in SCHEMA:
        section = lines.index(f"[{key.section}]")
        at = next(i for i in range(section, len(lines)) if lines[i].startswith(f"{key.name} = "))
        comment = []
        for line in reversed(lines[section + 1 : at]):
            if not line.startswith("# "):
                break
            comment.insert(0, line[2:])
        said = " ".join(comment)
        assert said.startswith(key.spec.comment), key.dotted
        if key.spec.env:
            assert f"[{key.spec.env}]" in said, key.dotted
        if key.spec.credential:
            assert f"(credential {key.spec.credential})" in said, key.dotted
        assert ("(restart)" in said) == key.spec.restart, key.dotted


def test_rendered_lines_fit_the_width() -> None:
    assert max(len(line) for line in render_default_config().splitlines()) <= 100


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain",
        'quotes " and """ and \\ backslashes',
        "tab\tnewline\nreturn\r bell\x07 del\x7f",
        SYSTEM_PROMPT,
        "a long prompt whose words are  separated by two spaces  here and there, " * 3,
        " leading and trailing spaces in a long string, which a line continuation would eat " * 2,
    ],
)
def test_any_string_renders_to_toml_that_loads_back(text: str) -> None:
    rendered = toml_value(text)
    assert tomllib.loads(f"v = {rendered}")["v"] == text
    assert all(len(line) <= 100 for line in rendered.splitlines())


def _other(value: object) -> object:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    return f"{value}-changed"


def test_a_reload_keeps_every_restart_key_and_names_it() -> None:
    old = load_config(None, {})
    edits: dict[str, dict[str, object]] = {}
    for key in SCHEMA:
        value = getattr(getattr(old, key.section), key.name)
        edits.setdefault(key.section, {})[key.name] = _other(value)
    new = dataclasses.replace(
        old,
        **{name: dataclasses.replace(getattr(old, name), **kw) for name, kw in edits.items()},
    )
    effective, restart = merge_reloadable(old, new)
    assert restart == [f"[{k.section}] {k.name}" for k in SCHEMA if k.spec.restart]
    for key in SCHEMA:
        kept = getattr(getattr(effective, key.section), key.name)
        source = old if key.spec.restart else new
        assert kept == getattr(getattr(source, key.section), key.name), key.dotted
    assert RESTART_ONLY == {
        s: tuple(k.name for k in SCHEMA if k.section == s and k.spec.restart) for s in RESTART_ONLY
    }


def test_retention_is_reloadable_and_paths_are_not() -> None:
    assert "retention_days" not in RESTART_ONLY["storage"]
    assert RESTART_ONLY["storage"] == ("state_dir",)
    assert RESTART_ONLY["control"] == ("socket",)


def test_secrets_come_from_the_schema() -> None:
    env = {
        "TWILIO_AUTH_TOKEN": "auth-secret",
        "CALL_TRIGGER_TOKEN": "t" * 32,
        "ELEVENLABS_API_KEY": "eleven-secret",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    }
    assert secrets_of(load_config(None, env)) == ["auth-secret", "t" * 32, "eleven-secret"]
    assert secrets_of(load_config(None, {})) == []
