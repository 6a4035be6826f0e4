"""Streaming chat clients: OpenAI-compatible servers (llama.cpp, vLLM, ...) and Ollama.

Both take a shared `httpx.AsyncClient` so connections are reused from turn to turn, run
under trio (httpx speaks anyio), and turn every failure into `LLMError` with a message a
person can act on. `stream_chat` is an async generator: consume it inside
`contextlib.aclosing(...)` when you may stop early, so the HTTP stream is closed promptly.
"""

import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any, Protocol, runtime_checkable

import httpx
import trio

from aicallerd.engines.affinity import LEASE, SlotTable

log = logging.getLogger(__name__)

Message = dict[str, str]

# Loading a model into memory (Ollama preload) can take far longer than a normal read.
PRELOAD_TIMEOUT = httpx.Timeout(120.0, connect=5.0)


class LLMError(Exception):
    """The language model could not answer; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@runtime_checkable
class ChatClient(Protocol):
    """What a turn needs from a language model."""

    def stream_chat(
        self, messages: list[Message], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str]:
        """Yield the reply's text deltas as they are generated; raise LLMError on failure."""
        ...

    async def preload(self) -> None:
        """Get the model into memory before the first caller needs it."""
        ...

    async def health(self) -> str:
        """Describe the live backend, or raise LLMError saying what is wrong."""
        ...

    def describe(self) -> str:
        """Short human description for logs and `aicallerctl status`."""
        ...


def error_text(body: bytes) -> str:
    """The error message out of an error body, whatever the server's JSON dialect."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            err = err.get("message") or json.dumps(err)
        if err is not None:
            return str(err)[:300]
    return text[:300]


def api_root(url: str, *endpoint_suffixes: str) -> str:
    """The `/v1` root of an OpenAI-style URL given as a base, a `/v1` root or a full endpoint."""
    url = url.rstrip("/")
    for suffix in endpoint_suffixes:
        if url.endswith(suffix):
            url = url[: -len(suffix)].rstrip("/")
            break
    return url if url.endswith("/v1") else url + "/v1"


class _HTTPChat:
    """Shared plumbing: one streamed POST with uniform error mapping."""

    kind = "llm"

    def __init__(self, base_url: str, model: str, client: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.client = client
        self._headers: dict[str, str] = {}

    def _where(self) -> str:
        return f"{self.kind} at {self.base_url}"

    def _transport_error(self, exc: httpx.HTTPError) -> LLMError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return LLMError(f"{self._where()} unreachable: {exc or type(exc).__name__}")
        if isinstance(exc, httpx.TimeoutException):
            return LLMError(f"{self._where()} timed out ({type(exc).__name__})")
        return LLMError(f"{self._where()} failed: {type(exc).__name__}: {exc}")

    async def _open(
        self, method: str, url: str, body: Any | None, timeout: Any = None
    ) -> httpx.Response:
        """Send and return the streamed response (status 200), retrying one stale connection.

        A server may close a kept-alive connection just as we reuse it (llama.cpp's
        httplib does this after streamed replies); nothing was generated yet, so one
        retry on a fresh connection is safe.
        """
        kwargs: dict[str, Any] = {"headers": self._headers}
        if timeout is not None:
            kwargs["timeout"] = timeout
        request = self.client.build_request(method, url, json=body, **kwargs)
        for attempt in (1, 2):
            try:
                response = await self.client.send(request, stream=True)
                break
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                if attempt == 2:
                    raise self._transport_error(exc) from exc
                log.debug("%s: stale connection (%s), retrying", self._where(), exc)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from exc
        if response.status_code != 200:
            try:
                body_bytes = await response.aread()
            except httpx.HTTPError:
                body_bytes = b""
            finally:
                await response.aclose()
            raise LLMError(
                f"{self._where()}: HTTP {response.status_code}: {error_text(body_bytes)}",
                status=response.status_code,
            )
        return response

    async def _get_json(self, url: str) -> dict[str, Any]:
        response = await self._open("GET", url, None)
        try:
            raw = await response.aread()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        finally:
            await response.aclose()
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise LLMError(f"{self._where()}: {url} returned no JSON object: {raw[:100]!r}")
        return data


def _log_timings(timings: object) -> None:
    """llama.cpp's own count of a request's prompt: what its prompt cache saved."""
    if not isinstance(timings, dict):
        return
    read, cached, ms = (timings.get(k) for k in ("prompt_n", "cache_n", "prompt_ms"))
    if all(type(v) in (int, float) for v in (read, cached, ms)):
        log.debug("llama.cpp read %d prompt tokens in %.0f ms, %d from its cache", read, ms, cached)


class OpenAIChat(_HTTPChat):
    """`/v1/chat/completions` with SSE streaming (llama.cpp server, vLLM, LM Studio, ...).

    `base_url` may be the server's base, its `/v1` root or the full `/v1/chat/completions`.
    `repeat_penalty` is a llama.cpp extension that keeps tiny models like SmolLM2 from
    looping; `frequency_penalty` is standard OpenAI.
    `extra` is merged into every request body (e.g. {"top_k": 40}).
    """

    kind = "openai-compatible server"

    def __init__(
        self,
        base_url: str,
        model: str,
        client: httpx.AsyncClient,
        extra: dict[str, Any] | None = None,
        *,
        repeat_penalty: float | None = None,
        frequency_penalty: float | None = None,
        api_key: str | None = None,
    ) -> None:
        super().__init__(base_url, model, client)
        self.api_root = api_root(self.base_url, "/chat/completions")
        self.extra = dict(extra or {})
        if repeat_penalty is not None:
            self.extra["repeat_penalty"] = repeat_penalty
        if frequency_penalty is not None:
            self.extra["frequency_penalty"] = frequency_penalty
        if api_key:
            # Only ever sent as a header; never part of an error message or a log line.
            self._headers["Authorization"] = f"Bearer {api_key}"

    async def stream_chat(
        self, messages: list[Message], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str]:
        """Yield `choices[0].delta.content` pieces until `data: [DONE]`."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "max_tokens": max_tokens,
            "temperature": temperature,
            **self._fields(),
        }
        response = await self._open("POST", self.api_root + "/chat/completions", body)
        finished = False
        try:
            async for line in response.aiter_lines():
                # After [DONE], read on to the end of the body so the connection is reused.
                if finished:
                    continue
                if line.startswith("error:"):  # llama.cpp's SSE error line
                    raise LLMError(f"{self._where()}: {error_text(line[6:].encode())}")
                if not line.startswith("data:"):
                    continue  # blank separators, ": ping" comments, "event:" lines
                data = line[5:].strip()
                if data == "[DONE]":
                    finished = True
                    continue
                try:
                    chunk = json.loads(data)
                except ValueError as exc:
                    raise LLMError(f"{self._where()}: bad SSE data: {data[:100]!r}") from exc
                if not isinstance(chunk, dict):
                    raise LLMError(f"{self._where()}: bad SSE data: {data[:100]!r}")
                if "error" in chunk:
                    raise LLMError(f"{self._where()}: {error_text(data.encode())}")
                if "timings" in chunk and log.isEnabledFor(logging.DEBUG):
                    _log_timings(chunk["timings"])
                choices = chunk.get("choices") or []
                if not choices:
                    continue  # e.g. a final usage-only chunk
                delta = choices[0].get("delta") or {}
                content = delta.get("content")
                if content:
                    yield content
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        finally:
            await response.aclose()

    def _fields(self) -> dict[str, Any]:
        """What this server's requests carry besides the standard fields."""
        return self.extra

    async def preload(self) -> None:
        """OpenAI-style servers load their model themselves; just check one is there."""
        await self.health()

    async def health(self) -> str:
        """GET /v1/models."""
        data = await self._get_json(self.api_root + "/models")
        models = [m.get("id", "?") for m in data.get("data", []) if isinstance(m, dict)]
        served = f" (serving {', '.join(models)})" if models else ""
        return f"{self.describe()}{served}"

    def describe(self) -> str:
        """E.g. "openai-compatible server at http://127.0.0.1:8080, model smollm2"."""
        return f"{self._where()}, model {self.model}"


class LlamaCppChat(OpenAIChat):
    """A llama.cpp server (the embedded one): it keeps each conversation's prompt in a slot's
    cache, so the next turn's prompt can be evaluated ahead of time, in the server's idle
    time: a warm-up waits while any reply is being generated, and one under way is stopped
    (and tried again later) when a reply starts, so it never slows a caller who is waiting.
    With ``slots`` (the server's), each call's requests go to a slot of its own
    (:mod:`aicallerd.engines.affinity`).
    """

    def __init__(self, *args: Any, slots: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = SlotTable(slots)
        self._replies = 0  # streams under way, warm-ups not counted
        self._idle = trio.Event()
        self._idle.set()
        self._warming: set[trio.CancelScope] = set()

    def _fields(self) -> dict[str, Any]:
        slot = self._slots.slot_for(LEASE.get())
        return self.extra if slot is None else {**self.extra, "id_slot": slot}

    async def stream_chat(
        self, messages: list[Message], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str]:
        self._replies += 1
        if self._replies == 1:
            self._idle = trio.Event()
        for scope in self._warming:
            scope.cancel()
        try:
            stream = super().stream_chat(messages, max_tokens=max_tokens, temperature=temperature)
            async with aclosing(stream):
                async for delta in stream:
                    yield delta
        finally:
            self._replies -= 1
            if not self._replies:
                self._idle.set()

    async def warm_prompt(self, messages: list[Message]) -> None:
        """Have the server evaluate ``messages`` into its cache (one token is generated and
        dropped) once no reply is being generated: a later request that extends them
        evaluates only the new part. On 2 cores that was 110-150 ms to the first token
        instead of 160-950 ms."""
        while True:
            await self._idle.wait()
            if self._replies:  # one started while this task was being woken
                continue
            with trio.CancelScope() as scope:
                self._warming.add(scope)
                try:
                    stream = super().stream_chat(messages, max_tokens=1, temperature=0.0)
                    async with aclosing(stream):
                        async for _ in stream:
                            pass
                    return
                finally:
                    self._warming.discard(scope)


class OllamaChat(_HTTPChat):
    """Ollama's native `/api/chat` (NDJSON), which honours `keep_alive` and `num_predict`.

    `base_url` may be the server's base or the full `/api/chat` endpoint (the seed's
    OLLAMA_URL). `options` is merged into the request's `options` (e.g. {"repeat_penalty": 1.1}).
    """

    kind = "ollama"

    def __init__(
        self,
        base_url: str,
        model: str,
        client: httpx.AsyncClient,
        keep_alive: str = "30m",
        *,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(base_url.rstrip("/").removesuffix("/api/chat"), model, client)
        self.keep_alive = keep_alive
        self.options = dict(options or {})
        self.last_stats: dict[str, Any] = {}

    async def stream_chat(
        self, messages: list[Message], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str]:
        """Yield `message.content` pieces until the `done: true` line."""
        body = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "keep_alive": self.keep_alive,
            "options": {**self.options, "temperature": temperature, "num_predict": max_tokens},
        }
        response = await self._open("POST", self.base_url + "/api/chat", body)
        finished = False
        try:
            async for line in response.aiter_lines():
                # After the done line, read on to the end of the body so the connection is reused.
                if finished or not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError as exc:
                    raise LLMError(f"{self._where()}: bad NDJSON line: {line[:100]!r}") from exc
                if not isinstance(item, dict):
                    raise LLMError(f"{self._where()}: bad NDJSON line: {line[:100]!r}")
                if "error" in item:
                    raise LLMError(f"{self._where()}: {item['error']}")
                content = (item.get("message") or {}).get("content")
                if content:
                    yield content
                if item.get("done"):
                    self.last_stats = {
                        k: item[k]
                        for k in ("done_reason", "eval_count", "eval_duration", "load_duration")
                        if k in item
                    }
                    finished = True
            if not finished:
                raise LLMError(f"{self._where()}: stream ended without a done line")
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        finally:
            await response.aclose()

    async def preload(self) -> None:
        """An empty `messages` list makes Ollama load the model and keep it for `keep_alive`."""
        body = {"model": self.model, "messages": [], "stream": False, "keep_alive": self.keep_alive}
        response = await self._open(
            "POST", self.base_url + "/api/chat", body, timeout=PRELOAD_TIMEOUT
        )
        try:
            raw = await response.aread()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        finally:
            await response.aclose()
        for line in raw.splitlines():
            if line.strip():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict) and "error" in item:
                    raise LLMError(f"{self._where()}: {item['error']}")

    async def health(self) -> str:
        """GET /api/version and /api/tags; fails if the model has not been pulled."""
        version = (await self._get_json(self.base_url + "/api/version")).get("version", "?")
        tags = await self._get_json(self.base_url + "/api/tags")
        names = {m.get("name", "") for m in tags.get("models", []) if isinstance(m, dict)}
        names |= {m.get("model", "") for m in tags.get("models", []) if isinstance(m, dict)}
        wanted = self.model if ":" in self.model else self.model + ":latest"
        if self.model not in names and wanted not in names:
            pulled = ", ".join(sorted(n for n in names if n)) or "none"
            raise LLMError(
                f"{self._where()}: model {self.model!r} is not pulled (have: {pulled}); "
                f"run: ollama pull {self.model}",
                status=404,
            )
        return f"ollama {version} at {self.base_url}, model {self.model}"

    def describe(self) -> str:
        """E.g. "ollama at http://127.0.0.1:11434, model gemma3:1b"."""
        return f"{self._where()}, model {self.model}"
