"""Numbers to text: markdown tables, machine info, CPU use (the machine's, and the daemon's
per leg as its control socket reports it)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def ms(value: float | None, digits: int = 0) -> str:
    """Milliseconds for a table cell; "-" for no data."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers right-aligned."""
    rows = [["-" if c is None else str(c) for c in row] for row in rows]
    numeric = [
        all(_is_number(r[i]) for r in rows if r[i] != "-") and any(r[i] != "-" for r in rows)
        for i in range(len(header))
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    try:
        float(text.split("/")[0].rstrip("%"))
    except ValueError:
        return False
    return True


def _cpuinfo() -> tuple[str, str | None]:
    models, mhz = [], None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                models.append(value.strip())
            elif key.strip() == "cpu MHz" and mhz is None:
                mhz = value.strip()
    except OSError:
        pass
    return (models[0] if models else platform.processor() or "unknown"), mhz


def _meminfo_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).parent,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine_info() -> dict[str, object]:
    """Cores, CPU model, memory, load, kernel, Python, git revision."""
    model, mhz = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpu_model": model,
        "cpu_mhz": mhz,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "mem_gb": _meminfo_gb(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
    }


def machine_line(info: dict[str, object]) -> str:
    mhz = f" @ {float(info['cpu_mhz']):.0f} MHz" if info.get("cpu_mhz") else ""  # type: ignore[arg-type]
    load = info.get("loadavg_at_start") or []
    dirty = " (uncommitted changes)" if info.get("git_dirty") else ""
    return (
        f"{info['cpu_model']}{mhz}, {info['cores']} cores ({info['usable_cores']} usable), "
        f"{info['mem_gb']} GB RAM, load average {' '.join(map(str, load))} at start; "
        f"Linux {info['kernel']}, Python {info['python']}, git {info['git']}{dirty}"
    )


def _busy_jiffies() -> int | None:
    """All CPUs' non-idle time so far, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


def _proc_jiffies(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(stat[11]) + int(stat[12])


def daemon_cpu(control_socket: str | Path) -> dict[str, Any] | None:
    """The daemon's CPU per leg since its engines loaded (``status`` over the control
    socket: turns answered and seconds per leg); None when it cannot be read."""
    from aicallerctl.client import ControlClient, CtlError

    try:
        with ControlClient(str(control_socket), 10.0) as client:
            cpu = client.request("status").get("cpu")
    except (CtlError, OSError):
        return None
    return cpu if isinstance(cpu, dict) else None


def cpu_legs(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """What the daemon spent between two `daemon_cpu` readings: turns answered, CPU seconds
    per leg and per answered turn (None per turn when no turn was answered)."""
    if not before or not after:
        return None
    turns = int(after["turns"]) - int(before["turns"])
    seconds = {
        leg: round(max(0.0, value - before["seconds"].get(leg, 0.0)), 3)
        for leg, value in after["seconds"].items()
    }
    seconds["total"] = round(sum(seconds.values()), 3)
    per_turn = {leg: round(v / turns, 3) if turns > 0 else None for leg, v in seconds.items()}
    return {"turns": turns, "seconds": seconds, "per_turn": per_turn}


def cpu_legs_table(legs: Mapping[str, Any] | None) -> str:
    """CPU seconds per answered turn for each leg, as a markdown table (or why not)."""
    if not legs:
        return "CPU per leg: not available (the daemon's control socket did not answer)."
    total = legs["seconds"]["total"]
    rows = [
        [
            leg,
            ms(legs["per_turn"][leg], 3),
            ms(seconds, 2),
            ms(100 * seconds / total if total else None),
        ]
        for leg, seconds in legs["seconds"].items()
    ]
    return "\n".join(
        [
            f"Daemon CPU per answered turn, by leg ({legs['turns']} turns; engine legs are "
            "their own threads plus the calling worker's share, framing is the event loop):",
            "",
            table(["leg", "CPU s/turn", "CPU s", "share %"], rows),
        ]
    )


class CpuMeter:
    """CPU used by the daemon, by the benchmark itself and by everything else, between
    :meth:`start` and :meth:`stop`, in % of one core. "Others" above a few % means the
    machine was shared while measuring (tests, other daemons) and the numbers suffer.
    With the daemon's ``control_socket``, also its CPU per leg and per answered turn."""

    def __init__(
        self, daemon_pid: int | None = None, control_socket: str | Path | None = None
    ) -> None:
        self.daemon_pid = daemon_pid
        self.control_socket = control_socket
        self._t0 = 0.0
        self._start: tuple[int | None, int | None, int | None] = (None, None, None)
        self._legs: dict[str, Any] | None = None

    def _sample(self) -> tuple[int | None, int | None, int | None]:
        daemon = 0 if self.daemon_pid is None else _proc_jiffies(self.daemon_pid)
        return _busy_jiffies(), daemon, _proc_jiffies(os.getpid())

    def start(self) -> None:
        if self.control_socket is not None:
            self._legs = daemon_cpu(self.control_socket)
        self._t0 = time.monotonic()
        self._start = self._sample()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self._t0
        end = self._sample()
        legs = None
        if self.control_socket is not None:
            legs = cpu_legs(self._legs, daemon_cpu(self.control_socket))
        hz = os.sysconf("SC_CLK_TCK")
        deltas = [
            None if a is None or b is None else (b - a) / hz
            for a, b in zip(self._start, end, strict=True)
        ]
        total, daemon, bench = deltas
        others = None
        if total is not None and daemon is not None and bench is not None:
            others = max(0.0, total - daemon - bench)

        def pct(x: float | None) -> float | None:
            return None if x is None or wall <= 0 else round(100 * x / wall, 1)

        out: dict[str, Any] = {
            "wall_seconds": round(wall, 1),
            "daemon_pct": pct(daemon),
            "bench_pct": pct(bench),
            "others_pct": pct(others),
        }
        if self.control_socket is not None:
            out["legs"] = legs
        return out


def cpu_line(cpu: Mapping[str, Any]) -> str:
    """One sentence for a report; a warning when other processes used the CPU too."""
    text = (
        f"CPU during this mode ({cpu['wall_seconds']} s), % of one core: daemon "
        f"{ms(cpu['daemon_pct'])}, benchmark + stand-in {ms(cpu['bench_pct'])}, "
        f"other processes {ms(cpu['others_pct'])}."
    )
    others = cpu.get("others_pct")
    if others is not None and others > 15:
        text += (
            f" **Warning: other processes used {others:.0f} % of a core while this was "
            "measured (tests, other daemons?): these numbers are not representative.**"
        )
    return text


def wait_idle(max_wait: float, threshold: float = 15.0, window: float = 5.0) -> float | None:
    """Wait (up to ``max_wait`` s) until other processes use under ``threshold`` % of a core
    over ``window`` s; return the last measured %, None if it cannot be measured."""
    deadline = time.monotonic() + max_wait
    while True:
        meter = CpuMeter()
        meter.start()
        time.sleep(window)
        others = meter.stop()["others_pct"]
        if others is None or others < threshold or time.monotonic() >= deadline:
            return others
