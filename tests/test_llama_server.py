"""The embedded llama.cpp server (xllamacpp) with the bundled SmolLM2, driven by OpenAIChat."""

import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import aclosing

import httpx
import pytest
import trio
import trio.testing

from aicallerd.engines.affinity import LEASE, SlotLease
from aicallerd.engines.llama_server import EmbeddedLlamaServer, LlamaServerError, default_threads
from aicallerd.engines.llm import LlamaCppChat, LLMError, OpenAIChat

SYSTEM = "You are a friendly phone assistant. Answer in one or two short sentences."
MESSAGES = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Hi, can you tell me what time you open tomorrow?"},
]
ENGLISH = {"the", "a", "you", "i", "to", "is", "we", "are", "and", "can", "of", "at", "open", "it"}


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedLlamaServer]:
    srv = EmbeddedLlamaServer(threads=2, ctx_size=2048)
    srv.start()
    yield srv
    srv.close()


def chat(server: EmbeddedLlamaServer, client: httpx.AsyncClient, **kw: object) -> OpenAIChat:
    return OpenAIChat(server.base_url, server.model_name, client, api_key=server.api_key, **kw)


async def stream(llm: OpenAIChat, max_tokens: int) -> tuple[list[str], float, float]:
    """(deltas, first-delta latency, total time)."""
    deltas: list[str] = []
    t0 = time.monotonic()
    first = 0.0
    async with aclosing(llm.stream_chat(MESSAGES, max_tokens=max_tokens, temperature=0.3)) as it:
        async for delta in it:
            if not deltas:
                first = time.monotonic() - t0
            deltas.append(delta)
    return deltas, first, time.monotonic() - t0


def test_start_is_quiet_and_close_stops_serving(capfd: pytest.CaptureFixture[str]) -> None:
    srv = EmbeddedLlamaServer()
    with srv:
        assert srv.running
        url = srv.base_url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert httpx.get(url + "/health", timeout=5).json() == {"status": "ok"}
        assert srv.load_seconds is not None and srv.load_seconds < 30
        first_key = srv.api_key
    out, err = capfd.readouterr()
    assert out == ""  # nothing on stdout, ever
    assert err == ""  # llama.cpp's info logs are off unless our logger is at DEBUG
    assert not srv.running
    with pytest.raises(LlamaServerError):
        _ = srv.base_url
    with pytest.raises(LlamaServerError):
        _ = srv.api_key
    with srv:  # every start draws a new key
        assert srv.api_key != first_key and len(srv.api_key) >= 40

    async def after_close() -> None:
        async with httpx.AsyncClient() as client:
            await OpenAIChat(url, "x", client).health()

    with pytest.raises(LLMError, match="unreachable"):
        trio.run(after_close)


def test_streams_an_english_reply_within_max_tokens(server: EmbeddedLlamaServer) -> None:
    async def go() -> tuple[list[str], float, float]:
        async with httpx.AsyncClient(timeout=30) as client:
            llm = chat(server, client, repeat_penalty=1.15)
            await stream(llm, 8)  # warm the prompt cache, as a first turn would
            return await stream(llm, 40)

    deltas, first, total = trio.run(go)
    text = "".join(deltas)
    assert text.strip()
    assert 1 <= len(deltas) <= 40  # llama.cpp streams one token per delta
    words = set(re.findall(r"[a-z']+", text.lower()))
    assert words & ENGLISH, text
    rate = (len(deltas) - 1) / max(total - first, 1e-6)
    print(f"\nllama.cpp: first token {first * 1000:.0f} ms, {rate:.0f} tokens/s: {text!r}")
    assert first < 5.0


def test_back_to_back_requests_reuse_or_retry(server: EmbeddedLlamaServer) -> None:
    """llama.cpp sometimes drops a kept-alive connection after a stream; no turn may fail."""

    async def go() -> list[str]:
        async with httpx.AsyncClient(timeout=30) as client:
            llm = chat(server, client)
            return ["".join((await stream(llm, 4))[0]) for _ in range(6)]

    replies = trio.run(go)
    assert all(r.strip() for r in replies)


def test_early_stop_frees_the_slot(server: EmbeddedLlamaServer) -> None:
    async def go() -> str:
        async with httpx.AsyncClient(timeout=30) as client:
            llm = chat(server, client)
            it = llm.stream_chat(MESSAGES, max_tokens=200, temperature=0.3)
            async with aclosing(it):
                async for _ in it:
                    break
            with trio.fail_after(10):
                return "".join((await stream(llm, 5))[0])

    assert trio.run(go).strip()


def test_a_warmed_prompt_leaves_only_the_callers_words_to_read(
    server: EmbeddedLlamaServer,
) -> None:
    """What the call does after each reply: the next prompt, up to the caller's (empty)
    message, is read into the server's cache; the turn's request then reads only its new
    words. Counted by llama.cpp itself (``timings``: tokens read from the cache, tokens
    evaluated), not timed."""
    history = [
        *MESSAGES,
        {"role": "assistant", "content": "We open at nine tomorrow morning, see you then!"},
        {"role": "user", "content": "And on Sunday, are you open too, or closed all day?"},
        {"role": "assistant", "content": "On Sunday we are closed, but Monday we open at nine."},
    ]
    turn = [*history, {"role": "user", "content": "Great, can I book a table for four?"}]

    def timings(messages: list[dict[str, str]]) -> dict[str, int]:
        body = {"messages": messages, "stream": True, "max_tokens": 1, "temperature": 0}
        headers = {"Authorization": f"Bearer {server.api_key}"}
        last: dict[str, int] = {}
        with httpx.stream(
            "POST", server.base_url + "/v1/chat/completions", json=body, headers=headers
        ) as r:
            for line in r.iter_lines():
                if line.startswith("data:") and "timings" in line:
                    last = json.loads(line[5:])["timings"]
        return last

    async def warm() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            llm = LlamaCppChat(server.base_url, server.model_name, client, api_key=server.api_key)
            await llm.warm_prompt([*history, {"role": "user", "content": ""}])

    trio.run(warm)
    read = timings(turn)
    assert read["cache_n"] > 60  # the system prompt and both exchanges
    assert read["prompt_n"] <= 20  # "Great, can I book a table for four?" and the template


def test_a_warm_up_uses_only_the_servers_idle_time(server: EmbeddedLlamaServer) -> None:
    """Under load a warm-up must not slow a caller who is waiting: it waits while a reply is
    being generated, and one under way is stopped when a reply starts, then sent again."""
    sent: list[int] = []  # max_tokens of each request, in the order they went out
    long_history = [*MESSAGES, {"role": "assistant", "content": "We open at nine. " * 150}]

    async def go() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            llm = LlamaCppChat(server.base_url, server.model_name, client, api_key=server.api_key)
            original, went_out = llm._open, trio.Event()

            async def recording(method: str, url: str, body: dict, **kw: object) -> object:
                sent.append(body["max_tokens"])
                went_out.set()
                return await original(method, url, body, **kw)

            llm._open = recording  # type: ignore[method-assign]
            async with trio.open_nursery() as nursery:
                reply = llm.stream_chat(MESSAGES, max_tokens=20, temperature=0.3)
                async with aclosing(reply):
                    await reply.__anext__()  # a reply is being generated ...
                    nursery.start_soon(
                        llm.warm_prompt, [*MESSAGES, {"role": "user", "content": ""}]
                    )
                    await trio.testing.wait_all_tasks_blocked()
                    assert sent == [20]  # ... so the warm-up waits
                    async for _ in reply:
                        pass
            assert sent == [20, 1]  # and goes once it is over

            async with trio.open_nursery() as nursery:
                went_out = trio.Event()
                nursery.start_soon(
                    llm.warm_prompt, [*long_history, {"role": "user", "content": ""}]
                )
                await went_out.wait()  # ~1,000 tokens to read: still under way ...
                reply = llm.stream_chat(MESSAGES, max_tokens=5, temperature=0.3)
                async with aclosing(reply):
                    async for _ in reply:
                        pass
            assert sent == [20, 1, 1, 5, 1]  # ... stopped for the reply, then sent again

    trio.run(go)


def test_health_and_describe(server: EmbeddedLlamaServer) -> None:
    async def go() -> str:
        async with httpx.AsyncClient(timeout=10) as client:
            return await chat(server, client).health()

    assert "SmolLM2-135M-Instruct" in trio.run(go)
    # The bundled Q4_1 runs as its cached Q8_0 copy (aicallerd.engines.gguf_q8).
    assert server.model_name == "SmolLM2-135M-Instruct.Q8_0"
    assert server.describe() == (
        "llama.cpp (xllamacpp) SmolLM2-135M-Instruct.Q8_0 (from Q4_1), 2+2 threads, ctx 2048"
    )


@pytest.mark.parametrize(
    ("cores", "threads"), [(1, (1, 1)), (2, (1, 2)), (4, (3, 4)), (16, (4, 4))]
)
def test_token_generation_leaves_a_core_to_the_call(
    monkeypatch: pytest.MonkeyPatch, cores: int, threads: tuple[int, int]
) -> None:
    """On 2 cores the LLM writes with one thread: its threads wait for each other after
    every operation, so sharing a core with the voice or the event loop halves its speed."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert default_threads() == threads
    srv = EmbeddedLlamaServer()
    assert (srv.threads, srv.batch_threads) == threads


def test_missing_model_file_is_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(LlamaServerError, match="does not exist"):
        EmbeddedLlamaServer(model_path="/nonexistent/model.gguf").start()


def test_requests_without_the_api_key_are_refused(server: EmbeddedLlamaServer) -> None:
    url = server.base_url + "/v1/chat/completions"
    body = {"model": server.model_name, "messages": MESSAGES, "max_tokens": 4}
    assert httpx.post(url, json=body, timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer " + server.api_key[:-1] + "x"}
    assert httpx.post(url, json=body, headers=wrong, timeout=10).status_code == 401
    right = {"Authorization": "Bearer " + server.api_key}
    assert httpx.post(url, json=body, headers=right, timeout=30).status_code == 200

    async def go() -> tuple[str, LLMError]:
        async with httpx.AsyncClient(timeout=30) as client:
            keyless = OpenAIChat(server.base_url, server.model_name, client)
            with pytest.raises(LLMError) as refused:
                await stream(keyless, 4)
            return "".join((await stream(chat(server, client), 4))[0]), refused.value

    text, refused = trio.run(go)
    assert refused.status == 401
    assert server.api_key not in str(refused)
    assert text.strip()


def test_close_right_after_start_does_not_hang() -> None:
    """A daemon stopped during start-up: httplib used to hang when stopped before serving."""
    srv = EmbeddedLlamaServer()

    def cycles() -> None:
        for _ in range(6):  # the old hang struck about one cycle in four
            srv.start()
            srv.close()

    worker = threading.Thread(target=cycles, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "start() + close() hung"
    assert not srv.running


def test_a_second_try_finds_the_calls_history_in_its_own_slot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reply refused whole is asked for again at once, while the server may still be
    stopping the first request. Without a slot named the second went to another, empty
    slot and read the whole prompt again (1.5 s on 2 cores); under the call's lease it waits
    for its own slot and reads nothing but what the cache lacks (llama.cpp's own count)."""
    caplog.set_level(logging.DEBUG, logger="aicallerd.engines.llm")
    history = [
        *MESSAGES,
        {"role": "assistant", "content": "We open at nine tomorrow morning. " * 8},
        {"role": "user", "content": "And on Sunday, are you open too, or closed all day?"},
    ]

    async def go() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            llm = LlamaCppChat(
                two_slots.base_url,
                two_slots.model_name,
                client,
                api_key=two_slots.api_key,
                slots=2,
            )
            LEASE.set(SlotLease())
            first = llm.stream_chat(history, max_tokens=40, temperature=0.3)
            async with aclosing(first):
                await first.__anext__()  # the first try is being written: refused, stopped
            second = llm.stream_chat(history, max_tokens=3, temperature=0.7)
            async with aclosing(second):
                async for _ in second:
                    pass

    with EmbeddedLlamaServer(threads=2, ctx_size=2048, parallel=2) as two_slots:
        trio.run(go)
    counts = [
        re.search(r"read (\d+) prompt tokens in \d+ ms, (\d+) from", r.message)
        for r in caplog.records
    ]
    ((read, cached),) = [(int(m[1]), int(m[2])) for m in counts if m]  # the first was cut off
    assert cached > 100 and read <= 2
