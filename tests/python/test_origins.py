"""`server.cors_allowed_origins` seen by the official Python client: it sends no browser
`Origin` (or, over WebSocket, the node's own), so it connects as before; one that
claims a listed origin connects, one that claims another origin is refused.
"""

import pytest
import socketio

from conftest import Node, unique

APP = "https://app.example.com"


@pytest.fixture(scope="module")
def node():
    n = Node("origins", env={"SWITCHBOARD_CORS_ALLOWED_ORIGINS": APP})
    yield n
    n.stop()


def test_a_native_client_is_not_a_browser_and_connects(node, clients, transports):
    c = clients(node, transports).connect({"token": node.token("alice", unique("acme"))})
    assert c.ok("unread:get", {}) == {"counts": {}}


def test_a_listed_origin_connects(node, clients, transports):
    c = clients(node, transports, headers={"Origin": APP})
    c.connect({"token": node.token("alice", unique("acme"))})
    assert c.ok("unread:get", {}) == {"counts": {}}


def test_another_origin_is_refused_before_the_handshake(node, clients, transports):
    c = clients(node, transports, headers={"Origin": "https://evil.example"})
    with pytest.raises(socketio.exceptions.ConnectionError):
        c.connect({"token": node.token("alice", unique("acme"))})
    assert not c.sio.connected
