"""Two real daemons behind one real Caddy running the shipped docs/Caddyfile.cluster.

What a multi-node deployment depends on: ``/voice`` is balanced over the nodes, each node's
TwiML points the stream back at itself (``[server] node`` in the stream path), and Caddy sends
that path to that node, so the stream token is always checked by the node that issued it.
"""

from __future__ import annotations

import shutil
import sqlite3
import ssl
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
import trio
from service_util import free_port, launch
from test_service_caddy import Caddy
from trio_websocket import HandshakeError, open_websocket_url

from aicallerctl.testcall import Target, place_call
from aicallerd.audio.mulaw import ulaw_decode
from aicallerd.config import ConfigError, load_config
from aicallerd.twilio.signature import compute_signature

CLUSTER_CADDYFILE = Path(__file__).resolve().parent.parent / "docs" / "Caddyfile.cluster"
NODES = ("node1", "node2")  # the names the shipped file routes
CALLS = 4

# aicallerctl.testcall hands httpx the CA file path, which httpx 0.28 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:`verify=<str>` is deprecated:DeprecationWarning")
needs_caddy = pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed")


def test_node_name_goes_into_the_stream_path():
    base = {"PUBLIC_BASE_URL": "https://calls.example.org"}
    single = load_config(None, base)
    assert single.stream_url == "wss://calls.example.org/ai_caller/stream"
    node = load_config(None, {**base, "AICALLER_NODE": "b-2"})
    assert node.stream_route == "/ai_caller/stream/b-2"
    assert node.stream_url == "wss://calls.example.org/ai_caller/stream/b-2"
    for bad in ("Node1", "a_b", "x" * 33, "a/b"):
        with pytest.raises(ConfigError, match="AICALLER_NODE"):
            load_config(None, {"AICALLER_NODE": bad})


@needs_caddy
def test_cluster_caddyfile_is_valid():
    proc = subprocess.run(
        ["caddy", "validate", "--config", str(CLUSTER_CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """({name: daemon}, caddy): both nodes' public URL is Caddy's HTTPS address."""
    tmp = tmp_path_factory.mktemp("cluster")
    (tmp / "caddy").mkdir()
    ports = {name: free_port() for name in NODES}
    upstreams = {f"AICALLER_{name.upper()}": f"127.0.0.1:{ports[name]}" for name in NODES}
    caddy = Caddy(tmp / "caddy", upstreams, CLUSTER_CADDYFILE)
    daemons = {}
    try:
        # Both load their models at once; each has its own directory (state, call log).
        for name in NODES:
            daemons[name] = launch(
                tmp / name,
                f'[server]\nnode = "{name}"',
                port=ports[name],
                public_url=caddy.url,
                max_calls=8,
                wait=False,
            )
        waiters = [threading.Thread(target=d.wait_ready, args=(240,)) for d in daemons.values()]
        for w in waiters:
            w.start()
        for w in waiters:
            w.join()
        for d in daemons.values():
            d.wait_ready(1)  # raises with the log tail if it did not come up
        # Caddy after the nodes: its first health check finds both ready (one that failed a
        # check would get no calls until the next, health_interval later).
        caddy.start()
        yield daemons, caddy
    finally:
        codes = {name: d.stop() for name, d in daemons.items()}
        caddy.stop()
    assert all(code == 0 for code in codes.values()), codes


def _target(caddy: Caddy, auth_token: str) -> Target:
    target = Target(connect=caddy.url, public_url=caddy.url, auth_token=auth_token)
    target.verify = caddy.root_cert
    return target


def _node_of(daemons, call_sid: str) -> list[str]:
    return [name for name, d in daemons.items() if f"[{call_sid}] " in d.log_text()]


@pytest.mark.e2e
@needs_caddy
def test_calls_spread_over_both_nodes_and_each_stream_reaches_its_node(cluster):
    daemons, caddy = cluster
    target = _target(caddy, next(iter(daemons.values())).auth_token)

    async def all_calls():
        results = [None] * CALLS

        async def one(i):
            results[i] = await place_call(target, [], reply_timeout=30)

        async with trio.open_nursery() as nursery:
            for i in range(CALLS):
                nursery.start_soon(one, i)
        return results

    results = trio.run(all_calls)
    by_node: dict[str, list[str]] = {name: [] for name in NODES}
    for result in results:
        assert result.refused is None, result.refused
        assert not result.closed_by_daemon
        assert len(ulaw_decode(bytes(result.greeting_audio))) > 8000  # the greeting, streamed
        # The node that offered the stream (answered /voice) is the one that ran the call.
        owners = _node_of(daemons, result.call_sid)
        assert len(owners) == 1, owners
        d = daemons[owners[0]]
        assert "stream offered" in d.wait_for(f"[{result.call_sid}] inbound call", timeout=5)
        d.wait_for(f"[{result.call_sid}] call ended", timeout=30)
        by_node[owners[0]].append(result.call_sid)
    assert all(by_node.values()), f"round robin left a node without calls: {by_node}"
    for name, d in daemons.items():
        assert "stream upgrade" not in d.log_text()  # no stream was refused anywhere
        assert f"stream {caddy.url.replace('https', 'wss')}/ai_caller/stream/{name})" in (
            d.ready_line
        )
        with sqlite3.connect(d.db_path) as db:
            logged = {sid for (sid,) in db.execute("SELECT sid FROM calls")}
        assert logged == set(by_node[name])  # each call log holds its own node's calls


@pytest.mark.e2e
@needs_caddy
def test_webhook_naming_a_node_reaches_it_and_its_twiml_points_back(cluster):
    daemons, caddy = cluster
    token = next(iter(daemons.values())).auth_token
    with httpx.Client(verify=ssl.create_default_context(cafile=caddy.root_cert)) as client:
        for i in range(3):
            params = {"CallSid": f"CA{i:032x}", "From": "+15550001111", "To": "+15550002222"}
            url = caddy.url + "/voice?node=node2"
            sig = compute_signature(token, url, params)
            r = client.post(url, data=params, headers={"X-Twilio-Signature": sig})
            assert r.status_code == 200 and "<Connect><Stream" in r.text
            assert f'url="wss://localhost:{caddy.https}/ai_caller/stream/node2"' in r.text
            daemons["node2"].wait_for(f"[{params['CallSid']}] inbound call", timeout=10)
            assert _node_of(daemons, params["CallSid"]) == ["node2"]
        # The unnamed stream path is routed nowhere.
        assert client.get(caddy.url + "/ai_caller/stream").status_code == 404


@pytest.mark.e2e
@needs_caddy
def test_a_node_serves_only_its_own_stream_path(cluster):
    daemons, caddy = cluster
    node2 = daemons["node2"]
    node1_url = f"wss://localhost:{caddy.https}/ai_caller/stream/node1"
    signature = compute_signature(node2.auth_token, node1_url, {})

    async def upgrade():
        async with open_websocket_url(
            f"ws://127.0.0.1:{node2.port}/ai_caller/stream/node1",
            extra_headers=[(b"x-twilio-signature", signature.encode())],
        ):
            pass

    with pytest.raises(HandshakeError):
        trio.run(upgrade)
