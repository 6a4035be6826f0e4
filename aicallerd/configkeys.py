"""How a configuration key is declared: `key()` fields on frozen `Section` dataclasses.

A field carries the default (as its dataclass default) and a `KeySpec` in its metadata: the
value check, the one-line comment, the environment variable that overrides it, the systemd
credential that fills it when empty, whether it is a secret and whether a change needs a
restart. `keys_of()` reads them back, so everything else is derived from the declaration.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any

from aicallerd.configchecks import Check

MASK = "<hidden>"
_META = "aicaller"


@dataclass(frozen=True)
class KeySpec:
    """What the schema says about one key besides its name and default."""

    check: Check
    comment: str
    env: str | None = None
    credential: str | None = None
    secret: bool = False
    restart: bool = False


def key(
    default: Any,
    check: Check,
    *,
    comment: str,
    env: str | None = None,
    credential: str | None = None,
    secret: bool = False,
    restart: bool = False,
) -> Any:
    """Declare a section field; `restart`: a reload keeps the running value (see reload.py)."""
    spec = KeySpec(check, comment, env, credential, secret, restart)
    return field(default=default, metadata={_META: spec})


@dataclass(frozen=True)
class Key:
    """One key of the schema, as the loader and the renderer see it."""

    section: str
    name: str
    default: Any
    spec: KeySpec

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


class Section:
    """Base for the section dataclasses: a repr that never shows a secret."""

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            hidden = f.metadata[_META].secret and value
            parts.append(f"{f.name}={MASK if hidden else value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    __str__ = __repr__


def keys_of(section: str, cls: type[Section]) -> tuple[Key, ...]:
    """The keys a section dataclass declares, in order; checks each annotation against its
    check's kind, so a field typed ``int`` can never be validated as a float."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        spec: KeySpec = f.metadata[_META]
        if hints[f.name] is not spec.check.kind:
            kind = spec.check.kind.__name__
            raise TypeError(f"[{section}] {f.name}: annotated {hints[f.name]}, checked as {kind}")
        keys.append(Key(section, f.name, f.default, spec))
    return tuple(keys)


def section_comment(cls: type[Section]) -> str:
    """A section's docstring: its comment in etc/aicaller.conf."""
    return inspect.cleandoc(cls.__doc__ or "")
