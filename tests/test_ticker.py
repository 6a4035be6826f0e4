"""The shared tick quiet calls wait on: everyone wakes, together, within one period."""

from __future__ import annotations

import trio
import trio.testing

from aicallerd.call.ticker import Ticker


def test_waiters_wake_together_within_one_period() -> None:
    woke: dict[int, float] = {}

    async def main() -> None:
        ticker = Ticker(0.1)

        async def waiter(i: int, start: float) -> None:
            await trio.sleep(start)
            await ticker.wait()
            woke[i] = trio.current_time()

        async with trio.open_nursery() as nursery:
            for i, start in enumerate([0.0, 0.03, 0.06, 0.099, 0.12, 0.15]):
                nursery.start_soon(waiter, i, start)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    # The first tick is kept by the first waiter; those who came later share it, and a
    # waiter who arrives once it has passed starts the next.
    assert [woke[i] for i in range(4)] == [0.1] * 4
    assert woke[4] == woke[5] == 0.22


def test_a_cancelled_keeper_lets_the_others_go_early() -> None:
    """The keeper of the tick is a call that can hang up at any time: the others wake at
    once (they read their frames early) instead of waiting on a tick nobody keeps."""
    woke: list[float] = []

    async def main() -> None:
        ticker = Ticker(0.1)
        async with trio.open_nursery() as nursery:
            keeper = trio.CancelScope()

            async def keep() -> None:
                with keeper:
                    await ticker.wait()

            async def follow() -> None:
                await ticker.wait()
                woke.append(trio.current_time())
                await ticker.wait()  # the next tick has a keeper again
                woke.append(trio.current_time())

            nursery.start_soon(keep)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(follow)
            await trio.sleep(0.04)
            keeper.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert woke == [0.04, 0.14]
