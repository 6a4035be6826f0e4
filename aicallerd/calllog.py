"""The call log: calls, their turns (transcript + per-leg latency) and Twilio status events.

SQLite in the state directory, WAL with synchronous=NORMAL: every write is its own committed
transaction, so a crash or SIGKILL loses at most the write in flight (NORMAL can lose the last
commits only on power loss, which a phone call log can afford). Times are Unix epoch seconds
(float, wall clock). The schema carries `PRAGMA user_version` so later versions can migrate.

`CallLog` is synchronous; `AsyncCallLog` runs each operation in a worker thread, one at a
time (CapacityLimiter(1)), so the trio loop never waits on the disk.
"""

from __future__ import annotations

import functools
import inspect
import json
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import trio

_T = TypeVar("_T")
_P = ParamSpec("_P")

SCHEMA_VERSION = 1
TERMINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})

_SCHEMA_V1 = """
CREATE TABLE calls (
    sid         TEXT PRIMARY KEY,
    direction   TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    from_number TEXT,
    to_number   TEXT,
    contact     TEXT,
    started_at  REAL NOT NULL,
    answered_at REAL,
    ended_at    REAL,
    status      TEXT,
    end_reason  TEXT
);
CREATE INDEX calls_started_at ON calls (started_at);
CREATE TABLE turns (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    call_sid    TEXT NOT NULL REFERENCES calls (sid) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    who         TEXT NOT NULL CHECK (who IN ('caller', 'agent')),
    text        TEXT NOT NULL,
    interrupted INTEGER NOT NULL DEFAULT 0 CHECK (interrupted IN (0, 1)),
    started_at  REAL NOT NULL,
    legs        TEXT NOT NULL DEFAULT '{}',
    audio_path  TEXT,
    UNIQUE (call_sid, seq)
);
-- No foreign key: a status callback can arrive before we have recorded the call.
CREATE TABLE call_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    call_sid TEXT NOT NULL,
    at       REAL NOT NULL,
    status   TEXT NOT NULL
);
CREATE INDEX call_events_sid ON call_events (call_sid, at);
"""

# _MIGRATIONS[n] brings a database from user_version n to n + 1.
_MIGRATIONS: list[str] = [_SCHEMA_V1]

_CALL_COLUMNS = (
    "sid, direction, from_number, to_number, contact, started_at, answered_at, ended_at, "
    "status, end_reason"
)


class CallLogError(Exception):
    """The database cannot be used (e.g. written by a newer aicallerd)."""


class CallLog:
    """Synchronous access to the call log; one connection, one caller at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        if self._conn is not None:
            return
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per method.
        # check_same_thread=False: AsyncCallLog uses it from worker threads, one at a time.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")  # an operator's sqlite3 shell may read
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> CallLog:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CallLogError(
                f"call log schema version {version} is newer than this aicallerd "
                f"({SCHEMA_VERSION}); refusing to touch it"
            )
        while version < SCHEMA_VERSION:
            # executescript() commits first; the migration and its version bump are atomic.
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{_MIGRATIONS[version]}\n"
                f"PRAGMA user_version={version + 1};\nCOMMIT;"
            )
            version += 1

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise CallLogError("call log is not open")
        return self._conn

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run fn inside one IMMEDIATE transaction: committed on return, rolled back on error."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # -- writes ----------------------------------------------------------------------------

    def start_call(
        self,
        sid: str,
        direction: str,
        from_number: str | None,
        to_number: str | None,
        started_at: float,
        contact: str | None = None,
        status: str | None = None,
    ) -> None:
        """Record a call; recording it again (webhook retry, dialer then /voice) fills blanks."""
        self._write(
            lambda c: c.execute(
                "INSERT INTO calls (sid, direction, from_number, to_number, contact, started_at,"
                " status) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (sid) DO UPDATE SET"
                " from_number = coalesce(calls.from_number, excluded.from_number),"
                " to_number = coalesce(calls.to_number, excluded.to_number),"
                " contact = coalesce(calls.contact, excluded.contact),"
                " status = coalesce(excluded.status, calls.status)",
                (sid, direction, from_number, to_number, contact, started_at, status),
            )
        )

    def update_status(self, sid: str, status: str, at: float) -> None:
        """A Twilio status callback: keep the event, and move the call's state along.

        `in-progress` marks the answer time; a terminal status (completed, busy, ...) ends a
        call nobody else ended (e.g. an outbound call that was never answered).
        """

        def tx(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO call_events (call_sid, at, status) VALUES (?, ?, ?)", (sid, at, status)
            )
            if status == "in-progress":
                c.execute(
                    "UPDATE calls SET status = ?, answered_at = coalesce(answered_at, ?)"
                    " WHERE sid = ?",
                    (status, at, sid),
                )
            elif status in TERMINAL_STATUSES:
                c.execute(
                    "UPDATE calls SET status = ?, ended_at = coalesce(ended_at, ?),"
                    " end_reason = coalesce(end_reason, ?) WHERE sid = ?",
                    (status, at, status, sid),
                )
            else:
                c.execute(
                    "UPDATE calls SET status = ? WHERE sid = ? AND ended_at IS NULL", (status, sid)
                )

        self._write(tx)

    def mark_answered(self, sid: str, at: float) -> None:
        """The media stream started: the call is live (first answer time wins)."""
        self._write(
            lambda c: c.execute(
                "UPDATE calls SET answered_at = coalesce(answered_at, ?),"
                " status = coalesce(status, 'in-progress') WHERE sid = ?",
                (at, sid),
            )
        )

    def end_call(
        self, sid: str, ended_at: float, status: str = "completed", end_reason: str | None = None
    ) -> None:
        self._write(
            lambda c: c.execute(
                "UPDATE calls SET ended_at = ?, status = ?, end_reason = ? WHERE sid = ?",
                (ended_at, status, end_reason, sid),
            )
        )

    def add_turn(
        self,
        call_sid: str,
        who: str,
        text: str,
        interrupted: bool,
        started_at: float,
        legs: Mapping[str, float] | None = None,
        audio_path: str | None = None,
    ) -> int:
        """Append a turn (seq = next in this call) and return its id.

        `legs` are latency legs in milliseconds, e.g. {"stt": 410, "llm_first": 240}.
        """
        legs_json = json.dumps(dict(legs or {}), separators=(",", ":"), sort_keys=True)

        def tx(c: sqlite3.Connection) -> int:
            (seq,) = c.execute(
                "SELECT coalesce(max(seq), 0) + 1 FROM turns WHERE call_sid = ?", (call_sid,)
            ).fetchone()
            cur = c.execute(
                "INSERT INTO turns (call_sid, seq, who, text, interrupted, started_at, legs,"
                " audio_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    call_sid,
                    seq,
                    who,
                    text,
                    int(bool(interrupted)),
                    started_at,
                    legs_json,
                    audio_path,
                ),
            )
            return int(cur.lastrowid or 0)

        return self._write(tx)

    def purge(self, older_than: float) -> list[str]:
        """Delete the calls that started before ``older_than`` (epoch seconds), with their
        turns and status events, and status events of unknown calls that old.

        Returns the deleted calls' SIDs, so the caller can delete their stored audio too.
        """

        def tx(c: sqlite3.Connection) -> list[str]:
            sids = [
                row[0]
                for row in c.execute("SELECT sid FROM calls WHERE started_at < ?", (older_than,))
            ]
            c.executemany("DELETE FROM call_events WHERE call_sid = ?", [(s,) for s in sids])
            c.execute(
                "DELETE FROM call_events WHERE at < ? AND call_sid NOT IN (SELECT sid FROM calls)",
                (older_than,),
            )
            c.execute("DELETE FROM calls WHERE started_at < ?", (older_than,))  # turns cascade
            return sids

        return self._write(tx)

    # -- reads -----------------------------------------------------------------------------

    def get_call(self, sid: str) -> dict[str, Any] | None:
        row = self.conn.execute(f"SELECT {_CALL_COLUMNS} FROM calls WHERE sid = ?", (sid,))
        found = row.fetchone()
        return None if found is None else dict(found)

    def recent_calls(self, limit: int = 20) -> list[dict[str, Any]]:
        """Newest first, each with its number of turns."""
        rows = self.conn.execute(
            f"SELECT {_CALL_COLUMNS}, (SELECT count(*) FROM turns WHERE call_sid = sid) AS turns"
            " FROM calls ORDER BY started_at DESC, rowid DESC LIMIT ?",
            (limit,),
        )
        return [dict(r) for r in rows]

    def transcript(self, sid: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT id, call_sid, seq, who, text, interrupted, started_at, legs, audio_path"
            " FROM turns WHERE call_sid = ? ORDER BY seq",
            (sid,),
        )
        out = []
        for r in rows:
            turn = dict(r)
            turn["interrupted"] = bool(turn["interrupted"])
            turn["legs"] = json.loads(turn["legs"])
            out.append(turn)
        return out

    def events(self, sid: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT at, status FROM call_events WHERE call_sid = ? ORDER BY at, id", (sid,)
        )
        return [dict(r) for r in rows]


class AsyncCallLog:
    """The call log for trio code: ``await log.<name>(...)`` runs ``CallLog.<name>`` in a
    worker thread, for every public method of :class:`CallLog` (the delegates are generated
    below, so a new CallLog method needs no copy here).

    CapacityLimiter(1) serialises them, which is what makes sharing one sqlite connection
    across threads safe. Cancellation waits for a started write to finish (never abandoned).
    """

    def __init__(self, path: str | Path) -> None:
        self.sync = CallLog(path)
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``fn`` in the call log's worker thread, after any operation before it."""
        return await trio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self._limiter
        )

    async def __aenter__(self) -> AsyncCallLog:
        await self.run(self.sync.open)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with trio.CancelScope(shield=True):
            await self.run(self.sync.close)


def _in_worker(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """An AsyncCallLog method that runs ``CallLog.<name>`` through :meth:`AsyncCallLog.run`."""

    @functools.wraps(method)
    async def delegate(self: AsyncCallLog, *args: Any, **kwargs: Any) -> Any:
        return await self.run(getattr(self.sync, name), *args, **kwargs)

    return delegate


for _name, _method in vars(CallLog).items():
    if inspect.isfunction(_method) and not _name.startswith("_"):
        setattr(AsyncCallLog, _name, _in_worker(_name, _method))
