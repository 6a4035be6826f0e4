"""The bundled Q4_1 GGUF converted to Q8_0 (real gguf, real child process, real llama.cpp).

One real conversion (~6 s) into a temporary cache is shared by the module's tests; daemons and
the other tests use the default cache (~/.cache/aicaller), filled once per installed package.
"""

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import trio
from gguf import GGMLQuantizationType, GGUFReader, LlamaFileType, quants

from aicallerd.engines import bundled, gguf_q8
from aicallerd.engines.llama_server import EmbeddedLlamaServer

Q4_1, Q8_0 = GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q8_0
LOGGER = "aicallerd.engines.gguf_q8"


async def convert_while_ticking(src: Path) -> tuple[Path, float]:
    """cached_q8 in a worker thread, as the daemon runs it, and the trio loop's longest gap
    between two ticks of 20 ms meanwhile (the systemd watchdog is pinged from that loop)."""
    gaps = []

    async def tick() -> None:
        last = trio.current_time()
        while True:
            await trio.sleep(0.02)
            gaps.append(trio.current_time() - last)
            last = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        dst = await trio.to_thread.run_sync(gguf_q8.cached_q8, src)
        nursery.cancel_scope.cancel()
    return dst, max(gaps)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, float]]:
    """(cache directory, Q8_0 file, longest event-loop gap) after one real conversion."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CACHE_DIRECTORY", str(cache))
        dst, gap = trio.run(convert_while_ticking, bundled.llm_gguf())
        yield cache, dst, gap


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty cache directory the code under test uses."""
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "cache"))
    return tmp_path / "cache"


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_q4_1_tensors_become_q8_0_of_the_same_values(converted: tuple[Path, Path, float]) -> None:
    cache, dst, _ = converted
    src = bundled.llm_gguf()
    assert dst.parent == cache
    assert dst.name == gguf_q8.cached_name(src)
    assert dst.name.startswith("SmolLM2-135M-Instruct.Q8_0.")
    assert [p.name for p in cache.iterdir() if p.suffix != ".lock"] == [dst.name]  # no temp file

    before, after = GGUFReader(src), GGUFReader(dst)
    assert [t.name for t in after.tensors] == [t.name for t in before.tensors]
    converted_names = []
    for old, new in zip(before.tensors, after.tensors, strict=True):
        assert list(new.shape) == list(old.shape), old.name
        if old.tensor_type == Q4_1:
            assert new.tensor_type == Q8_0, old.name
            converted_names.append(old.name)
        else:  # F32 norms and the Q8_0 embeddings are copied as they are
            assert new.tensor_type == old.tensor_type, old.name
            assert np.array_equal(new.data, old.data), old.name
    assert len(converted_names) == 210
    fields = {k: f.contents() for k, f in after.fields.items() if not k.startswith("GGUF.")}
    assert fields.pop("general.file_type") == LlamaFileType.MOSTLY_Q8_0
    old_fields = {k: f.contents() for k, f in before.fields.items() if not k.startswith("GGUF.")}
    assert old_fields.pop("general.file_type") == LlamaFileType.MOSTLY_Q4_1
    assert fields == old_fields  # tokenizer, chat template, hyperparameters

    tensors = {t.name: t for t in before.tensors} | {"q8:" + t.name: t for t in after.tensors}
    for name in (converted_names[0], converted_names[-1]):
        q4 = quants.dequantize(tensors[name].data, Q4_1).reshape(-1, 32)
        q8 = quants.dequantize(tensors["q8:" + name].data, Q8_0).reshape(-1, 32)
        # Q8_0 stores a block of 32 as int8 q * d, d = max|w| / 127 rounded to fp16: each
        # weight is off by at most d/2 from rounding q, plus 127 * d * 2**-11 from d's fp16.
        d = np.abs(q4).max(axis=1, keepdims=True) / 127
        assert np.all(np.abs(q8 - q4) <= (0.5 + 127 * 2**-11) * d * 1.001 + 1e-12), name
        assert np.abs(q8 - q4).max() < 0.01 * np.abs(q4).max(), name


def test_the_conversion_leaves_the_event_loop_running(converted: tuple[Path, Path, float]) -> None:
    """~6 s of numpy in a child process: the daemon's loop (and its watchdog) keep going."""
    _, dst, gap = converted
    print(f"\nevent loop during the conversion: longest gap {gap * 1000:.0f} ms")
    assert gap < 2.0
    assert dst.stat().st_size > 100_000_000


def test_an_existing_conversion_is_reused(
    converted: tuple[Path, Path, float],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache, dst, _ = converted
    monkeypatch.setenv("CACHE_DIRECTORY", str(cache))
    mtime = dst.stat().st_mtime_ns

    def never(*args: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_q8, "_run_converter", never)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert gguf_q8.cached_q8(bundled.llm_gguf()) == dst
    assert dst.stat().st_mtime_ns == mtime
    assert caplog.records == []


def test_the_cached_name_follows_the_source(tmp_path: Path) -> None:
    src = tmp_path / "Model.Q4_1.gguf"
    src.write_bytes(b"x")
    first = gguf_q8.cached_name(src)
    assert first == gguf_q8.cached_name(src)
    assert gguf_q8.model_name(Path(first)) == "Model.Q8_0"
    assert gguf_q8.is_converted(Path(first)) and not gguf_q8.is_converted(src)
    os.utime(src, ns=(1, 1))  # a reinstalled or upgraded package
    assert gguf_q8.cached_name(src) != first


def test_a_file_that_is_not_gguf_runs_as_shipped_after_one_warning(
    cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bogus = tmp_path / "Bogus.Q4_1.gguf"
    bogus.write_bytes(b"not a GGUF file" * 100)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert gguf_q8.cached_q8(bogus) == bogus
    [warning] = warnings(caplog)
    assert "running Bogus.Q4_1.gguf as shipped" in warning
    assert "the conversion failed" in warning and "\n" not in warning
    assert not list(cache.glob("*.gguf")) and not list(cache.glob(".*.tmp"))


def test_a_conversion_that_takes_too_long_is_abandoned(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = bundled.llm_gguf()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert gguf_q8.cached_q8(src, timeout=0.05) == src
    [warning] = warnings(caplog)
    assert "took longer than 0.05 s" in warning
    assert not list(cache.glob("*.gguf"))


def test_without_the_gguf_package_the_model_runs_as_shipped(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    find_spec = gguf_q8.importlib.util.find_spec

    def hide_gguf(name: str, *args: object) -> object:
        return None if name == "gguf" else find_spec(name, *args)

    monkeypatch.setattr(gguf_q8.importlib.util, "find_spec", hide_gguf)
    src = bundled.llm_gguf()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert gguf_q8.cached_q8(src) == src
    [warning] = warnings(caplog)
    assert "'gguf' is not installed" in warning


def test_an_unwritable_cache_starts_the_shipped_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon never fails its start for the conversion: llama.cpp serves the Q4_1 file."""
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("")  # even root cannot create a directory here
    monkeypatch.setenv("CACHE_DIRECTORY", str(not_a_dir))
    with caplog.at_level(logging.INFO, logger="aicallerd.engines"):
        with EmbeddedLlamaServer(threads=1, ctx_size=512) as srv:
            assert srv.model_name == "SmolLM2-135M-Instruct.Q4_1"
            assert "SmolLM2-135M-Instruct.Q4_1.gguf, 1+1 threads" in srv.describe()
    [warning] = warnings(caplog)
    assert f"cache directory {not_a_dir}" in warning


def test_a_damaged_cached_file_starts_the_shipped_model(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache.mkdir()
    damaged = cache / gguf_q8.cached_name(bundled.llm_gguf())
    damaged.write_bytes(b"GGUF" + b"\0" * 1000)
    with caplog.at_level(logging.INFO, logger="aicallerd.engines"):
        with EmbeddedLlamaServer(threads=1, ctx_size=512) as srv:
            assert srv.model_name == "SmolLM2-135M-Instruct.Q4_1"
    [warning] = warnings(caplog)
    assert "could not load" in warning and "as shipped" in warning
    assert not damaged.exists()  # the next start converts again
