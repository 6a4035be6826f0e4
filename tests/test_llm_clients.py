"""OllamaChat and OpenAIChat against a fake Ollama on a real loopback socket, under trio."""

from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing
from typing import Any

import httpx
import pytest
import trio
from fakes.ollama_server import DEFAULT_REPLY, FakeOllama, tokens_of

from aicallerd.engines.llm import ChatClient, LLMError, OllamaChat, OpenAIChat
from bench.daemon import free_port

MESSAGES = [
    {"role": "system", "content": "You are a phone assistant."},
    {"role": "user", "content": "Hi there"},
]


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


def run_with_client(fn: Callable[[httpx.AsyncClient], Awaitable[Any]], **client_kw: Any) -> Any:
    """Run `fn(client)` under trio with a fresh shared client, as the daemon would."""

    async def main() -> Any:
        async with httpx.AsyncClient(**client_kw) as client:
            return await fn(client)

    return trio.run(main)


async def collect(llm: ChatClient, max_tokens: int = 100, temperature: float = 0.4) -> list[str]:
    out = []
    async with aclosing(
        llm.stream_chat(MESSAGES, max_tokens=max_tokens, temperature=temperature)
    ) as deltas:
        async for delta in deltas:
            out.append(delta)
    return out


# -- Ollama native ----------------------------------------------------------------------


def test_ollama_streams_tokens_and_sends_options(fake: FakeOllama) -> None:
    async def go(client: httpx.AsyncClient) -> tuple[list[str], OllamaChat]:
        llm = OllamaChat(fake.base_url, "gemma3:1b", client, keep_alive="30m")
        return await collect(llm, max_tokens=120, temperature=0.4), llm

    deltas, llm = run_with_client(go)
    assert deltas == tokens_of(DEFAULT_REPLY)
    assert "".join(deltas) == DEFAULT_REPLY
    (req,) = fake.requests
    assert (req.method, req.path) == ("POST", "/api/chat")
    assert req.body["model"] == "gemma3:1b"
    assert req.body["messages"] == MESSAGES
    assert req.body["stream"] is True
    assert req.body["keep_alive"] == "30m"
    assert req.body["options"] == {"temperature": 0.4, "num_predict": 120}
    assert llm.last_stats["eval_count"] == len(deltas)
    assert llm.last_stats["done_reason"] == "stop"
    assert isinstance(llm, ChatClient)


def test_ollama_extra_options_and_num_predict_cap(fake: FakeOllama) -> None:
    async def go(client: httpx.AsyncClient) -> tuple[list[str], OllamaChat]:
        llm = OllamaChat(fake.base_url, "gemma3:1b", client, options={"repeat_penalty": 1.1})
        return await collect(llm, max_tokens=3), llm

    deltas, llm = run_with_client(go)
    assert len(deltas) == 3
    assert llm.last_stats["done_reason"] == "length"
    opts = fake.requests[0].body["options"]
    assert opts == {"repeat_penalty": 1.1, "temperature": 0.4, "num_predict": 3}


def test_ollama_unknown_model_is_404_with_ollamas_message(fake: FakeOllama) -> None:
    async def go(client: httpx.AsyncClient) -> None:
        await collect(OllamaChat(fake.base_url, "nope:7b", client))

    with pytest.raises(LLMError) as info:
        run_with_client(go)
    assert info.value.status == 404
    assert "model 'nope:7b' not found" in str(info.value)
    assert fake.base_url in str(info.value)


def test_ollama_busy_is_503(fake: FakeOllama) -> None:
    fake.busy = True

    async def go(client: httpx.AsyncClient) -> None:
        await collect(OllamaChat(fake.base_url, "gemma3:1b", client))

    with pytest.raises(LLMError) as info:
        run_with_client(go)
    assert info.value.status == 503
    assert "server busy" in str(info.value)


def test_ollama_error_line_mid_stream(fake: FakeOllama) -> None:
    fake.error_after = 2
    got: list[str] = []

    async def go(client: httpx.AsyncClient) -> None:
        llm = OllamaChat(fake.base_url, "gemma3:1b", client)
        async with aclosing(llm.stream_chat(MESSAGES, max_tokens=50, temperature=0.2)) as it:
            async for delta in it:
                got.append(delta)

    with pytest.raises(LLMError, match="unexpected EOF"):
        run_with_client(go)
    assert got == tokens_of(DEFAULT_REPLY)[:2]


def test_ollama_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    async def go(client: httpx.AsyncClient) -> None:
        await collect(OllamaChat(url, "gemma3:1b", client))

    with pytest.raises(LLMError, match=rf"ollama at {url} unreachable: "):
        run_with_client(go)


def test_ollama_read_timeout(fake: FakeOllama) -> None:
    fake.stall = True

    async def go(client: httpx.AsyncClient) -> None:
        await collect(OllamaChat(fake.base_url, "gemma3:1b", client))

    with pytest.raises(LLMError, match="timed out"):
        run_with_client(go, timeout=httpx.Timeout(0.3, connect=2.0))


def test_ollama_preload_sends_empty_messages(fake: FakeOllama) -> None:
    async def go(client: httpx.AsyncClient) -> None:
        await OllamaChat(fake.base_url, "gemma3:1b", client, keep_alive="1h").preload()

    run_with_client(go)
    (req,) = fake.requests
    assert req.body["messages"] == []
    assert req.body["keep_alive"] == "1h"
    assert req.body["model"] == "gemma3:1b"
    assert fake.loaded == {"gemma3:1b": "1h"}


def test_ollama_preload_unknown_model_fails(fake: FakeOllama) -> None:
    async def go(client: httpx.AsyncClient) -> None:
        await OllamaChat(fake.base_url, "llama9", client).preload()

    with pytest.raises(LLMError, match="model 'llama9' not found") as info:
        run_with_client(go)
    assert info.value.status == 404


def test_ollama_health(fake: FakeOllama) -> None:
    async def go(client: httpx.AsyncClient) -> str:
        return await OllamaChat(fake.base_url, "gemma3:1b", client).health()

    text = run_with_client(go)
    assert "0.6.5" in text and "gemma3:1b" in text
    assert [r.path for r in fake.requests] == ["/api/version", "/api/tags"]


def test_ollama_health_reports_missing_model(fake: FakeOllama) -> None:
    async def go(client: httpx.AsyncClient) -> str:
        return await OllamaChat(fake.base_url, "qwen3:4b", client).health()

    with pytest.raises(LLMError, match="ollama pull qwen3:4b"):
        run_with_client(go)


def test_ollama_health_accepts_implicit_latest_tag() -> None:
    with FakeOllama(models=("smollm2:latest",)) as fake:

        async def go(client: httpx.AsyncClient) -> str:
            return await OllamaChat(fake.base_url, "smollm2", client).health()

        assert "smollm2" in run_with_client(go)


def test_ollama_reuses_connection_and_survives_early_stop(fake: FakeOllama) -> None:
    async def go(client: httpx.AsyncClient) -> list[str]:
        llm = OllamaChat(fake.base_url, "gemma3:1b", client)
        async with aclosing(llm.stream_chat(MESSAGES, max_tokens=50, temperature=0.2)) as it:
            async for _ in it:
                break  # the reply filter stops a reply early: the stream must close cleanly
        first = await collect(llm)
        second = await collect(llm)
        assert first == second
        return first

    assert "".join(run_with_client(go)) == DEFAULT_REPLY
    # The two complete requests went over one kept-alive connection.
    assert fake.requests[1].client_port == fake.requests[2].client_port


def test_stream_chat_is_cancellable(fake: FakeOllama) -> None:
    fake.stall = True

    async def go(client: httpx.AsyncClient) -> bool:
        llm = OllamaChat(fake.base_url, "gemma3:1b", client)
        with trio.move_on_after(0.2) as scope:
            await collect(llm)
        return scope.cancelled_caught

    assert run_with_client(go)


# -- OpenAI-compatible (Ollama's /v1) ------------------------------------------------------


def test_openai_streams_and_skips_null_and_missing_content(fake: FakeOllama) -> None:
    async def go(client: httpx.AsyncClient) -> list[str]:
        llm = OpenAIChat(
            fake.base_url + "/v1",
            "gemma3:1b",
            client,
            extra={"top_k": 40},
            repeat_penalty=1.15,
            frequency_penalty=0.3,
        )
        return await collect(llm, max_tokens=64, temperature=0.3)

    deltas = run_with_client(go)
    assert deltas == tokens_of(DEFAULT_REPLY)
    (req,) = fake.requests
    assert req.path == "/v1/chat/completions"
    body = req.body
    assert body["stream"] is True and body["max_tokens"] == 64 and body["temperature"] == 0.3
    assert body["messages"] == MESSAGES and body["model"] == "gemma3:1b"
    assert body["repeat_penalty"] == 1.15 and body["frequency_penalty"] == 0.3
    assert body["top_k"] == 40
    assert "authorization" not in req.headers


def test_openai_base_url_without_v1_and_api_key_header(fake: FakeOllama) -> None:
    async def go(client: httpx.AsyncClient) -> str:
        llm = OpenAIChat(fake.base_url, "gemma3:1b", client, api_key="secret-key")
        await collect(llm, max_tokens=2)
        return await llm.health()

    text = run_with_client(go)
    assert "gemma3:1b" in text
    assert [r.path for r in fake.requests] == ["/v1/chat/completions", "/v1/models"]
    assert fake.requests[0].headers["authorization"] == "Bearer secret-key"
    assert "secret-key" not in text


def test_openai_error_body_is_reported(fake: FakeOllama) -> None:
    async def go(client: httpx.AsyncClient) -> None:
        await collect(OpenAIChat(fake.base_url, "missing", client, api_key="secret-key"))

    with pytest.raises(LLMError) as info:
        run_with_client(go)
    assert info.value.status == 404
    assert "model 'missing' not found" in str(info.value)
    assert "secret-key" not in str(info.value)


@pytest.mark.parametrize("style", ["data", "error"])
def test_openai_error_event_mid_stream(fake: FakeOllama, style: str) -> None:
    fake.error_after = 1
    fake.sse_error_field = style

    async def go(client: httpx.AsyncClient) -> None:
        await collect(OpenAIChat(fake.base_url, "gemma3:1b", client))

    with pytest.raises(LLMError, match="unexpected EOF"):
        run_with_client(go)


def test_openai_connection_refused_and_timeout(fake: FakeOllama) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    async def refused(client: httpx.AsyncClient) -> None:
        await collect(OpenAIChat(url, "x", client))

    with pytest.raises(LLMError, match="unreachable"):
        run_with_client(refused)

    fake.stall = True

    async def stalled(client: httpx.AsyncClient) -> None:
        await collect(OpenAIChat(fake.base_url, "gemma3:1b", client))

    with pytest.raises(LLMError, match="timed out"):
        run_with_client(stalled, timeout=httpx.Timeout(0.3, connect=2.0))


def test_openai_preload_checks_server(fake: FakeOllama) -> None:
    async def go(client: httpx.AsyncClient) -> None:
        await OpenAIChat(fake.base_url, "gemma3:1b", client).preload()

    run_with_client(go)
    assert [r.path for r in fake.requests] == ["/v1/models"]


def test_describe() -> None:
    client = httpx.AsyncClient()
    assert OllamaChat("http://h:11434/", "gemma3:1b", client).describe() == (
        "ollama at http://h:11434, model gemma3:1b"
    )
    assert "model smollm2" in OpenAIChat("http://h:8080/v1", "smollm2", client).describe()
