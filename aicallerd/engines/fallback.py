"""Cloud engines with a local engine behind them: a failing cloud never reaches the call.

Each wrapper has the interface of the engine it wraps, so the call path does not know it is
there. It tries the cloud engine when its breaker allows, under a short deadline for the
first result; on an error, a timeout or a refused connection it logs one line saying why and
hands that phrase (STT), turn (LLM) or rest of the sentence (TTS) to the local engine. The
breaker (`aicallerd.engines.breaker`) then keeps the cloud engine skipped for a while, and
`status()` reports it for `aicallerctl status`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import numpy as np
import trio

from aicallerd.engines.breaker import Breaker
from aicallerd.engines.handover import unspoken_text
from aicallerd.engines.llm import ChatClient, LLMError, Message
from aicallerd.engines.stt import SpeechToText
from aicallerd.engines.tts import Synthesizer

log = logging.getLogger("aicallerd.engines")

CALL_RATE = 8000
Clock = Callable[[], float]


class _Guarded:
    """Breaker bookkeeping shared by the wrappers."""

    kind = "engine"

    def __init__(self, cloud: Any, breaker: Breaker | None, clock: Clock) -> None:
        self.cloud = cloud
        self.breaker = breaker if breaker is not None else Breaker()
        self._clock = clock

    def _allow(self) -> bool:
        return self.breaker.allow(self._clock())

    def _failed(self, exc: BaseException, then: str) -> None:
        reason = _reason(exc)
        self.breaker.failure(self._clock(), reason)
        state = "; breaker open" if self.breaker.is_open else ""
        log.warning("%s %s: %s%s; %s", self.kind, self.cloud.describe(), reason, state, then)

    def status(self) -> str:
        """`ok`, `degraded: <reason>` or `open until ...` for the cloud engine."""
        return self.breaker.state(self._clock())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "deadline passed"
    return str(exc) or type(exc).__name__


class FallbackTranscriber(_Guarded):
    """A cloud transcriber whose failed or late phrases are transcribed locally."""

    kind = "stt"

    def __init__(
        self,
        cloud: SpeechToText,
        local: SpeechToText,
        *,
        deadline: float = 3.0,
        breaker: Breaker | None = None,
        clock: Clock = trio.current_time,
    ) -> None:
        super().__init__(cloud, breaker, clock)
        self.local = local
        self.deadline = deadline

    async def transcribe(self, pcm8: np.ndarray) -> str:
        """The cloud's transcript, or the local one when the cloud fails or is late."""
        if self._allow():
            settled = False
            try:
                with trio.fail_after(self.deadline):
                    text = await self.cloud.transcribe(pcm8)
                settled = True
                self.breaker.success()
                return text
            except Exception as exc:  # any failure of the cloud: the local engine answers
                settled = True
                self._failed(exc, "this phrase is transcribed locally")
            finally:
                if not settled:
                    self.breaker.release()
        return await self.local.transcribe(pcm8)

    def describe(self) -> str:
        return f"{self.cloud.describe()}, fallback {self.local.describe()}"


_CLAUSE_END = frozenset(".,!?;:")


def _clause_done(text: str) -> bool:
    """Enough of the reply for the sentence splitter to speak: a clause mark, or 40 chars."""
    return len(text) >= 40 or any(c in _CLAUSE_END for c in text)


class FallbackChat(_Guarded):
    """A cloud LLM whose failed or late turns are answered by the local (embedded) model.

    Up to its first clause the turn can move to the local model unheard. A stream that
    breaks after that ends there: starting the answer over would repeat it.
    """

    kind = "llm"

    def __init__(
        self,
        cloud: ChatClient,
        local: ChatClient,
        *,
        first_token_seconds: float = 2.5,
        breaker: Breaker | None = None,
        clock: Clock = trio.current_time,
    ) -> None:
        super().__init__(cloud, breaker, clock)
        self.local = local
        self.first_token_seconds = first_token_seconds

    async def stream_chat(
        self, messages: list[Message], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str]:
        """Yield the cloud's reply, or the local model's when the cloud fails or stalls
        before its first clause.

        The cloud's tokens are held until the first clause is complete (the splitter would
        not speak them sooner anyway), so a stream that breaks or goes quiet for
        ``first_token_seconds`` before then moves to the local model with nothing said twice.
        """
        kw = {"max_tokens": max_tokens, "temperature": temperature}
        if self._allow():
            held: list[str] | None = []  # None once the first clause has been passed on
            settled = False
            try:
                async with aclosing(self.cloud.stream_chat(messages, **kw)) as stream:
                    while True:
                        with trio.fail_after(self.first_token_seconds):
                            delta = await anext(stream, None)
                        if delta is None:
                            break
                        if held is None:
                            yield delta
                            continue
                        held.append(delta)
                        if _clause_done("".join(held)):
                            settled = True
                            self.breaker.success()
                            yield "".join(held)
                            held = None
            except Exception as exc:
                settled = True
                if held is None:
                    self._failed(exc, "the reply ends here")
                    return
                self._failed(exc, "this turn is answered by the local model")
            else:
                if held is None:
                    return
                if held:  # a short reply that never reached a clause end
                    settled = True
                    self.breaker.success()
                    yield "".join(held)
                    return
            finally:
                if not settled:
                    self.breaker.release()
        async with aclosing(self.local.stream_chat(messages, **kw)) as stream:
            async for delta in stream:
                yield delta

    async def preload(self) -> None:
        """Preload both; a cloud that fails counts against its breaker (warning, not fatal)."""
        await self.local.preload()
        try:
            await self.cloud.preload()
        except LLMError as exc:
            self._failed(exc, "turns go to the local model until it answers")
        else:
            self.breaker.success()

    async def health(self) -> str:
        return await self.cloud.health()

    def describe(self) -> str:
        return f"{self.cloud.describe()}, fallback {self.local.describe()}"


class FallbackSynthesizer(_Guarded):
    """A cloud voice whose failures are covered by the local voice (Piper).

    No audio by `first_audio_seconds`: the local voice says the sentence. The stream breaks
    or stalls midway: the local voice says the words not yet heard (estimated, see
    `aicallerd.engines.handover`). The breaker's short skip keeps the rest of the reply on
    the local voice instead of switching back and forth.
    """

    kind = "tts"

    def __init__(
        self,
        cloud: Synthesizer,
        local: Synthesizer,
        *,
        first_audio_seconds: float = 2.0,
        speed: float = 1.0,
        breaker: Breaker | None = None,
        clock: Clock = trio.current_time,
    ) -> None:
        super().__init__(cloud, breaker, clock)
        self.local = local
        self.first_audio_seconds = first_audio_seconds
        self.speed = speed

    async def stream_ulaw(self, text: str) -> AsyncIterator[bytes]:
        """Yield mu-law audio for all of `text`, from the cloud voice, the local one or both."""
        if not text.strip():
            return
        rest = text
        if self._allow():
            heard = 0
            settled = False
            try:
                async with aclosing(self.cloud.stream_ulaw(text)) as stream:
                    while True:
                        try:
                            with trio.fail_after(self.first_audio_seconds):
                                chunk = await anext(stream, None)
                        except Exception as exc:
                            settled = True
                            rest = unspoken_text(text, heard / CALL_RATE, speed=self.speed)
                            self._failed(exc, f"the local voice says {len(rest)} characters")
                            break
                        if chunk is None:
                            settled = True
                            self.breaker.success()
                            return
                        heard += len(chunk)
                        yield chunk
            finally:
                if not settled:
                    self.breaker.release()
        if rest:
            async with aclosing(self.local.stream_ulaw(rest)) as stream:
                async for chunk in stream:
                    yield chunk

    async def warm(self) -> None:
        """Warm the local voice (it must work); a cloud that fails is a warning."""
        await self.local.warm()
        try:
            with trio.fail_after(10):
                await self.cloud.warm()
        except Exception as exc:
            self._failed(exc, "the local voice speaks until it answers")
        else:
            self.breaker.success()

    def describe(self) -> str:
        return f"{self.cloud.describe()}, fallback {self.local.describe()}"
