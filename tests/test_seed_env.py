"""A seed `.env` works unchanged: `make run` exports it, `load_config` reads the result."""

import subprocess
from pathlib import Path

from aicallerd.config import load_config

SEED_ENV = """\
# The seed's .env, as users have it.
USE_LOCAL_WHISPER=false
OPENAI_API_KEY=sk-proj-seed
OLLAMA_URL=http://localhost:11434/api/chat
MODEL_NAME=gemma3:1b
ELEVENLABS_API_KEY=sk_seed_eleven
ELEVENLABS_VOICE_ID=21m00Tcm4TlvDq8ikWAM
ELEVEN_STREAMING=false
ELEVENLABS_SPEED=0.90
TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef
TWILIO_AUTH_TOKEN=seed-auth-token
TWILIO_FROM_NUMBER=+15551234567
"""


def exported_by_make_run(env_file: Path) -> dict[str, str]:
    """The variables `make run`'s recipe exports from .env (same shell lines)."""
    script = "set -a; if [ -f .env ]; then . ./.env; fi; set +a; env -0"
    out = subprocess.run(
        ["sh", "-c", script], cwd=env_file.parent, env={}, capture_output=True, check=True
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def test_seed_env_loads_unchanged(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(SEED_ENV)
    environ = exported_by_make_run(env_file)
    # The seed picked ElevenLabs and Ollama by having their settings; here they are chosen
    # in the config file (or LLM_BACKEND), the rest comes from .env unchanged.
    conf = tmp_path / "aicaller.conf"
    conf.write_text('[llm]\nbackend = "ollama"\n[tts]\nengine = "elevenlabs"\n')
    c = load_config(conf, environ)
    assert c.stt.use_local_whisper is False and c.stt.api_key == "sk-proj-seed"
    assert c.stt.api_url == "https://api.openai.com" and c.stt.api_model == "whisper-1"
    assert c.llm.url == "http://localhost:11434/api/chat" and c.llm.model == "gemma3:1b"
    assert c.tts.elevenlabs_api_key == "sk_seed_eleven"
    assert c.tts.elevenlabs_voice_id == "21m00Tcm4TlvDq8ikWAM"
    assert c.tts.elevenlabs_streaming is False and c.tts.elevenlabs_speed == 0.9
    assert c.twilio.auth_token == "seed-auth-token"
    assert c.twilio.from_number == "+15551234567"


def test_makefile_run_reads_dotenv() -> None:
    makefile = (Path(__file__).parent.parent / "Makefile").read_text()
    run = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert ". ./.env" in run and "set -a" in run
