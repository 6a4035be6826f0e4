"""The daemon launcher shared by the benchmark and the service tests: its config and its
wait on the log, against small real processes (the real daemon is test_e2e_call's)."""

import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

from bench.daemon import Daemon, DaemonError, render_config, toml_overrides


def test_overrides_become_tables_and_replace_the_base_keys() -> None:
    extra = toml_overrides(
        ["turn.barge_in=false", "llm.system_prompt=Be brief.", "server.max_concurrent_calls=16"]
    )
    config = tomllib.loads(render_config(5000, extra, "https://x.test", auth_token="tok"))
    assert config["server"] == {
        "listen": "127.0.0.1:5000",
        "public_url": "https://x.test",
        "max_concurrent_calls": 16,
    }
    assert config["twilio"] == {"auth_token": "tok"}
    assert config["turn"] == {"barge_in": False}
    assert config["llm"] == {"system_prompt": "Be brief."}
    with pytest.raises(ValueError, match=r"section\.key=value"):
        toml_overrides(["barge_in=false"])


def started(tmp_path: Path, script: str) -> Daemon:
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    d = Daemon(proc, tmp_path, {}, 5000, "https://x.test", "tok")
    threading.Thread(target=d._pump, daemon=True).start()
    return d


def test_wait_ready_returns_the_ready_line_and_later_lines_are_waited_for(tmp_path) -> None:
    d = started(
        tmp_path,
        "import sys\n"
        "print('loading', file=sys.stderr, flush=True)\n"
        "print('aicallerd: ready: 4 call slots', file=sys.stderr, flush=True)\n"
        "print('[CA1] call ended: silence', file=sys.stderr)\n",
    )
    assert d.wait_ready(timeout=30) == "aicallerd: ready: 4 call slots"
    assert d.wait_for("call ended", timeout=30) == "[CA1] call ended: silence"
    assert d.wait_for("loading") == "loading"  # any line since start, not only new ones
    assert d.proc.wait(timeout=30) == 0


def test_a_daemon_that_dies_first_fails_the_wait_with_its_log(tmp_path) -> None:
    d = started(tmp_path, "import sys; print('config error: bad key', file=sys.stderr); exit(1)")
    with pytest.raises(DaemonError, match=r"exited with status 1 (.|\n)*config error: bad key"):
        d.wait_ready(timeout=30)
