"""A fake Ollama that speaks its documented protocol on a real loopback socket.

Faults on cue besides those below: `first_byte_seconds` (a slow server) and `drop_after`
(the connection is cut after that many tokens).

`/api/chat` streams a scripted reply token by token as NDJSON (`done:false` lines, then a
final `done:true` line with eval_count/eval_duration), honours `options.num_predict`,
preloads on empty `messages`, and can be told to fail: unknown model (404), busy (503),
an error line mid-stream, or a stall before the first token. It also serves
`/api/version`, `/api/tags`, `/api/ps` and Ollama's OpenAI-compatible
`/v1/chat/completions` (SSE) and `/v1/models`. Every request is recorded.
"""

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from . import FakeHandler, LoopbackFake, Recorded

DEFAULT_REPLY = "Hello there! How can I help you today?"


def tokens_of(text: str) -> list[str]:
    """Split like a tokenizer would for streaming: words with their leading space."""
    return re.findall(r"\s*\S+", text)


class FakeOllama(LoopbackFake):
    """Configure by attribute: `reply`, `models`, `busy`, `error_after`, `stall`."""

    def __init__(
        self,
        reply: str = DEFAULT_REPLY,
        models: tuple[str, ...] = ("gemma3:1b",),
        version: str = "0.6.5",
    ) -> None:
        super().__init__()
        self.reply = reply
        self.models = set(models)
        self.version = version
        self.busy = False
        self.error_after: int | None = None  # send an error line after this many tokens
        self.error_message = "an error was encountered while running the model: unexpected EOF"
        self.stall = False  # hold the stream (after headers) until the fake stops
        self.first_byte_seconds = 0.0  # a slow server: nothing at all for this long
        self.drop_after: int | None = None  # cut the connection after this many tokens
        # /v1 only: after this many tokens, send nothing but SSE keep-alive comments
        self.stall_after: int | None = None
        # How /v1 reports an error mid-stream: "data" (OpenAI, vLLM) or "error" (llama.cpp).
        self.sse_error_field = "data"
        self.loaded: dict[str, str] = {}  # model -> keep_alive of the last request

    # -- routing -----------------------------------------------------------------------
    def handle(self, h: FakeHandler, rec: Recorded) -> None:
        if self.first_byte_seconds and rec.method == "POST":
            self.release.wait(self.first_byte_seconds)
        route = (rec.method, rec.path)
        if route == ("GET", "/api/version"):
            h.send_json(200, {"version": self.version})
        elif route == ("GET", "/api/tags"):
            h.send_json(200, {"models": [self._model_info(m) for m in sorted(self.models)]})
        elif route == ("GET", "/api/ps"):
            h.send_json(200, {"models": [self._model_info(m) for m in sorted(self.loaded)]})
        elif route == ("POST", "/api/chat"):
            self._chat(h, rec)
        elif route == ("GET", "/v1/models"):
            data = [
                {"id": m, "object": "model", "owned_by": "library"} for m in sorted(self.models)
            ]
            h.send_json(200, {"object": "list", "data": data})
        elif route == ("POST", "/v1/chat/completions"):
            self._openai_chat(h, rec)
        else:
            h.send_json(404, {"error": f"404 page not found: {rec.path}"})

    @staticmethod
    def _model_info(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "size": 815319791,
            "digest": "8648f39daa8f" + "0" * 52,
            "details": {"format": "gguf", "family": "gemma3", "parameter_size": "999.89M"},
        }

    @staticmethod
    def _now() -> str:
        return datetime.now(UTC).isoformat().replace("+00:00", "Z")

    def _check(self, h: FakeHandler, body: Any, openai: bool) -> bool:
        """Common request validation; sends the error response and returns False on failure."""

        def fail(status: int, message: str) -> bool:
            if openai:
                err = {"message": message, "type": "api_error", "param": None, "code": None}
                h.send_json(status, {"error": err})
            else:
                h.send_json(status, {"error": message})
            return False

        if not isinstance(body, dict):
            return fail(400, "invalid character 'x' looking for beginning of value")
        if self.busy:
            return fail(503, "server busy, please try again.  maximum pending requests exceeded")
        model = body.get("model")
        if not model:
            return fail(400, "model is required")
        if model not in self.models:
            return fail(404, f"model '{model}' not found")
        if not isinstance(body.get("messages", []), list):
            return fail(400, "messages must be a list")
        return True

    # -- native API --------------------------------------------------------------------
    def _chat(self, h: FakeHandler, rec: Recorded) -> None:
        body = rec.body
        if not self._check(h, body, openai=False):
            return
        model = body["model"]
        self.loaded[model] = str(body.get("keep_alive", "5m"))
        if not body.get("messages"):  # preload
            h.send_json(
                200,
                {
                    "model": model,
                    "created_at": self._now(),
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": "load",
                    "done": True,
                },
            )
            return
        options = body.get("options") or {}
        limit = int(options.get("num_predict", -1))
        toks = tokens_of(self.reply)
        reason = "stop"
        if 0 <= limit < len(toks):
            toks, reason = toks[:limit], "length"
        if body.get("stream", True) is False:
            h.send_json(
                200,
                {
                    "model": model,
                    "created_at": self._now(),
                    "message": {"role": "assistant", "content": "".join(toks)},
                    "done": True,
                    "done_reason": reason,
                    "eval_count": len(toks),
                    "eval_duration": 1_000_000 * len(toks),
                },
            )
            return
        h.start_chunked(200, "application/x-ndjson")
        if self.stall:
            self.release.wait(30)
            return
        started = time.monotonic_ns()

        def line(obj: dict[str, Any]) -> None:
            h.write_chunk(json.dumps(obj).encode() + b"\n")

        for i, tok in enumerate(toks):
            if self.drop_after is not None and i == self.drop_after:
                h.drop()
                return
            if self.error_after is not None and i == self.error_after:
                line({"error": self.error_message})
                h.end_chunked()
                return
            line(
                {
                    "model": model,
                    "created_at": self._now(),
                    "message": {"role": "assistant", "content": tok},
                    "done": False,
                }
            )
        line(
            {
                "model": model,
                "created_at": self._now(),
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": reason,
                "total_duration": time.monotonic_ns() - started + 2_000_000,
                "load_duration": 1_000_000,
                "prompt_eval_count": sum(len(m.get("content", "")) // 4 for m in body["messages"]),
                "prompt_eval_duration": 1_000_000,
                "eval_count": len(toks),
                "eval_duration": max(1, time.monotonic_ns() - started),
            }
        )
        h.end_chunked()

    # -- OpenAI-compatible API ---------------------------------------------------------
    def _openai_chat(self, h: FakeHandler, rec: Recorded) -> None:
        body = rec.body
        if not self._check(h, body, openai=True):
            return
        limit = body.get("max_tokens")
        toks = tokens_of(self.reply)
        reason = "stop"
        if limit is not None and 0 <= int(limit) < len(toks):
            toks, reason = toks[: int(limit)], "length"
        h.start_chunked(200, "text/event-stream")
        if self.stall:
            self.release.wait(30)
            return
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": body["model"]}

        def event(choices: list[dict[str, Any]], **extra: Any) -> None:
            data = json.dumps({**base, "created": int(time.time()), "choices": choices, **extra})
            h.write_chunk(f"data: {data}\n\n".encode())

        # A role-only first delta whose content is null, as llama.cpp sends.
        event([{"index": 0, "delta": {"role": "assistant", "content": None}}])
        h.write_chunk(b": keep-alive comment\n\n")
        for i, tok in enumerate(toks):
            if self.drop_after is not None and i == self.drop_after:
                h.drop()
                return
            if self.stall_after is not None and i == self.stall_after:
                while not self.release.wait(0.5):
                    h.write_chunk(b": keep-alive\n\n")
                return
            if self.error_after is not None and i == self.error_after:
                err = {"error": {"message": self.error_message, "type": "server_error"}}
                if self.sse_error_field == "error":
                    err = {"code": 500, "message": self.error_message, "type": "server_error"}
                h.write_chunk(f"{self.sse_error_field}: {json.dumps(err)}\n\n".encode())
                h.end_chunked()
                return
            event([{"index": 0, "delta": {"content": tok}, "finish_reason": None}])
        event([{"index": 0, "delta": {}, "finish_reason": reason}])  # content missing
        event([], usage={"completion_tokens": len(toks)})  # usage-only chunk, no choices
        h.write_chunk(b"data: [DONE]\n\n")
        h.end_chunked()
