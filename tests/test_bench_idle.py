"""The idle bench's arithmetic: the daemon's CPU per 10,000 inbound frames, and its table."""

import pytest

from bench.idle import HEADERS, masked, per_10k, rows


def test_cpu_per_10k_frames_comes_from_daemon_cpu_seconds() -> None:
    # 40 % of a core for 30 s is 12 CPU-seconds; over 120,000 frames, 1 s per 10,000.
    assert per_10k({"daemon_pct": 40.0, "wall_seconds": 30.0}, 120_000) == pytest.approx(1.0)
    assert per_10k({"daemon_pct": None, "wall_seconds": 30.0}, 120_000) is None
    assert per_10k({"daemon_pct": 40.0, "wall_seconds": 30.0}, 0) is None


def test_rows_without_a_talker_leave_its_cells_empty() -> None:
    level = {
        "idle": 100,
        "line": "silence",
        "held": 100,
        "mb_per_idle_call": 0.3,
        "cpu": {"daemon_pct": 22.0, "bench_pct": 20.0},
        "frames": 93_800,
        "cpu_s_per_10k": 0.72,
        "talking": None,
    }
    (row,) = rows(None, [level])
    assert len(row) == len(HEADERS)
    assert row[0] == "100 idle (silence)" and row[2:6] == ["-"] * 4
    assert row[-1] == "0.72 (93800 frames)"


def test_idle_callers_frames_are_what_a_server_reads():
    from aicallerd.wsframes import FrameReader

    reader = FrameReader(1 << 16)
    texts = ["{}", "x" * 125, "y" * 126, '{"event":"media"}' * 30]
    assert reader.feed(b"".join(masked(t) for t in texts)) == texts
