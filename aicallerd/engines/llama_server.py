"""llama.cpp's own HTTP server, embedded in the daemon through xllamacpp.

`xllamacpp.Server(params)` loads the GGUF and starts llama.cpp's C++ server (httplib) on
loopback in background threads; it speaks the OpenAI-compatible API, so the daemon talks
to it with the same `OpenAIChat` client it would use for any other server. Inference runs
in llama.cpp's threads, never on the trio loop. The server stops when the `Server` object
is destroyed, which `close()` does.

Loopback is not private: any local user (or a process of another service) could connect
and drive the model. So every start draws a fresh random API key; llama.cpp refuses
requests without ``Authorization: Bearer <key>`` with 401 (all but /health, /v1/models
included), and the key is masked in our logs.

The bundled model ships as Q4_1, whose kernels are slow on x86: it runs as a Q8_0 copy made
once and cached on disk (`aicallerd.engines.gguf_q8`), or as shipped if that copy fails.
"""

import contextlib
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from aicallerd import logs
from aicallerd.engines import bundled, gguf_q8

log = logging.getLogger(__name__)

# llama.cpp log verbosity: 1 = errors only (to stderr), 3 = info, 4 = debug.
_QUIET = 1
_CHATTY = 3
# How long start() waits for the HTTP loop to answer once the model is loaded.
_SERVING_TIMEOUT = 10.0


def default_threads() -> tuple[int, int]:
    """(generation, prompt) threads: token generation leaves one core to everything else.

    ggml's threads meet at a barrier after every operation of every token, so one of them
    preempted stalls the others: with both of 2 cores asked for and one core busy (the event
    loop, the voice, Whisper, another call), SmolLM2-135M wrote 34 tokens a second against
    73 with one thread (113 against 77 on an idle box). On a phone line something else is
    always running. A prompt is short and evaluated in one burst, so it gets every core.
    """
    cores = len(os.sched_getaffinity(0))
    return max(1, min(cores - 1, 4)), max(1, min(cores, 4))


LLM_NICER = 5
"""How much nicer than the daemon the embedded server's threads run.

While a reply's first words are being voiced, the model goes on writing the rest of it,
which is heard seconds later; at equal priority the two share the cores and the voice's
first audio took twice as long (Piper under a streaming SmolLM2-135M on 2 cores: 399 and
664 ms for a 28- and a 51-character sentence, 226 and 370 alone; with the model's threads
5 nicer 270 and 399, 10 nicer 225 and 358). 5, not more: the model still gets a quarter
of a contended core, so another call's first token does not wait behind this call's voice
(four callers, 20 replies each run: p95 4.4 s at 0, 2.5 s at 5, 3.7 s with one apology at
10). Idle cores are shared regardless of nice values, so a bigger box loses nothing.
"""


class LlamaServerError(RuntimeError):
    """The embedded llama.cpp server could not start."""


class EmbeddedLlamaServer:
    """Run a GGUF model behind an OpenAI-compatible HTTP API on 127.0.0.1 (free port).

    `start()` blocks for the model load (~0.4 s for SmolLM2-135M) and xllamacpp holds
    the GIL meanwhile, so the trio loop stalls that long even when it runs in a worker
    thread: do it at startup. The first start with the bundled model also waits ~6 s for
    its Q8_0 conversion, in a child process: that wait leaves the GIL free. `close()` stops
    the server. Also a context manager. Clients must send `api_key`:
    ``OpenAIChat(srv.base_url, srv.model_name, http, api_key=srv.api_key)``.
    """

    def __init__(
        self,
        model_path: str = "bundled",
        threads: int | None = None,
        ctx_size: int = 2048,
        *,
        parallel: int = 1,
        repeat_penalty: float = 1.1,
    ) -> None:
        self.model_path = model_path
        generation, prompt = default_threads()
        self.threads = threads or generation
        self.batch_threads = threads or prompt
        self.ctx_size = ctx_size
        self.parallel = parallel
        self.repeat_penalty = repeat_penalty
        self.load_seconds: float | None = None
        self._server: Any = None
        self._base_url: str | None = None
        self._api_key: str | None = None
        self._path: Path | None = None  # the file llama.cpp runs (a Q8_0 copy of the bundled)
        self._lock = threading.Lock()

    def _resolve(self) -> Path:
        if self.model_path == "bundled":
            try:
                return bundled.llm_gguf()
            except bundled.BundledModelError as exc:
                raise LlamaServerError(f"bundled LLM: {exc}") from exc
        path = Path(self.model_path).expanduser()
        if not path.is_file():
            raise LlamaServerError(f"GGUF model file {path} does not exist")
        return path

    @property
    def model_name(self) -> str:
        """Name the server reports for its model: the GGUF file name without .gguf, e.g.
        "SmolLM2-135M-Instruct.Q8_0" for the bundled model once started (its cached Q8_0
        copy), "SmolLM2-135M-Instruct.Q4_1" before or when the conversion failed."""
        return gguf_q8.model_name(self._path or self._resolve())

    def start(self) -> None:
        """Load the model and start serving; idempotent."""
        with self._lock:
            if self._server is not None:
                return
            source = self._resolve()
            path = source
            if self.model_path == "bundled":
                path = gguf_q8.cached_q8(source)  # a child process; this thread only waits
            try:
                import xllamacpp
            except ImportError as exc:
                raise LlamaServerError(
                    "the Python package 'xllamacpp' is not installed (pip install xllamacpp)"
                ) from exc
            params = xllamacpp.CommonParams()
            params.n_ctx = self.ctx_size * self.parallel  # llama.cpp splits n_ctx per slot
            params.n_parallel = self.parallel
            params.cpuparams.n_threads = self.threads
            params.cpuparams_batch.n_threads = self.batch_threads
            params.hostnames = ["127.0.0.1"]
            params.port = 0  # let the OS pick a free port: no race with other processes
            api_key = secrets.token_urlsafe(32)
            logs.add_secret(api_key)
            params.api_keys = [api_key]
            params.offline = True  # never reach for Hugging Face
            params.ui = False
            params.endpoint_slots = False
            params.warmup = True
            # When a call's oldest exchanges are dropped from its prompt, the rest is still
            # in the slot's cache, only shifted: reuse it (chunks of 32+ tokens) instead of
            # evaluating the whole history again before the first token.
            params.n_cache_reuse = 32
            # Server-side default for requests that do not set one: SmolLM2-135M otherwise
            # drifts into copying itself within a few turns.
            params.sampling.penalty_repeat = self.repeat_penalty
            params.verbosity = _CHATTY if log.isEnabledFor(logging.DEBUG) else _QUIET
            started = time.monotonic()
            try:
                server = _load(xllamacpp, params, path)
            except LlamaServerError as exc:
                if path == source:
                    raise
                # A damaged cached copy must not stop the daemon; the next start converts again.
                log.warning("%s; running %s as shipped", exc, source.name)
                with contextlib.suppress(OSError):
                    path.unlink()
                path = source
                server = _load(xllamacpp, params, path)
            base_url = str(server.listening_address).rstrip("/")
            _wait_until_serving(base_url)
            self.load_seconds = time.monotonic() - started
            self._server = server
            self._api_key = api_key
            self._path = path
            self._base_url = base_url
            log.info(
                "%s listening on %s (%.2f s)", self.describe(), self._base_url, self.load_seconds
            )

    def close(self) -> None:
        """Stop the server and free the model (llama.cpp joins its threads)."""
        with self._lock:
            server, self._server = self._server, None
            self._base_url = None
            self._api_key = None
            # Dropping the last reference runs ~Server, which stops the HTTP loop.
            del server

    @property
    def base_url(self) -> str:
        """E.g. "http://127.0.0.1:40123" (no /v1; OpenAIChat adds it)."""
        if self._base_url is None:
            raise LlamaServerError("embedded llama.cpp server is not running")
        return self._base_url

    @property
    def api_key(self) -> str:
        """The bearer token this run of the server accepts (a new one on every start)."""
        if self._api_key is None:
            raise LlamaServerError("embedded llama.cpp server is not running")
        return self._api_key

    @property
    def running(self) -> bool:
        """True between start() and close()."""
        return self._server is not None

    def describe(self) -> str:
        """E.g. "llama.cpp (xllamacpp) SmolLM2-135M-Instruct.Q8_0 (from Q4_1), 1+2 threads,
        ctx 2048" (generation + prompt threads); the file name of any other GGUF, and of the
        bundled one before start or when it runs unconverted (...Q4_1.gguf)."""
        name = (self._path or Path(self.model_path)).name
        if self.model_path == "bundled" and self._path is None:
            name = bundled.LLM_GGUF_NAME
        elif self.model_path == "bundled" and gguf_q8.is_converted(Path(name)):
            name = f"{gguf_q8.model_name(Path(name))} (from {gguf_q8.SOURCE_TYPE})"
        threads = f"{self.threads}+{self.batch_threads} threads"
        return f"llama.cpp (xllamacpp) {name}, {threads}, ctx {self.ctx_size}"

    def __enter__(self) -> "EmbeddedLlamaServer":
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _load(xllamacpp: Any, params: Any, path: Path) -> Any:
    """Start `xllamacpp.Server` on ``path``, served under its `gguf_q8.model_name`."""
    params.model.path = str(path)
    params.model_alias = {gguf_q8.model_name(path)}
    try:
        return xllamacpp.Server(params)
    except Exception as exc:
        raise LlamaServerError(f"llama.cpp could not load {path}: {exc}") from exc


def _wait_until_serving(base_url: str) -> None:
    """Block until the HTTP loop answers (any status) on /health.

    `Server()` returns before httplib's listen loop runs, and destroying it in that window
    hangs for ever (httplib cannot stop a server that has not started listening), so a
    start() followed at once by close() - a daemon told to stop during start-up - would hang.
    """
    deadline = time.monotonic() + _SERVING_TIMEOUT
    while True:
        try:
            httpx.get(base_url + "/health", timeout=1.0)
            return
        except httpx.TransportError as exc:
            if time.monotonic() > deadline:
                raise LlamaServerError(
                    f"llama.cpp loaded the model but does not answer on {base_url}: {exc}"
                ) from exc
            time.sleep(0.01)
