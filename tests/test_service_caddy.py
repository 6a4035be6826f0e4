"""A real Caddy in front of the daemon, as deployed: a call over https:// and wss://.

The Caddyfile is the repository's, with only what a loopback test needs changed: high ports,
``tls internal`` (Caddy's own CA, trusted by the stand-in through its root certificate), and
the access log in the test's directory. The daemon's public URL is Caddy's, so Twilio's
signatures are checked exactly as in production, through the proxy.
"""

from __future__ import annotations

import os
import queue
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
import trio
from service_util import free_port, launch, wer
from speech import speak

from aicallerctl.testcall import Target, Utterance, place_call
from aicallerd.audio.mulaw import ulaw_decode
from aicallerd.twilio.signature import compute_signature

pytestmark = [
    pytest.mark.e2e,
    # aicallerctl.testcall hands httpx the CA file path, which httpx 0.28 deprecates.
    pytest.mark.filterwarnings("ignore:`verify=<str>` is deprecated:DeprecationWarning"),
    pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed"),
]

REPO_CADDYFILE = Path(__file__).resolve().parent.parent / "Caddyfile"
SITE = "{$AICALLER_DOMAIN:aicaller.example.net} {"
SAID = "What time do you open tomorrow?"


def test_caddyfile_is_valid():
    proc = subprocess.run(
        ["caddy", "validate", "--config", str(REPO_CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Valid configuration" in proc.stdout + proc.stderr


def loopback_caddyfile(
    tmp: Path, admin: int, http: int, https: int, source: Path = REPO_CADDYFILE
) -> str:
    """A shipped Caddyfile, moved to loopback high ports with Caddy's internal CA."""
    text = source.read_text()
    assert SITE in text and "/var/log/caddy/aicaller-access.log" in text
    text = text.replace(SITE, SITE + "\n\ttls internal")
    text = text.replace("/var/log/caddy/aicaller-access.log", str(tmp / "access.log"))
    options = (
        "{\n"
        f"\tadmin 127.0.0.1:{admin}\n"
        f"\thttp_port {http}\n"
        f"\thttps_port {https}\n"
        "\tskip_install_trust\n"
        "}\n"
    )
    return options + text


class Caddy:
    """A real Caddy on loopback running ``source`` (a shipped Caddyfile) with ``upstreams``
    (its environment variables naming where the daemons listen). Its ports are known at once
    (``url``); the process runs from `start` to `stop`."""

    def __init__(self, tmp: Path, upstreams: dict[str, str], source: Path = REPO_CADDYFILE) -> None:
        self.tmp = tmp
        self.admin, self.http, self.https = free_port(), free_port(), free_port()
        config = tmp / "Caddyfile"
        config.write_text(loopback_caddyfile(tmp, self.admin, self.http, self.https, source))
        self._config = config
        self._env = {
            **os.environ,
            "HOME": str(tmp),
            "XDG_DATA_HOME": str(tmp / "data"),
            "XDG_CONFIG_HOME": str(tmp / "config"),
            "AICALLER_DOMAIN": "localhost",
            **upstreams,
        }
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Run Caddy and return once it serves its site certificate."""
        self.proc = subprocess.Popen(
            ["caddy", "run", "--config", str(self._config), "--adapter", "caddyfile"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self._env,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        # Ready when its site certificate (from the internal CA) is in place.
        self.wait_for('"certificate obtained successfully","identifier":"localhost"')

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float = 60) -> str:
        while True:
            line = self._queue.get(timeout=timeout)
            if line is None:
                raise AssertionError("caddy exited:\n" + "".join(self.lines[-20:]))
            if needle in line:
                return line

    @property
    def url(self) -> str:
        return f"https://localhost:{self.https}"

    @property
    def root_cert(self) -> str:
        return str(self.tmp / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """(daemon, caddy): the daemon's public URL is Caddy's HTTPS address."""
    tmp = tmp_path_factory.mktemp("caddy")
    port = free_port()
    (tmp / "caddy").mkdir()
    caddy = Caddy(tmp / "caddy", {"AICALLER_UPSTREAM": f"127.0.0.1:{port}"})
    try:
        caddy.start()
        d = launch(tmp / "daemon", port=port, public_url=caddy.url)
        try:
            yield d, caddy
        finally:
            code = d.stop()
            assert code == 0, d.log_text()[-3000:]
    finally:
        caddy.stop()


def test_call_over_wss_through_caddy(deployed):
    d, caddy = deployed
    target = Target(connect=caddy.url, public_url=caddy.url, auth_token=d.auth_token)
    target.verify = caddy.root_cert
    # reply_timeout: generous, the reply is not what this test is about (a busy CI box).
    script = [Utterance(speak(SAID), SAID)]
    result = trio.run(lambda: place_call(target, script, reply_timeout=60))
    assert result.refused is None
    assert len(ulaw_decode(bytes(result.greeting_audio))) > 8000  # over a second of greeting
    assert len(result.turns) == 1 and result.turns[0].latency is not None
    line = d.wait_for(f"[{result.call_sid}] turn 1:", timeout=30)
    heard = line.split("caller=", 1)[1].split(" agent=", 1)[0].strip("'\"")
    assert wer(SAID, heard) <= 0.35, line
    # The stream URL Twilio was given is Caddy's wss:// address.
    assert f"public URL {caddy.url} (stream wss://localhost:{caddy.https}/ai_caller/stream)" in (
        d.wait_for("ready:")
    )


def test_signatures_are_checked_through_the_proxy(deployed):
    d, caddy = deployed
    params = {"CallSid": "CA" + "7" * 32, "From": "+15550001111", "To": "+15550002222"}
    forged = compute_signature("not-the-token", caddy.url + "/voice", params)
    # Signed for the daemon's own address instead of the public one: also refused.
    wrong_url = compute_signature(d.auth_token, d.base_url + "/voice", params)
    good = compute_signature(d.auth_token, caddy.url + "/voice", params)
    with httpx.Client(verify=ssl.create_default_context(cafile=caddy.root_cert)) as client:
        for signature in (forged, wrong_url):
            r = client.post(
                caddy.url + "/voice", data=params, headers={"X-Twilio-Signature": signature}
            )
            assert r.status_code == 403
        ok = client.post(caddy.url + "/voice", data=params, headers={"X-Twilio-Signature": good})
        assert ok.status_code == 200 and "<Connect><Stream" in ok.text
        assert f'url="wss://localhost:{caddy.https}/ai_caller/stream"' in ok.text


def test_plain_http_is_redirected_and_nothing_else_is_exposed(deployed):
    _, caddy = deployed
    r = httpx.get(f"http://localhost:{caddy.http}/voice")
    assert r.status_code in (301, 308)
    assert r.headers["Location"].startswith("https://localhost")
    with httpx.Client(verify=ssl.create_default_context(cafile=caddy.root_cert)) as client:
        assert client.get(caddy.url + "/health").status_code == 404
