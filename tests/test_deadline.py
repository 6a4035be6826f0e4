"""The local voice serves the most urgent synthesis first: a caller waiting in silence for
a reply's first words goes ahead of another call's prefetch of a later sentence."""

from __future__ import annotations

import threading
from functools import partial

import pytest
import trio
import trio.testing

from aicallerd.engines.deadline import DUE, DeadlineLimiter


def test_waiters_are_served_by_due_time_then_by_arrival() -> None:
    order: list[str] = []

    async def main() -> None:
        limiter = DeadlineLimiter(1)

        async def job(name: str, due: float | None, started: trio.Event | None = None) -> None:
            DUE.set(due)
            async with limiter:
                if started is not None:
                    started.set()
                order.append(name)
                await trio.sleep(1)

        async with trio.open_nursery() as nursery:
            first = trio.Event()
            nursery.start_soon(job, "running", 0.0, first)
            await first.wait()
            for name, due in [("third sentence", 7.0), ("first words", 0.5), ("second", 3.0)]:
                nursery.start_soon(job, name, due)
                await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(job, "also first words", 0.5)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert order == ["running", "first words", "also first words", "second", "third sentence"]


def test_a_cancelled_waiter_is_skipped_and_never_holds_the_engine() -> None:
    order: list[str] = []

    async def main() -> None:
        limiter = DeadlineLimiter(1)

        async def job(name: str, due: float) -> None:
            DUE.set(due)
            async with limiter:
                order.append(name)
                await trio.sleep(1)

        async with trio.open_nursery() as nursery:
            await limiter.acquire()
            with trio.CancelScope() as hung_up:
                nursery.start_soon(job, "later", 5.0)
                cancelled = trio.CancelScope()

                async def doomed() -> None:
                    with cancelled:
                        await job("hung up", 1.0)

                nursery.start_soon(doomed)
                await trio.testing.wait_all_tasks_blocked()
                cancelled.cancel()
                await trio.testing.wait_all_tasks_blocked()
            assert not hung_up.cancelled_caught
            assert limiter.waiting == 1
            limiter.release()
        assert limiter.borrowed_tokens == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert order == ["later"]


def test_a_thread_abandoned_on_cancel_keeps_the_engine_until_it_ends() -> None:
    """Piper cannot be interrupted: a cancelled call's synthesis still runs to its end, and
    the next one must not run beside it."""
    release = threading.Event()
    running: list[str] = []
    hang_up = trio.CancelScope()

    def synth(name: str) -> None:
        running.append(name)
        if name == "abandoned":
            trio.from_thread.run_sync(hang_up.cancel)  # the caller hangs up mid-sentence
            release.wait(10)

    async def main() -> None:
        limiter = DeadlineLimiter(1)
        with hang_up:
            await trio.to_thread.run_sync(
                synth, "abandoned", limiter=limiter, abandon_on_cancel=True
            )
        assert limiter.borrowed_tokens == 1  # still synthesizing
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.to_thread.run_sync, synth, "next", limiter=limiter))
            await trio.testing.wait_all_tasks_blocked()
            assert running == ["abandoned"]
            release.set()
        assert running == ["abandoned", "next"]
        assert limiter.borrowed_tokens == 0

    trio.run(main)


@pytest.mark.parametrize("due", [None, 3.0])
def test_a_free_engine_is_taken_at_once(due: float | None) -> None:
    async def main() -> None:
        limiter = DeadlineLimiter(1)
        DUE.set(due)
        async with limiter:
            assert limiter.borrowed_tokens == 1
        assert limiter.borrowed_tokens == 0

    trio.run(main)
