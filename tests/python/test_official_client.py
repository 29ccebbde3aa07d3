"""The official Python Socket.IO client (`python-socketio`) against a real node, over
long-polling alone, WebSocket alone, and polling upgraded to WebSocket: auth and its
refusal codes, rooms, messages, acks and their error codes, and tenants as walls.
"""

import time

import pytest
import socketio

from conftest import claims_for, sign, unique


def test_good_token_connects_and_the_transport_is_the_one_asked_for(node, clients, transports):
    tenant = unique("acme")
    alice = clients(node, transports).connect({"token": node.token("alice", tenant)})
    assert alice.sio.connected
    assert alice.ok("unread:get", {}) == {"counts": {}}
    if transports == ["polling"]:
        assert alice.transport() == "polling"
    if transports == ["websocket"]:
        assert alice.transport() == "websocket"


@pytest.mark.parametrize(
    "make_auth, code",
    [
        (lambda n: {}, "unauthorized"),
        (lambda n: {"token": "not-a-jwt"}, "unauthorized"),
        (lambda n: {"token": n.token("alice", "acme") + "x"}, "unauthorized"),
        (lambda n: {"token": n.token("alice", "acme", exp=1, iat=0)}, "token_expired"),
        (lambda n: {"token": sign(claims_for("alice", None), n.secret)}, "tenant_required"),
    ],
    ids=["no-token", "garbage", "bad-signature", "expired", "no-tenant"],
)
def test_bad_tokens_get_connect_error_with_the_code(node, clients, transports, make_auth, code):
    c = clients(node, transports)
    with pytest.raises(socketio.exceptions.ConnectionError):
        c.connect(make_auth(node))
    assert not c.sio.connected
    assert len(c.connect_errors) == 1, c.connect_errors
    message = c.connect_errors[0]["message"]
    assert message.startswith(code), message


def test_rooms_messages_and_acks(node, clients, transports):
    tenant = unique("acme")
    room = unique("room")
    alice = clients(node, transports).connect({"token": node.token("alice", tenant)})
    bob = clients(node, transports).connect({"token": node.token("bob", tenant)})

    created = alice.ok("room:create", {"room_id": room, "name": "Python", "visibility": "public"})
    assert created["room"]["id"] == room and created["room"]["owner_id"] == "alice"
    joined = bob.ok("room:join", {"room_id": room})
    assert joined["room"]["id"] == room
    members = alice.ok("room:members", {"room_id": room})["members"]
    assert {m["user_id"] for m in members} == {"alice", "bob"}

    sent = alice.ok("message:send", {"room_id": room, "body": "hello from python", "client_msg_id": "c1"})
    msg = sent["message"]
    assert (msg["seq"], msg["sender_id"], msg["body"]) == (1, "alice", "hello from python")
    got = bob.wait_for("message:new", lambda d: d["message"]["id"] == msg["id"])
    assert got["message"] == msg
    # A repeated client_msg_id returns the first message, never a duplicate.
    again = alice.ok("message:send", {"room_id": room, "body": "hello from python", "client_msg_id": "c1"})
    assert again["message"]["id"] == msg["id"]
    second = bob.ok("message:send", {"room_id": room, "body": "hi alice"})["message"]
    assert second["seq"] == 2
    history = alice.ok("message:history", {"room_id": room})["messages"]
    assert [m["seq"] for m in history] == [1, 2]

    assert bob.ok("receipt:read", {"room_id": room, "up_to_seq": 2}) == {"unread": 0}
    assert alice.wait_for("receipt:read", lambda d: d["user_id"] == "bob")["up_to_seq"] == 2
    assert bob.ok("room:leave", {"room_id": room}) == {}


def test_error_codes_come_back_in_the_ack(node, clients, transports):
    tenant = unique("acme")
    alice = clients(node, transports).connect({"token": node.token("alice", tenant)})
    carol = clients(node, transports).connect({"token": node.token("carol", tenant)})
    room = unique("private")
    alice.ok("room:create", {"room_id": room, "visibility": "private"})

    carol.fails("room:join", {"room_id": room}, "forbidden")
    carol.fails("message:send", {"room_id": room, "body": "let me in"}, "forbidden")
    alice.fails("room:join", {"room_id": unique("nowhere")}, "not_found")
    alice.fails("room:create", {"room_id": room, "visibility": "public"}, "conflict")
    # Malformed payloads: bad_request, and the connection stays.
    alice.fails("room:create", {"visibility": "secret"}, "bad_request")
    alice.fails("room:join", {"room_id": 7}, "bad_request")
    alice.fails("message:send", "not an object", "bad_request")
    alice.fails("message:history", {"room_id": room, "limit": 1000}, "bad_request")
    assert alice.sio.connected
    assert alice.ok("unread:get", {})["counts"] == {room: 0}


def test_tenants_are_walls(node, clients, transports):
    room = unique("shared-name")
    acme, globex = unique("acme"), unique("globex")
    alice = clients(node, transports).connect({"token": node.token("alice", acme)})
    bob = clients(node, transports).connect({"token": node.token("bob", acme)})
    eve = clients(node, transports).connect({"token": node.token("eve", globex)})
    mallory = clients(node, transports).connect({"token": node.token("mallory", globex)})
    alice.ok("room:create", {"room_id": room, "visibility": "public"})
    bob.ok("room:join", {"room_id": room})
    # The same room id in another tenant is another room: eve cannot join alice's, she
    # makes her own, and messages never cross.
    eve.fails("room:join", {"room_id": room}, "not_found")
    eve.ok("room:create", {"room_id": room, "visibility": "public"})
    mallory.ok("room:join", {"room_id": room})
    mine = alice.ok("message:send", {"room_id": room, "body": "acme only"})["message"]
    theirs = eve.ok("message:send", {"room_id": room, "body": "globex only"})["message"]
    assert mine["seq"] == theirs["seq"] == 1
    bob.wait_for("message:new", lambda d: d["message"]["id"] == mine["id"])
    mallory.wait_for("message:new", lambda d: d["message"]["id"] == theirs["id"])
    time.sleep(0.3)  # anything that would cross has had its time
    assert [d["message"]["body"] for e, d in bob.events if e == "message:new"] == ["acme only"]
    assert [d["message"]["body"] for e, d in mallory.events if e == "message:new"] == ["globex only"]
    assert [m["body"] for m in mallory.ok("message:history", {"room_id": room})["messages"]] == ["globex only"]
    assert [m["body"] for m in bob.ok("message:history", {"room_id": room})["messages"]] == ["acme only"]
