"""``aicallerd``: the aicaller daemon."""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before anything imports onnxruntime
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub

EX_CONFIG = 78  # sysexits EX_CONFIG; the unit has RestartPreventExitStatus=78
EX_FAILURE = 1  # could not start (port in use...): systemd may retry, it can clear up
DEFAULT_CONFIG = "/etc/aicaller/aicaller.conf"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aicallerd", description=__doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    args = parser.parse_args(argv)

    from aicallerd.config import ConfigError, load_config
    from aicallerd.logs import setup_logging

    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        print(
            f"<3>aicallerd: config error: {exc}"
            if os.environ.get("JOURNAL_STREAM")
            else f"aicallerd: config error: {exc}",
            file=sys.stderr,
        )
        return EX_CONFIG
    if args.check:
        print(f"{args.config}: ok")
        return 0
    setup_logging(config.log.level, os.environ)

    import logging

    import trio

    from aicallerd.daemon import Daemon, StartupError

    daemon = Daemon(config, args.config)
    try:
        trio.run(daemon.run)
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:
        config_error = _find(exc, ConfigError)
        if config_error is not None:  # e.g. an empty or unreadable auth token: fail closed
            logging.getLogger("aicallerd").error("config error: %s", config_error)
            return EX_CONFIG
        error = _find(exc, StartupError)
        if error is None:
            raise
        logging.getLogger("aicallerd").error("cannot start: %s", error)
        return EX_FAILURE
    return 0


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """`kind` itself or inside (nested) exception groups: trio's nurseries wrap errors."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def _exit(code: int) -> None:
    """Leave without running native destructors: the embedded llama.cpp server's threads
    are still up, and tearing them down from the interpreter's finalizers can abort.
    Everything of ours (call log, logs, sockets) is closed and flushed by then."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run() -> None:
    """The ``aicallerd`` command."""
    _exit(main())


if __name__ == "__main__":
    run()
