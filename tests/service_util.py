"""Helpers for the tests that run the real daemon (test_service_*.py, test_e2e_call.py), as an
operator runs it, with a config of the test's choosing, driven through aicallerctl and the
stand-in. The daemon is started by the benchmark's launcher (``bench.daemon``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

from fakes.notify_socket import NotifyListener  # noqa: F401  (re-exported)

from aicallerctl.testcall import Target
from bench.daemon import (  # noqa: F401  (re-exported for the service tests)
    AUTH_TOKEN,
    PUBLIC_URL,
    Daemon,
    free_port,
    launch,
    render_config,
)
from bench.wer import wer  # noqa: F401  (re-exported)


def target(d: Daemon) -> Target:
    return d.target()


def socket_path(d: Daemon) -> str:
    return str(d.runtime_dir / "control.sock")


def ctl(d: Daemon, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run ``aicallerctl --socket <the daemon's> ARGS`` the way a shell user would."""
    return subprocess.run(
        [sys.executable, "-m", "aicallerctl", "--socket", socket_path(d), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """For conditions no event announces (a row in a file written by another process)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
