import io
import logging
import os
import time

import pytest

from aicallerd import logs
from aicallerd.logs import SecretFilter, call_logger, parse_level, setup_logging, syslog_priority


@pytest.fixture(autouse=True)
def clean_logging(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    monkeypatch.setattr(logs, "_SECRETS", SecretFilter())
    yield
    for handler in list(root.handlers):
        if getattr(handler, "_aicaller", False):
            root.removeHandler(handler)
    root.setLevel(saved[0])
    monkeypatch.delenv("TZ")
    time.tzset()


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def emit(name: str, level: int, msg: str, *args, extra: dict | None = None) -> None:
    """Log through `name` with a fixed timestamp (2026-11-26 12:00:00.123 UTC)."""
    logger = logging.getLogger(name)
    record = logger.makeRecord(name, level, __file__, 1, msg, args, None, extra=extra)
    record.created, record.msecs = 1795694400.123, 123.0
    logger.handle(record)


def test_plain_format_has_timestamp_level_and_name():
    out = io.StringIO()
    setup_logging("debug", {}, stream=out)
    emit("aicallerd.call", logging.INFO, "answered %s", "+15550100")
    emit("aicallerd.call", logging.DEBUG, "frame")
    emit("aicallerd.call", logging.WARNING, "slow turn", extra={"call_sid": "CA42"})
    emit("aicallerd.call", logging.ERROR, "two\nlines")
    assert lines(out) == [
        "2026-11-26 12:00:00.123 INFO aicallerd.call: answered +15550100",
        "2026-11-26 12:00:00.123 DEBUG aicallerd.call: frame",
        "2026-11-26 12:00:00.123 WARNING aicallerd.call: [CA42] slow turn",
        "2026-11-26 12:00:00.123 ERROR aicallerd.call: two",
        "2026-11-26 12:00:00.123 ERROR aicallerd.call: lines",
    ]


def test_journal_format_has_priority_and_no_timestamp():
    out = io.StringIO()
    setup_logging("debug", {"JOURNAL_STREAM": "8:12345"}, stream=out)
    log = logging.getLogger("aicallerd.web")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    assert lines(out) == [
        "<7>aicallerd.web: d",
        "<6>aicallerd.web: i",
        "<4>aicallerd.web: w",
        "<3>aicallerd.web: e",
        "<2>aicallerd.web: c",
    ]


def test_level_filters_and_reconfigure_replaces_handler():
    first, second = io.StringIO(), io.StringIO()
    setup_logging("info", {"JOURNAL_STREAM": "1:2"}, stream=first)
    setup_logging("warning", {"JOURNAL_STREAM": "1:2"}, stream=second)
    log = logging.getLogger("aicallerd")
    log.info("hidden")
    log.warning("shown")
    assert first.getvalue() == ""
    assert lines(second) == ["<4>aicallerd: shown"]
    assert sum(getattr(h, "_aicaller", False) for h in logging.getLogger().handlers) == 1


def test_bad_level_keeps_current_handler():
    out = io.StringIO()
    setup_logging("info", {"JOURNAL_STREAM": "1:2"}, stream=out)
    with pytest.raises(ValueError, match="loud"):
        setup_logging("loud", {}, stream=io.StringIO())
    logging.getLogger("x").info("still here")
    assert lines(out) == ["<6>x: still here"]


def test_multiline_message_and_traceback_prefix_every_line():
    out = io.StringIO()
    setup_logging("info", {"JOURNAL_STREAM": "1:2"}, stream=out)
    log = call_logger("CA0123456789abcdef")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("turn failed\nsecond line")
    got = lines(out)
    assert got[0] == "<3>aicallerd.call: [CA0123456789abcdef] turn failed"
    assert got[1] == "<3>aicallerd.call: [CA0123456789abcdef] second line"
    assert got[2] == "<3>aicallerd.call: [CA0123456789abcdef] Traceback (most recent call last):"
    assert got[-1] == "<3>aicallerd.call: [CA0123456789abcdef] RuntimeError: boom"
    assert all(line.startswith("<3>aicallerd.call: [CA0123456789abcdef] ") for line in got)


def test_call_logger_tags_lines_and_keeps_extra():
    out = io.StringIO()
    setup_logging("info", {"JOURNAL_STREAM": "1:2"}, stream=out)
    log = call_logger("CAfeed", name="aicallerd.session")
    log.logger.info("untagged")
    seen = []
    log.logger.addFilter(lambda record: seen.append(record.turn) or True)
    try:
        log.info("turn %d done", 3, extra={"turn": 3})
    finally:
        log.logger.filters.clear()
    assert lines(out) == [
        "<6>aicallerd.session: untagged",
        "<6>aicallerd.session: [CAfeed] turn 3 done",
    ]
    assert seen == [3]


def test_secrets_are_masked_in_messages_args_and_tracebacks():
    out = io.StringIO()
    setup_logging("info", {"JOURNAL_STREAM": "1:2"}, stream=out)
    logs.add_secret("sk_live_abcdef123456")
    logs.add_secret("tok")  # too short to mask safely: ignored
    log = logging.getLogger("aicallerd.tts")
    log.info("key=%s", "sk_live_abcdef123456")
    log.info("inline sk_live_abcdef123456 and tok")
    try:
        raise ValueError("bad key sk_live_abcdef123456")
    except ValueError:
        log.exception("request failed")
    text = out.getvalue()
    assert "sk_live_abcdef123456" not in text
    got = lines(out)
    assert got[0] == "<6>aicallerd.tts: key=***"
    assert got[1] == "<6>aicallerd.tts: inline *** and tok"
    assert got[-1] == "<3>aicallerd.tts: ValueError: bad key ***"


def test_longest_secret_wins():
    f = SecretFilter()
    f.add("abcdef")
    f.add("abcdefghij")
    assert f.mask("x abcdefghij y abcdef") == "x *** y ***"


def test_journal_stream_must_match_the_real_stderr(tmp_path):
    with open(tmp_path / "err.log", "w") as f:
        st = os.fstat(f.fileno())
        assert logs.is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f)
        assert not logs.is_journal({"JOURNAL_STREAM": "1:2"}, f)
        assert not logs.is_journal({}, f)


def test_chatty_libraries_are_quietened():
    setup_logging("info", {}, stream=io.StringIO())
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
    setup_logging("error", {}, stream=io.StringIO())
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.ERROR


def test_priorities_and_levels():
    assert [syslog_priority(n) for n in (10, 15, 20, 25, 30, 40, 50, 60)] == [
        7,
        6,
        6,
        4,
        4,
        3,
        2,
        2,
    ]
    assert parse_level("Info") == logging.INFO
    assert parse_level("WARN") == logging.WARNING
    with pytest.raises(ValueError):
        parse_level("verbose")


@pytest.mark.parametrize("journal", [True, False])
def test_a_hostile_call_sid_cannot_forge_a_line(journal: bool) -> None:
    out = io.StringIO()
    setup_logging("info", {"JOURNAL_STREAM": "1:2"} if journal else {}, stream=out)
    for sid in ["x]\n<0>forged", "a\rb", "a\x1b[2Jb", "a\u2028<0>b", "a\x85b", "a\x00b"]:
        call_logger(sid, "aicallerd.web").warning("call offered")
    got = lines(out)
    assert len(got) == 6  # one line per record: nothing split off into a line of its own
    assert not any(line.startswith("<0>") for line in got)
    tags = [line.split("aicallerd.web: ", 1)[1] for line in got]
    assert tags == [
        "[x]\\n<0>forged] call offered",
        "[a\\rb] call offered",
        "[a\\x1b[2Jb] call offered",
        "[a\\u2028<0>b] call offered",
        "[a\\x85b] call offered",
        "[a\\x00b] call offered",
    ]
    assert all(line.isprintable() for line in got)


def test_an_overlong_call_sid_is_cut_in_the_prefix():
    out = io.StringIO()
    setup_logging("info", {"JOURNAL_STREAM": "1:2"}, stream=out)
    call_logger("CA" + "f" * 10_000).info("hello")
    (line,) = lines(out)
    assert line == f"<6>aicallerd.call: [CA{'f' * 62}...] hello"
    assert logs.prefix_safe("CA" + "0" * 32) == "CA" + "0" * 32  # a real SID is untouched
