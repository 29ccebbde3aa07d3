"""Fixtures for the Python interop suite: a real `switchboard serve` per module, HS256
tokens minted the way an app's identity provider would, and official clients.

Run: cargo build -p switchboard-dataplane, then tests/python/run
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import socketio

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("SWITCHBOARD_BIN", str(REPO / "target" / "debug" / "switchboard"))
LOG_DIR = Path(
    os.environ.get("SWITCHBOARD_TEST_STATE", "/tmp/switchboard-python-tests")
) / "logs" / "python-tests"
# How long one emit may wait for its ack, and a connect for its namespace.
TIMEOUT = 5

# The transports a client can be held to: long-polling alone, WebSocket alone, and the
# official default (polling first, then the upgrade).
TRANSPORTS = {
    "polling": ["polling"],
    "websocket": ["websocket"],
    "upgrade": ["polling", "websocket"],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign(claims, secret):
    """An HS256 JWT over `claims`."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def claims_for(sub, tenant, **overrides):
    now = int(time.time())
    c = {"sub": sub, "tenant": tenant, "name": sub.capitalize(), "exp": now + 3600, "iat": now}
    c.update(overrides)
    return {k: v for k, v in c.items() if v is not None}


class Node:
    """A `switchboard serve` child process on a free loopback port."""

    def __init__(self, name, env=None):
        self.secret = "py-" + secrets.token_hex(20)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}-{self.port}.log"
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        child_env.update(
            SWITCHBOARD_JWT_SECRET=self.secret,
            SWITCHBOARD_DRAIN_WINDOW="500ms",
            RUST_LOG=os.environ.get("RUST_LOG", "info"),
            **(env or {}),
        )
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", f"127.0.0.1:{self.port}"],
            env=child_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{BIN} exited ({self.proc.returncode}); see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.url}/healthz did not answer; see {self.log_path}")
            time.sleep(0.05)

    def token(self, sub, tenant, **overrides):
        return sign(claims_for(sub, tenant, **overrides), self.secret)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Client:
    """An official `socketio.Client` on one namespace that records what it receives."""

    def __init__(self, node, transports, namespace="/chat", headers=None):
        self.node = node
        self.transports = transports
        self.namespace = namespace
        self.headers = headers or {}
        # websocket-client sends an Origin of its own (the node's) unless told not to:
        # a client that claims an origin sends that one alone, as a browser would.
        claims_origin = any(k.lower() == "origin" for k in self.headers)
        self.sio = socketio.Client(
            reconnection=False,
            websocket_extra_options={"suppress_origin": True} if claims_origin else {},
        )
        self.events = []
        self.connect_errors = []
        self.sio.on("connect_error", self.connect_errors.append, namespace=namespace)
        self.sio.on("*", self._any, namespace=namespace)

    def _any(self, event, *args):
        self.events.append((event, args[0] if args else None))

    def connect(self, auth):
        self.sio.connect(
            self.node.url,
            auth=auth,
            headers=self.headers,
            transports=self.transports,
            namespaces=[self.namespace],
            wait_timeout=TIMEOUT,
        )
        return self

    def call(self, event, payload):
        """Emit with an ack; the ack's `{ok, data | error}`."""
        return self.sio.call(event, payload, namespace=self.namespace, timeout=TIMEOUT)

    def ok(self, event, payload):
        res = self.call(event, payload)
        assert res.get("ok") is True, f"{event}: {res}"
        return res["data"]

    def fails(self, event, payload, code):
        res = self.call(event, payload)
        assert res.get("ok") is False, f"{event} should fail with {code}: {res}"
        assert res["error"]["code"] == code, f"{event}: {res}"
        assert isinstance(res["error"]["message"], str)
        return res["error"]

    def wait_for(self, event, pred=lambda d: True, timeout=3.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, data in list(self.events):
                if name == event and pred(data):
                    return data
            time.sleep(0.02)
        raise AssertionError(f"no {event} within {timeout}s; got {[e for e, _ in self.events]}")

    def transport(self):
        return self.sio.transport()

    def close(self):
        if self.sio.connected:
            self.sio.disconnect()


@pytest.fixture(scope="module")
def node(request):
    n = Node(request.module.__name__.rsplit(".", 1)[-1])
    yield n
    n.stop()


@pytest.fixture
def clients():
    """Make clients; every one is closed after the test."""
    made = []

    def make(node, transports, **kw):
        c = Client(node, transports, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture(params=list(TRANSPORTS))
def transports(request):
    return TRANSPORTS[request.param]


def unique(prefix):
    return f"{prefix}-{secrets.token_hex(4)}"
