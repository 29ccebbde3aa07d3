// Interoperability of Switchboard's /chat namespace with the official socket.io-client
// (npm, v4.8.x), driven like an app would drive it. The contract is PROTOCOL.md
// (Transport, Authentication, Acks, /chat).
//
// Servers: the test starts `switchboard serve` itself (SWITCHBOARD_BIN, default
// target/debug/switchboard) on free loopback ports. Single-node tests use embedded mode;
// the cross-node test needs Redis (SWITCHBOARD_TEST_REDIS_URL, from
// `tests/env/envctl up redis` then `source tests/.state/env`).
//
// Run: cargo build -p switchboard-dataplane, then cd tests/node && npm test
//
// Scenario 2b guards a fixed bug: an event emitted the instant a socket connects must be
// answered (the server registers its handlers before sending CONNECT). No scenario waits
// after connecting unless SWITCHBOARD_TEST_CONNECT_SETTLE_MS says so.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import {
  ACK_CODES,
  CONNECT_SETTLE_MS,
  ack,
  clearSeen,
  closeAll,
  connectError,
  connectSocket,
  connectUser,
  disconnected,
  eventually,
  expectNone,
  fails,
  ok,
  scenario,
  seen,
  sleep,
  socketFor,
  waitFor,
} from './lib/client.mjs';
import { claimsFor, nowSecs, sign, token, unsigned } from './lib/jwt.mjs';
import { randomId, revoke, services, startNode, stopAll, writeConfig } from './lib/server.mjs';

/** Distinguishes this run's data in a shared Redis from earlier runs'. */
const RUN = randomId(4);


/** The embedded (single-node, in-memory) server most tests use. */
let node;

before(async () => {
  node = await startNode({ name: 'embedded' });
});

after(async () => {
  closeAll();
  await stopAll();
});

/** Scenarios close their sockets when they end (lib/client.mjs). */
const test = scenario;

/** The cross-node pair (two nodes, one Redis), started on first use. */
let shared;
async function sharedNodes(t) {
  const [redisUrl] = services(t, ['SWITCHBOARD_TEST_REDIS_URL'], 'the multi-node tests need Redis') ?? [];
  if (!redisUrl) return null;
  if (!shared) {
    const secret = `shared-secret-${randomId(16)}`;
    const adminToken = `admin-${randomId(16)}`;
    const common = { redisUrl, secret, adminToken };
    const [a, b] = await Promise.all([
      startNode({ ...common, name: 'shared-A', nodeId: `node-a-${RUN}` }),
      startNode({ ...common, name: 'shared-B', nodeId: `node-b-${RUN}` }),
    ]);
    shared = { a, b };
  }
  return shared;
}

/** Assert a connect_error message starts with the protocol code. */
function assertStartsWith(message, code) {
  assert.equal(typeof message, 'string', 'connect_error should carry a message');
  assert.ok(message.startsWith(code), `connect_error message should start with "${code}", got ${JSON.stringify(message)}`);
}

/** A public room made by `owner` and joined by `others`; returns the room id. */
async function publicRoom(owner, roomId, ...others) {
  const data = await ok(owner, 'room:create', { room_id: roomId, visibility: 'public' });
  assert.equal(data.room.id, roomId);
  for (const s of others) await ok(s, 'room:join', { room_id: roomId });
  return roomId;
}

// ---------------------------------------------------------------------------------------

test('1. authentication: refusals carry the protocol code, revocation, Authorization header', { timeout: 30_000 }, async (t) => {
  const secret = node.secret;
  const refusal = async (opts) => (await connectError(socketFor(node, opts))).message;

  await t.test('no token → unauthorized', async () => {
    assertStartsWith(await refusal({}), 'unauthorized');
  });

  await t.test('token signed with another secret → unauthorized', async () => {
    assertStartsWith(await refusal({ token: sign(claimsFor('alice', 'acme'), `another-secret-${randomId(16)}`) }), 'unauthorized');
  });

  await t.test('garbage token → unauthorized', async () => {
    assertStartsWith(await refusal({ token: 'not-a-jwt' }), 'unauthorized');
  });

  await t.test('expired an hour ago → token_expired', async () => {
    const now = nowSecs();
    assertStartsWith(await refusal({ token: token(secret, 'alice', 'acme', { exp: now - 3600, iat: now - 7200 }) }), 'token_expired');
  });

  await t.test('no tenant claim → tenant_required', async () => {
    assertStartsWith(await refusal({ token: token(secret, 'alice', 'acme', { tenant: undefined }) }), 'tenant_required');
  });

  await t.test('alg "none" → unauthorized', async () => {
    assertStartsWith(await refusal({ token: unsigned(claimsFor('alice', 'acme')) }), 'unauthorized');
  });

  await t.test('HS512 with the right secret, node configured for HS256 → unauthorized', async () => {
    assertStartsWith(await refusal({ token: sign(claimsFor('alice', 'acme'), secret, 'HS512') }), 'unauthorized');
  });

  await t.test('a valid token connects', async () => {
    const s = await connectUser(node, 'alice', 'acme-auth');
    await ok(s, 'unread:get', {});
  });

  await t.test('revoked jti: live socket dropped within 1 s, reconnect → token_revoked', async () => {
    const jti = `jti-revoke-${RUN}`;
    const live = await connectUser(node, 'rita', 'acme-auth', { claims: { jti } });
    // The same jti in another tenant is another token: revoking it must not touch ours.
    const other = await connectUser(node, 'rita', 'globex-auth', { claims: { jti } });
    await ok(live, 'unread:get', {});

    const refused = await revoke(node, { tenant: 'acme-auth', jti }, 'wrong-admin-token');
    assert.equal(refused.status, 401, `admin API without the right bearer: ${JSON.stringify(refused.body)}`);
    await sleep(200);
    assert.ok(live.connected, 'a refused revocation must not disconnect anyone');

    const t0 = Date.now();
    const res = await revoke(node, { tenant: 'acme-auth', jti });
    assert.equal(res.status, 200, `POST /admin/v1/revocations: ${JSON.stringify(res.body)}`);
    const reason = await disconnected(live, 2000);
    const elapsed = seen(live, 'disconnect')[0].at - t0;
    t.diagnostic(`live socket dropped ${elapsed} ms after the revocation POST (reason: ${reason})`);
    assert.ok(elapsed <= 1000, `the revoked socket should be dropped within 1 s, took ${elapsed} ms`);
    assert.equal(reason, 'io server disconnect');

    assertStartsWith(await refusal({ token: token(secret, 'rita', 'acme-auth', { jti }) }), 'token_revoked');
    await sleep(100);
    assert.ok(other.connected, 'revoking a jti in tenant acme-auth must not disconnect tenant globex-auth');
    await ok(other, 'unread:get', {});
  });

  await t.test('revoked session (sid) and user: live sockets dropped, old tokens refused', async () => {
    const sid = `sid-revoke-${RUN}`;
    const bySid = await connectUser(node, 'sam', 'acme-auth', { claims: { sid } });
    const t0 = Date.now();
    assert.equal((await revoke(node, { tenant: 'acme-auth', sid })).status, 200);
    await disconnected(bySid, 2000);
    assert.ok(seen(bySid, 'disconnect')[0].at - t0 <= 1000, 'sid revocation should drop the socket within 1 s');
    assertStartsWith(await refusal({ token: token(secret, 'sam', 'acme-auth', { sid }) }), 'token_revoked');

    const iat = nowSecs() - 5;
    const byUser = await connectUser(node, 'uma', 'acme-auth', { claims: { iat } });
    const t1 = Date.now();
    assert.equal((await revoke(node, { tenant: 'acme-auth', user_id: 'uma' })).status, 200);
    await disconnected(byUser, 2000);
    assert.ok(seen(byUser, 'disconnect')[0].at - t1 <= 1000, 'user revocation should drop the socket within 1 s');
    assertStartsWith(await refusal({ token: token(secret, 'uma', 'acme-auth', { iat }) }), 'token_revoked');
  });

  for (const transport of ['polling', 'websocket']) {
    await t.test(`Authorization: Bearer header instead of auth.token (${transport})`, async () => {
      const tok = token(secret, 'hank', 'acme-auth');
      const s = socketFor(node, { transports: [transport], extraHeaders: { Authorization: `Bearer ${tok}` } });
      s.user = 'hank';
      await connectSocket(s);
      await sleep(CONNECT_SETTLE_MS);
      assert.equal(s.io.engine.transport.name, transport);
      await ok(s, 'unread:get', {});
      const bad = socketFor(node, { transports: [transport], extraHeaders: { Authorization: `Bearer ${unsigned(claimsFor('hank', 'acme-auth'))}` } });
      assertStartsWith((await connectError(bad)).message, 'unauthorized');
    });
  }
});

// ---------------------------------------------------------------------------------------

test('2. transports: a long-polling client and a WebSocket client talk in one room', { timeout: 20_000 }, async () => {
  const tenant = 'acme-transports';
  const poller = await connectUser(node, 'paula', tenant, { transports: ['polling'] });
  const wsUser = await connectUser(node, 'walt', tenant, { transports: ['websocket'] });
  assert.equal(poller.io.engine.transport.name, 'polling');
  assert.equal(wsUser.io.engine.transport.name, 'websocket');

  const room = await publicRoom(poller, `mixed-${RUN}`, wsUser);

  const sent = await ok(poller, 'message:send', { room_id: room, body: 'hello over long-polling' });
  const atWs = await waitFor(wsUser, 'message:new', (d) => d.message?.id === sent.message.id);
  assert.deepEqual(atWs.data.message, sent.message);

  const reply = await ok(wsUser, 'message:send', { room_id: room, body: 'hello over websocket' });
  const atPoll = await waitFor(poller, 'message:new', (d) => d.message?.id === reply.message.id);
  assert.deepEqual(atPoll.data.message, reply.message);
  assert.equal(reply.message.seq, sent.message.seq + 1);
  // Polling must not have been upgraded behind our back.
  assert.equal(poller.io.engine.transport.name, 'polling');
});

// ---------------------------------------------------------------------------------------

test('2b. an event emitted in the connect callback gets its ack (websocket and polling)', { timeout: 30_000 }, async (t) => {
  // What apps do: socket.on('connect', () => socket.emit('room:join', ...)). Every request
  // event must be answered (PROTOCOL.md, Acks), also the very first one.
  // The loss is a race (a few percent of connections here), hence many attempts.
  const report = [];
  for (const [transport, attempts] of [['websocket', 200], ['polling', 60]]) {
    const outcomes = [];
    for (let i = 0; i < attempts; i++) {
      const s = socketFor(node, { token: token(node.secret, `eager-${transport}-${i}`, 'acme-eager'), transports: [transport] });
      const outcome = new Promise((resolve) => {
        s.on('connect', () => {
          s.timeout(3000).emit('unread:get', {}, (err, res) => {
            resolve(err ? 'no ack' : res?.ok ? 'ok' : `error ${res?.error?.code}`);
            s.close();
          });
        });
        s.on('connect_error', (e) => resolve(`connect_error ${e.message}`));
      });
      outcomes.push(outcome);
      await connectSocket(s).catch(() => {});
    }
    const results = await Promise.all(outcomes);
    const bad = results.filter((r) => r !== 'ok');
    t.diagnostic(`${transport}: ${bad.length} of ${attempts} first events unanswered (${[...new Set(bad)].join(', ') || 'none'})`);
    if (bad.length) report.push(`${transport}: ${bad.length} of ${attempts} events emitted in the connect callback got no ack (${[...new Set(bad)].join(', ')})`);
  }
  assert.deepEqual(report, [], 'the first event after connect must not be dropped');
});

// ---------------------------------------------------------------------------------------

test('3. rooms and messages on one node', { timeout: 30_000 }, async (t) => {
  const tenant = 'acme';
  const alice = await connectUser(node, 'alice', tenant);
  const bob = await connectUser(node, 'bob', tenant);
  const room = `general-${RUN}`;
  let first;

  await t.test('room:create gives the room with its owner; room:join admits bob', async () => {
    const before = Date.now();
    const created = await ok(alice, 'room:create', { room_id: room, name: 'General', visibility: 'public' });
    assert.equal(created.room.id, room);
    assert.equal(created.room.owner_id, 'alice');
    assert.equal(created.room.name, 'General');
    assert.equal(created.room.visibility, 'public');
    assert.ok(Math.abs(created.room.created_at - before) < 60_000, `created_at should be ms since the epoch, got ${created.room.created_at}`);
    const joined = await ok(bob, 'room:join', { room_id: room });
    assert.deepEqual(joined.room, created.room);
    await fails(alice, 'room:create', { room_id: room, visibility: 'public' }, 'conflict');
  });

  await t.test('message:send: stored with seq 1, bob gets message:new', async () => {
    const sent = await ok(alice, 'message:send', { room_id: room, body: 'hi bob', client_msg_id: `c1-${RUN}` });
    first = sent.message;
    assert.equal(first.seq, 1);
    assert.equal(first.room_id, room);
    assert.equal(first.sender_id, 'alice');
    assert.equal(first.body, 'hi bob');
    assert.equal(first.client_msg_id, `c1-${RUN}`);
    assert.equal(typeof first.id, 'string');
    assert.ok(Math.abs(first.ts - Date.now()) < 60_000, `ts should be ms since the epoch, got ${first.ts}`);
    const got = await waitFor(bob, 'message:new', (d) => d.message?.id === first.id);
    assert.deepEqual(got.data.message, first);
  });

  await t.test("alice's second device receives her message too", async () => {
    const laptop = await connectUser(node, 'alice', tenant);
    const sent = (await ok(alice, 'message:send', { room_id: room, body: 'from my phone' })).message;
    const got = await waitFor(laptop, 'message:new', (d) => d.message?.id === sent.id);
    assert.deepEqual(got.data.message, sent);
    await waitFor(bob, 'message:new', (d) => d.message?.id === sent.id);
    laptop.close();
  });

  await t.test('a repeated client_msg_id returns the first message, no second message:new', async () => {
    clearSeen(bob);
    const again = await ok(alice, 'message:send', { room_id: room, body: 'hi bob', client_msg_id: `c1-${RUN}` });
    assert.equal(again.message.id, first.id);
    assert.equal(again.message.seq, first.seq);
    await expectNone(bob, 'message:new', () => true, 400);
  });

  await t.test('seq rises by one; reply_to and meta round trip', async () => {
    const second = (await ok(alice, 'message:send', { room_id: room, body: 'second' })).message;
    assert.equal(second.seq, 3);
    const meta = { kind: 'quote', tags: ['a', 'b'], n: 3, nested: { ok: true } };
    const third = (await ok(bob, 'message:send', { room_id: room, body: 'answer', reply_to: 1, meta, client_msg_id: `b1-${RUN}` })).message;
    assert.equal(third.seq, 4, 'seq rises by one per room, whoever sends');
    assert.equal(third.reply_to, 1);
    assert.deepEqual(third.meta, meta);
    const atAlice = await waitFor(alice, 'message:new', (d) => d.message?.id === third.id);
    assert.equal(atAlice.data.message.reply_to, 1);
    assert.deepEqual(atAlice.data.message.meta, meta);
    const hist = await ok(alice, 'message:history', { room_id: room });
    assert.deepEqual(hist.messages.map((m) => m.seq), [1, 2, 3, 4]);
    assert.deepEqual(hist.messages[3], third);
  });

  const carol = await connectUser(node, 'carol', tenant);
  const dave = await connectUser(node, 'dave', tenant);
  const priv = `private-${RUN}`;

  await t.test('private room: members only until the owner invites; only the owner invites', async () => {
    const created = await ok(alice, 'room:create', { room_id: priv, visibility: 'private', members: ['bob'] });
    assert.equal(created.room.visibility, 'private');
    await fails(carol, 'room:join', { room_id: priv }, 'forbidden');
    await fails(carol, 'message:history', { room_id: priv }, 'forbidden');
    await fails(carol, 'message:send', { room_id: priv, body: 'let me in' }, 'forbidden');
    await fails(carol, 'room:members', { room_id: priv }, 'forbidden');
    // bob is a member but not the owner; dave is neither.
    await fails(bob, 'room:invite', { room_id: priv, user_ids: ['carol'] }, 'forbidden');
    await fails(dave, 'room:invite', { room_id: priv, user_ids: ['carol'] }, 'forbidden');
    await fails(carol, 'room:join', { room_id: priv }, 'forbidden');

    const invited = await ok(alice, 'room:invite', { room_id: priv, user_ids: ['carol'] });
    assert.equal(invited.room.id, priv);
    const joined = await ok(carol, 'room:join', { room_id: priv });
    assert.equal(joined.room.id, priv);
    const msg = (await ok(alice, 'message:send', { room_id: priv, body: 'welcome carol' })).message;
    await waitFor(carol, 'message:new', (d) => d.message?.id === msg.id);
    await fails(dave, 'room:join', { room_id: priv }, 'forbidden');
  });

  await t.test('room:members lists members with online flags; carol goes offline on disconnect', async () => {
    const members = (await ok(alice, 'room:members', { room_id: priv })).members;
    const byId = Object.fromEntries(members.map((m) => [m.user_id, m.online]));
    assert.deepEqual(byId, { alice: true, bob: true, carol: true });
    carol.disconnect();
    const offline = await eventually(async () => {
      const list = (await ok(alice, 'room:members', { room_id: priv })).members;
      return list.find((m) => m.user_id === 'carol')?.online === false ? list : null;
    }, 2000);
    assert.ok(offline, 'carol should be listed offline within 2 s of disconnecting');
    assert.deepEqual(Object.fromEntries(offline.map((m) => [m.user_id, m.online])), { alice: true, bob: true, carol: false });
  });

  await t.test('room:leave: bob stops receiving the room', async () => {
    assert.deepEqual(await ok(bob, 'room:leave', { room_id: room }), {});
    clearSeen(bob);
    await ok(alice, 'message:send', { room_id: room, body: 'bob has gone' });
    await expectNone(bob, 'message:new', () => true, 400);
    await fails(bob, 'message:send', { room_id: room, body: 'still here?' }, 'forbidden');
  });
});

// ---------------------------------------------------------------------------------------

test('4. cross-node: two nodes, one Redis', { timeout: 45_000 }, async (t) => {
  const nodes = await sharedNodes(t);
  if (!nodes) return;
  const { a, b } = nodes;
  const tenant = `acme-x${RUN}`;
  const room = `xroom-${RUN}`;
  const alice = await connectUser(a, 'alice', tenant);
  const bob = await connectUser(b, 'bob', tenant);
  await publicRoom(alice, room, bob);
  let lastSeen = 0;

  await t.test('a message sent on A reaches bob on B', async () => {
    const sent = (await ok(alice, 'message:send', { room_id: room, body: 'from A' })).message;
    assert.equal(sent.seq, 1);
    const got = await waitFor(bob, 'message:new', (d) => d.message?.id === sent.id);
    assert.deepEqual(got.data.message, sent);
    lastSeen = sent.seq;
  });

  await t.test('typing on B reaches alice on A', async () => {
    await ok(bob, 'typing:start', { room_id: room });
    const up = await waitFor(alice, 'typing:update', (d) => d.user_id === 'bob' && d.typing === true);
    assert.deepEqual(up.data, { room_id: room, user_id: 'bob', typing: true });
    const agg = await waitFor(alice, 'typing:aggregated', (d) => d.user_ids?.includes('bob'));
    assert.equal(agg.data.display_text, 'Bob is typing...');
    await ok(bob, 'typing:stop', { room_id: room });
    await waitFor(alice, 'typing:update', (d) => d.user_id === 'bob' && d.typing === false);
  });

  await t.test("bob's read receipt on B reaches alice on A", async () => {
    const res = await ok(bob, 'receipt:read', { room_id: room, up_to_seq: 1 });
    assert.equal(res.unread, 0);
    const got = await waitFor(alice, 'receipt:read', (d) => d.user_id === 'bob');
    assert.deepEqual(got.data, { room_id: room, user_id: 'bob', up_to_seq: 1 });
  });

  await t.test('message:history on B returns what was sent on A; room:members spans nodes', async () => {
    const hist = await ok(bob, 'message:history', { room_id: room });
    assert.deepEqual(hist.messages.map((m) => [m.seq, m.body, m.sender_id]), [[1, 'from A', 'alice']]);
    const members = (await ok(alice, 'room:members', { room_id: room })).members;
    assert.deepEqual(Object.fromEntries(members.map((m) => [m.user_id, m.online])), { alice: true, bob: true });
  });

  await t.test('catch-up: bob misses 5 messages while away and fetches exactly those', async () => {
    bob.disconnect();
    const offline = await eventually(async () => {
      const list = (await ok(alice, 'room:members', { room_id: room })).members;
      return list.find((m) => m.user_id === 'bob')?.online === false;
    }, 2000);
    assert.ok(offline, 'bob (on B) should show offline on A within 2 s of disconnecting');
    const missed = [];
    for (let i = 1; i <= 5; i++) missed.push((await ok(alice, 'message:send', { room_id: room, body: `missed ${i}` })).message);
    assert.deepEqual(missed.map((m) => m.seq), [2, 3, 4, 5, 6]);

    clearSeen(bob);
    await connectSocket(bob);
    await sleep(CONNECT_SETTLE_MS);
    const hist = await ok(bob, 'message:history', { room_id: room, after_seq: lastSeen });
    assert.deepEqual(hist.messages, missed, 'history after_seq should be exactly the missed messages, oldest first');
    // Live again after reconnecting (rooms are rejoined at connect).
    const live = (await ok(alice, 'message:send', { room_id: room, body: 'welcome back' })).message;
    await waitFor(bob, 'message:new', (d) => d.message?.id === live.id);
  });

  await t.test('before_seq pages backwards, oldest first in each page', async () => {
    const page = async (q) => (await ok(bob, 'message:history', { room_id: room, ...q })).messages.map((m) => m.seq);
    assert.deepEqual(await page({ before_seq: 8, limit: 3 }), [5, 6, 7]);
    assert.deepEqual(await page({ before_seq: 5, limit: 3 }), [2, 3, 4]);
    assert.deepEqual(await page({ before_seq: 2, limit: 3 }), [1]);
    assert.deepEqual(await page({ before_seq: 1, limit: 3 }), []);
    assert.deepEqual(await page({ after_seq: 2, before_seq: 6 }), [3, 4, 5]);
    assert.deepEqual(await page({ limit: 2 }), [6, 7]);
  });

  await t.test('the same client_msg_id sent through A then B stays one message', async () => {
    const aliceOnB = await connectUser(b, 'alice', tenant);
    const cid = `x-dup-${RUN}`;
    const one = (await ok(alice, 'message:send', { room_id: room, body: 'once', client_msg_id: cid })).message;
    const two = (await ok(aliceOnB, 'message:send', { room_id: room, body: 'once', client_msg_id: cid })).message;
    assert.equal(two.id, one.id);
    assert.equal(two.seq, one.seq);
  });

  await t.test('revocation posted to A drops the socket on B within 1 s', async () => {
    const jti = `x-jti-${RUN}`;
    const dave = await connectUser(b, 'dave', tenant, { claims: { jti } });
    const t0 = Date.now();
    const res = await revoke(a, { tenant, jti });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    await disconnected(dave, 2000);
    const elapsed = seen(dave, 'disconnect')[0].at - t0;
    t.diagnostic(`socket on B dropped ${elapsed} ms after the POST to A`);
    assert.ok(elapsed <= 1000, `took ${elapsed} ms`);
    const again = socketFor(b, { token: token(b.secret, 'dave', tenant, { jti }) });
    assertStartsWith((await connectError(again)).message, 'token_revoked');
  });
});

// ---------------------------------------------------------------------------------------

test('5. receipts and unread counts', { timeout: 30_000 }, async () => {
  const tenant = 'acme-receipts';
  const alice = await connectUser(node, 'alice', tenant);
  const bob = await connectUser(node, 'bob', tenant);
  const room = await publicRoom(alice, `rcpt-${RUN}`, bob);

  for (let i = 1; i <= 3; i++) await ok(alice, 'message:send', { room_id: room, body: `m${i}` });
  await waitFor(bob, 'message:new', (d) => d.message?.seq === 3);

  assert.equal((await ok(bob, 'unread:get', {})).counts[room], 3, "bob's unread after 3 messages");
  assert.deepEqual((await ok(bob, 'unread:get', { room_ids: [room] })).counts, { [room]: 3 });
  assert.equal((await ok(alice, 'unread:get', {})).counts[room], 0, 'the sender has read her own messages');

  // Read up to 2: one left, alice sees the receipt.
  assert.equal((await ok(bob, 'receipt:read', { room_id: room, up_to_seq: 2 })).unread, 1);
  const read = await waitFor(alice, 'receipt:read', (d) => d.user_id === 'bob');
  assert.deepEqual(read.data, { room_id: room, user_id: 'bob', up_to_seq: 2 });
  assert.equal((await ok(bob, 'unread:get', {})).counts[room], 1);

  // Delivered up to 3: alice sees receipt:delivered.
  assert.deepEqual(await ok(bob, 'message:delivered', { room_id: room, up_to_seq: 3 }), {});
  const delivered = await waitFor(alice, 'receipt:delivered', (d) => d.user_id === 'bob' && d.up_to_seq === 3);
  assert.deepEqual(delivered.data, { room_id: room, user_id: 'bob', up_to_seq: 3 });

  // A second room and a batch covering both.
  const room2 = await publicRoom(alice, `rcpt2-${RUN}`, bob);
  for (let i = 1; i <= 2; i++) await ok(alice, 'message:send', { room_id: room2, body: `n${i}` });
  clearSeen(alice);
  const batch = await ok(bob, 'receipt:batch', {
    receipts: [
      { room_id: room, up_to_seq: 3, kind: 'read' },
      { room_id: room2, up_to_seq: 1, kind: 'delivered' },
    ],
  });
  assert.deepEqual(batch.unread, { [room]: 0, [room2]: 2 });
  await waitFor(alice, 'receipt:read', (d) => d.room_id === room && d.user_id === 'bob' && d.up_to_seq === 3);
  await waitFor(alice, 'receipt:delivered', (d) => d.room_id === room2 && d.user_id === 'bob' && d.up_to_seq === 1);
  assert.deepEqual((await ok(bob, 'unread:get', { room_ids: [room, room2] })).counts, { [room]: 0, [room2]: 2 });

  // Privacy: bob stops sending read receipts; his unread counts still move.
  const privacy = (await ok(bob, 'privacy:set', { read_receipts: false })).privacy;
  assert.equal(privacy.read_receipts, false);
  assert.equal(privacy.typing_indicators, true, 'privacy:set must leave the other setting alone');
  for (let i = 4; i <= 5; i++) await ok(alice, 'message:send', { room_id: room, body: `m${i}` });
  clearSeen(alice);
  assert.equal((await ok(bob, 'receipt:read', { room_id: room, up_to_seq: 4 })).unread, 1);
  assert.deepEqual((await ok(bob, 'receipt:batch', { receipts: [{ room_id: room2, up_to_seq: 2, kind: 'read' }] })).unread, { [room2]: 0 });
  await expectNone(alice, 'receipt:read', () => true, 600);
  assert.deepEqual((await ok(bob, 'unread:get', {})).counts, { [room]: 1, [room2]: 0 });
});

// ---------------------------------------------------------------------------------------

test('6. typing indicators and aggregated text', { timeout: 30_000 }, async (t) => {
  const tenant = 'acme-typing';
  const names = { alice: 'Alice', bob: 'Bob', carol: 'Carol', dave: 'Dave' };
  const s = {};
  for (const [u, name] of Object.entries(names)) s[u] = await connectUser(node, u, tenant, { claims: { name } });
  const { alice, bob, carol, dave } = s;
  const room = await publicRoom(alice, `typing-${RUN}`, bob, carol, dave);

  await t.test('one, two and four typers', async () => {
    await ok(alice, 'typing:start', { room_id: room });
    const up = await waitFor(bob, 'typing:update', (d) => d.user_id === 'alice');
    assert.deepEqual(up.data, { room_id: room, user_id: 'alice', typing: true });
    const agg1 = await waitFor(bob, 'typing:aggregated', (d) => d.display_text === 'Alice is typing...');
    assert.deepEqual(agg1.data, { room_id: room, user_ids: ['alice'], display_text: 'Alice is typing...' });

    await ok(bob, 'typing:start', { room_id: room });
    const agg2 = await waitFor(carol, 'typing:aggregated', (d) => d.user_ids?.length === 2);
    assert.equal(agg2.data.display_text, 'Alice and Bob are typing...');
    assert.deepEqual([...agg2.data.user_ids].sort(), ['alice', 'bob']);
    assert.deepEqual(await ok(dave, 'typing:get-aggregated', { room_id: room }), agg2.data);

    await ok(carol, 'typing:start', { room_id: room });
    await ok(dave, 'typing:start', { room_id: room });
    const agg4 = await waitFor(bob, 'typing:aggregated', (d) => d.user_ids?.length === 4);
    assert.equal(agg4.data.display_text, 'Alice, Bob and 2 others are typing...');
    assert.deepEqual(await ok(alice, 'typing:get-aggregated', { room_id: room }), agg4.data);

    for (const u of [alice, bob, carol, dave]) await ok(u, 'typing:stop', { room_id: room });
    for (const u of ['alice', 'bob', 'carol', 'dave']) await waitFor(alice, 'typing:update', (d) => d.user_id === u && d.typing === false);
    assert.deepEqual((await ok(bob, 'typing:get-aggregated', { room_id: room })).user_ids, []);
  });

  await t.test('sending a message ends typing', async () => {
    clearSeen(bob);
    await ok(alice, 'typing:start', { room_id: room });
    await waitFor(bob, 'typing:update', (d) => d.user_id === 'alice' && d.typing === true);
    await ok(alice, 'message:send', { room_id: room, body: 'done typing' });
    await waitFor(bob, 'typing:update', (d) => d.user_id === 'alice' && d.typing === false, 1000);
  });

  await t.test('typing_indicators off: no typing goes out', async () => {
    await ok(dave, 'privacy:set', { typing_indicators: false });
    clearSeen(alice);
    await ok(dave, 'typing:start', { room_id: room });
    await expectNone(alice, 'typing:update', (d) => d.user_id === 'dave', 400);
    assert.deepEqual((await ok(alice, 'typing:get-aggregated', { room_id: room })).user_ids, []);
  });

  await t.test('expiry without refresh (typing_timeout=1s), and a refresh keeps it', async () => {
    const fast = await startNode({ name: 'typing-1s', args: ['--set', 'chat.typing_timeout=1s'] });
    const a = await connectUser(fast, 'alice', tenant, { claims: { name: 'Alice' } });
    const b = await connectUser(fast, 'bob', tenant, { claims: { name: 'Bob' } });
    const r = await publicRoom(a, `expiry-${RUN}`, b);

    let t0 = Date.now();
    await ok(a, 'typing:start', { room_id: r });
    await waitFor(b, 'typing:update', (d) => d.user_id === 'alice' && d.typing === true);
    const gone = await waitFor(b, 'typing:update', (d) => d.user_id === 'alice' && d.typing === false, 3000);
    let after = gone.at - t0;
    t.diagnostic(`typing:update false arrived ${after} ms after typing:start`);
    assert.ok(after >= 900, `expired too early: ${after} ms`);
    assert.ok(after <= 1500, `should expire within ~1.5 s, took ${after} ms`);
    const agg = await waitFor(b, 'typing:aggregated', (d) => d.user_ids?.length === 0, 1000, gone.at);
    assert.deepEqual(agg.data.user_ids, []);

    clearSeen(b);
    t0 = Date.now();
    await ok(a, 'typing:start', { room_id: r });
    await sleep(600);
    await ok(a, 'typing:start', { room_id: r });
    const gone2 = await waitFor(b, 'typing:update', (d) => d.user_id === 'alice' && d.typing === false, 4000);
    after = gone2.at - t0;
    t.diagnostic(`with a refresh at 600 ms, typing:update false arrived ${after} ms after the first start`);
    assert.ok(after >= 1300, `a refresh should keep typing alive past the first timeout, but it ended after ${after} ms`);
    assert.ok(after <= 2300, `refreshed typing should expire ~1 s after the refresh, took ${after} ms`);
    assert.equal(seen(b, 'typing:update', (d) => d.typing === true).length, 1, 'a refresh should not announce a new start');
    await fast.stop();
  });
});

// ---------------------------------------------------------------------------------------

test('7. malformed payloads get an error ack and the connection stays usable', { timeout: 60_000 }, async (t) => {
  const tenant = 'acme-fuzz';
  const big = 'x'.repeat(5000);
  const bigMeta = { blob: 'y'.repeat(3000) };
  const common = [
    ['a string', 'just a string'],
    ['a number', 42],
    ['an array', [1, 2, 3]],
    ['a boolean', true],
    ['a binary attachment', Buffer.from('binary')],
  ];
  // [label, payload, expected code] per event; R stands for a room the sender owns.
  const cases = (R) => ({
    'room:create': [
      ['{}', {}, 'bad_request'],
      ['visibility not in the enum', { visibility: 'secret' }, 'bad_request'],
      ['room_id a number', { room_id: 5, visibility: 'public' }, 'bad_request'],
      ['room_id with a colon', { room_id: 'a:b', visibility: 'public' }, 'bad_request'],
      ['members a string', { visibility: 'public', members: 'bob' }, 'bad_request'],
      ['members of numbers', { visibility: 'public', members: [1, 2] }, 'bad_request'],
      ['empty name', { visibility: 'public', name: '' }, 'bad_request'],
    ],
    'room:join': [
      ['{}', {}, 'bad_request'],
      ['room_id a number', { room_id: 7 }, 'bad_request'],
      ['room_id empty', { room_id: '' }, 'bad_request'],
      ['room_id with spaces', { room_id: 'two words' }, 'bad_request'],
      ['room_id null', { room_id: null }, 'bad_request'],
    ],
    'room:leave': [
      ['{}', {}, 'bad_request'],
      ['room_id an object', { room_id: { id: R } }, 'bad_request'],
    ],
    'room:invite': [
      ['{}', {}, 'bad_request'],
      ['user_ids a string', { room_id: R, user_ids: 'bob' }, 'bad_request'],
      ['user_ids empty', { room_id: R, user_ids: [] }, 'bad_request'],
      ['user_ids of numbers', { room_id: R, user_ids: [1] }, 'bad_request'],
      ['user_ids with a bad id', { room_id: R, user_ids: ['a:b'] }, 'bad_request'],
    ],
    'room:members': [
      ['{}', {}, 'bad_request'],
      ['room_id an array', { room_id: [R] }, 'bad_request'],
    ],
    'message:send': [
      ['{}', {}, 'bad_request'],
      ['no body', { room_id: R }, 'bad_request'],
      ['body a number', { room_id: R, body: 5 }, 'bad_request'],
      ['empty body', { room_id: R, body: '' }, 'bad_request'],
      ['blank body', { room_id: R, body: '   ' }, 'bad_request'],
      ['client_msg_id a number', { room_id: R, body: 'x', client_msg_id: 5 }, 'bad_request'],
      ['client_msg_id empty', { room_id: R, body: 'x', client_msg_id: '' }, 'bad_request'],
      ['reply_to a string', { room_id: R, body: 'x', reply_to: 'one' }, 'bad_request'],
      ['reply_to negative', { room_id: R, body: 'x', reply_to: -1 }, 'bad_request'],
      ['reply_to a message that does not exist', { room_id: R, body: 'x', reply_to: 999 }, 'bad_request'],
      ['thread_root a string', { room_id: R, body: 'x', thread_root: 'one' }, 'bad_request'],
      ['thread_root a message that does not exist', { room_id: R, body: 'x', thread_root: 999 }, 'bad_request'],
      ['meta a string', { room_id: R, body: 'x', meta: 'str' }, 'bad_request'],
      ['meta an array', { room_id: R, body: 'x', meta: [1] }, 'bad_request'],
      ['body over 4096 bytes', { room_id: R, body: big }, 'payload_too_large'],
      ['meta over 2048 bytes', { room_id: R, body: 'x', meta: bigMeta }, 'payload_too_large'],
    ],
    'message:history': [
      ['{}', {}, 'bad_request'],
      ['limit 0', { room_id: R, limit: 0 }, 'bad_request'],
      ['limit 101', { room_id: R, limit: 101 }, 'bad_request'],
      ['limit a string', { room_id: R, limit: '10' }, 'bad_request'],
      ['before_seq a string', { room_id: R, before_seq: 'x' }, 'bad_request'],
      ['after_seq negative', { room_id: R, after_seq: -1 }, 'bad_request'],
      ['before_seq <= after_seq', { room_id: R, before_seq: 2, after_seq: 5 }, 'bad_request'],
    ],
    'message:delivered': [
      ['{}', {}, 'bad_request'],
      ['no up_to_seq', { room_id: R }, 'bad_request'],
      ['up_to_seq a string', { room_id: R, up_to_seq: '3' }, 'bad_request'],
      ['up_to_seq negative', { room_id: R, up_to_seq: -1 }, 'bad_request'],
      ['up_to_seq fractional', { room_id: R, up_to_seq: 1.5 }, 'bad_request'],
    ],
    'receipt:read': [
      ['{}', {}, 'bad_request'],
      ['no up_to_seq', { room_id: R }, 'bad_request'],
      ['up_to_seq a string', { room_id: R, up_to_seq: '3' }, 'bad_request'],
      ['up_to_seq negative', { room_id: R, up_to_seq: -1 }, 'bad_request'],
    ],
    'receipt:batch': [
      ['{}', {}, 'bad_request'],
      ['receipts a string', { receipts: 'x' }, 'bad_request'],
      ['receipts empty', { receipts: [] }, 'bad_request'],
      ['kind not in the enum', { receipts: [{ room_id: R, up_to_seq: 1, kind: 'seen' }] }, 'bad_request'],
      ['entry without up_to_seq', { receipts: [{ room_id: R, kind: 'read' }] }, 'bad_request'],
      ['entry a number', { receipts: [1] }, 'bad_request'],
      ['101 entries', { receipts: Array.from({ length: 101 }, () => ({ room_id: R, up_to_seq: 1, kind: 'read' })) }, 'bad_request'],
    ],
    'unread:get': [
      ['room_ids a string', { room_ids: R }, 'bad_request'],
      ['room_ids of numbers', { room_ids: [1] }, 'bad_request'],
      ['501 room ids', { room_ids: Array.from({ length: 501 }, (_, i) => `r${i}`) }, 'bad_request'],
    ],
    'typing:start': [
      ['{}', {}, 'bad_request'],
      ['room_id a number', { room_id: 3 }, 'bad_request'],
    ],
    'typing:stop': [
      ['{}', {}, 'bad_request'],
      ['room_id an object', { room_id: {} }, 'bad_request'],
    ],
    'typing:get-aggregated': [
      ['{}', {}, 'bad_request'],
      ['room_id a boolean', { room_id: true }, 'bad_request'],
    ],
    'privacy:set': [
      ['read_receipts a string', { read_receipts: 'no' }, 'bad_request'],
      ['typing_indicators a number', { typing_indicators: 1 }, 'bad_request'],
    ],
    'room:delete': [
      ['{}', {}, 'bad_request'],
      ['room_id a number', { room_id: 9 }, 'bad_request'],
      ['room_id with a colon', { room_id: 'a:b' }, 'bad_request'],
    ],
    'message:edit': [
      ['{}', {}, 'bad_request'],
      ['no body', { room_id: R, seq: 1 }, 'bad_request'],
      ['no seq', { room_id: R, body: 'x' }, 'bad_request'],
      ['seq 0', { room_id: R, seq: 0, body: 'x' }, 'bad_request'],
      ['seq a string', { room_id: R, seq: '1', body: 'x' }, 'bad_request'],
      ['blank body', { room_id: R, seq: 1, body: '  ' }, 'bad_request'],
      ['meta an array', { room_id: R, seq: 1, body: 'x', meta: [1] }, 'bad_request'],
      ['body over 4096 bytes', { room_id: R, seq: 1, body: big }, 'payload_too_large'],
    ],
    'message:delete': [
      ['{}', {}, 'bad_request'],
      ['no seq', { room_id: R }, 'bad_request'],
      ['seq negative', { room_id: R, seq: -1 }, 'bad_request'],
      ['seq fractional', { room_id: R, seq: 1.5 }, 'bad_request'],
    ],
    'message:thread': [
      ['{}', {}, 'bad_request'],
      ['no root_seq', { room_id: R }, 'bad_request'],
      ['root_seq 0', { room_id: R, root_seq: 0 }, 'bad_request'],
      ['root_seq a string', { room_id: R, root_seq: '1' }, 'bad_request'],
      ['limit 0', { room_id: R, root_seq: 1, limit: 0 }, 'bad_request'],
      ['limit 101', { room_id: R, root_seq: 1, limit: 101 }, 'bad_request'],
      ['after_seq negative', { room_id: R, root_seq: 1, after_seq: -1 }, 'bad_request'],
    ],
    'message:react': [
      ['{}', {}, 'bad_request'],
      ['no on', { room_id: R, seq: 1, emoji: '👍' }, 'bad_request'],
      ['on a string', { room_id: R, seq: 1, emoji: '👍', on: 'yes' }, 'bad_request'],
      ['empty emoji', { room_id: R, seq: 1, emoji: '', on: true }, 'bad_request'],
      ['emoji with a space', { room_id: R, seq: 1, emoji: 'a b', on: true }, 'bad_request'],
      ['emoji over 64 bytes', { room_id: R, seq: 1, emoji: 'x'.repeat(65), on: true }, 'bad_request'],
      ['seq 0', { room_id: R, seq: 0, emoji: '👍', on: true }, 'bad_request'],
    ],
    'room:set-role': [
      ['{}', {}, 'bad_request'],
      ['role owner', { room_id: R, user_id: 'x', role: 'owner' }, 'bad_request'],
      ['no user_id', { room_id: R, role: 'moderator' }, 'bad_request'],
      ['user_id with a space', { room_id: R, user_id: 'a b', role: 'member' }, 'bad_request'],
    ],
    'room:kick': [
      ['{}', {}, 'bad_request'],
      ['user_id a number', { room_id: R, user_id: 7 }, 'bad_request'],
      ['reason over 500 characters', { room_id: R, user_id: 'x', reason: 'r'.repeat(501) }, 'bad_request'],
    ],
    'room:ban': [
      ['{}', {}, 'bad_request'],
      ['reason a number', { room_id: R, user_id: 'x', reason: 1 }, 'bad_request'],
    ],
    'room:unban': [
      ['{}', {}, 'bad_request'],
      ['no user_id', { room_id: R }, 'bad_request'],
    ],
    'room:mute': [
      ['{}', {}, 'bad_request'],
      ['until a string', { room_id: R, user_id: 'x', until: 'tomorrow' }, 'bad_request'],
    ],
    'sync:get': [
      ['cursor a number', { cursor: 5 }, 'bad_request'],
      ['cursor not handed out', { cursor: 'abc' }, 'bad_request'],
      ['limit 0', { limit: 0 }, 'bad_request'],
      ['limit 101', { limit: 101 }, 'bad_request'],
      ['limit a string', { limit: '10' }, 'bad_request'],
    ],
    'room:set-slow-mode': [
      ['{}', {}, 'bad_request'],
      ['interval_s negative', { room_id: R, interval_s: -1 }, 'bad_request'],
      ['interval_s over a day', { room_id: R, interval_s: 86_401 }, 'bad_request'],
      ['interval_s fractional', { room_id: R, interval_s: 1.5 }, 'bad_request'],
    ],
  });

  const problems = [];
  const events = Object.keys(cases('R'));
  // unread:get, privacy:set and sync:get take {} (every field optional): not malformed.
  const allOptional = new Set(['unread:get', 'privacy:set', 'sync:get']);
  let checked = 0;
  for (const event of events) {
    const listFor = (R) => [
      ...common.filter(([label]) => !(allOptional.has(event) && label === 'a binary attachment')).map(([label, payload]) => [label, payload, 'bad_request']),
      ...cases(R)[event],
    ];
    const count = listFor('R').length;
    // Malformed requests count against the rate limits too (message:send: burst 20 per
    // socket), so each user sends at most 8 of them, well inside every bucket.
    for (let chunk = 0; chunk * 8 < count; chunk++) {
      const user = `fuzz-${event.replace(/[^a-z]/g, '')}-${chunk}`;
      const sock = await connectUser(node, user, tenant);
      const R = `fz-${user}`;
      await ok(sock, 'room:create', { room_id: R, visibility: 'public' });
      await ok(sock, 'message:send', { room_id: R, body: 'seed' });
      const part = listFor(R).slice(chunk * 8, chunk * 8 + 8);
      for (const [label, payload, expected] of part) {
        checked++;
        let res;
        try {
          res = await ack(sock, event, payload, 3000);
        } catch (e) {
          problems.push(`${event} with ${label}: ${e.message}`);
          if (!sock.connected) {
            problems.push(`${event} with ${label}: the server dropped the connection (${seen(sock, 'disconnect').map((d) => d.data)})`);
            await connectSocket(sock);
            await sleep(CONNECT_SETTLE_MS);
          }
          continue;
        }
        if (!res || res.ok !== false) {
          problems.push(`${event} with ${label}: expected ok:false, got ${JSON.stringify(res)?.slice(0, 200)}`);
        } else if (!ACK_CODES.includes(res.error?.code)) {
          problems.push(`${event} with ${label}: code ${JSON.stringify(res.error?.code)} is not a protocol code`);
        } else if (res.error.code !== expected) {
          problems.push(`${event} with ${label}: expected ${expected}, got ${res.error.code} (${res.error.message})`);
        } else if (typeof res.error.message !== 'string' || !res.error.message) {
          problems.push(`${event} with ${label}: error.message should be a non-empty string`);
        }
      }
      // Still usable: connected, and a well-formed request works.
      if (!sock.connected) problems.push(`${event}: socket disconnected after malformed payloads`);
      else {
        const sent = await ack(sock, 'message:send', { room_id: R, body: `still alive after ${event}` }).catch((e) => ({ error: e.message }));
        if (!sent?.ok) problems.push(`${event}: a valid message:send afterwards failed: ${JSON.stringify(sent)}`);
      }
      sock.close();
    }
  }
  t.diagnostic(`${checked} malformed payloads over ${events.length} events`);
  assert.deepEqual(problems, [], `malformed payloads:\n  ${problems.join('\n  ')}`);
});

// ---------------------------------------------------------------------------------------

test('8. tenant wall: same room id in acme and globex never mixes', { timeout: 30_000 }, async () => {
  const roomId = 'wall-room';
  const acmeAlice = await connectUser(node, 'alice', 'acme');
  const acmeBob = await connectUser(node, 'bob', 'acme');
  const globexEve = await connectUser(node, 'eve', 'globex');
  // Same user id as acme's alice, other tenant: another person.
  const globexAlice = await connectUser(node, 'alice', 'globex');

  await publicRoom(acmeAlice, roomId, acmeBob);
  for (let i = 1; i <= 3; i++) await ok(acmeAlice, 'message:send', { room_id: roomId, body: `acme secret ${i}` });

  for (const g of [globexEve, globexAlice]) {
    await fails(g, 'room:join', { room_id: roomId }, 'not_found');
    await fails(g, 'message:history', { room_id: roomId }, 'not_found');
    await fails(g, 'message:send', { room_id: roomId, body: 'hello acme?' }, 'not_found');
    await fails(g, 'room:members', { room_id: roomId }, 'not_found');
    await fails(g, 'room:invite', { room_id: roomId, user_ids: ['eve'] }, 'not_found');
    await fails(g, 'typing:start', { room_id: roomId }, 'not_found');
    await fails(g, 'receipt:read', { room_id: roomId, up_to_seq: 3 }, 'not_found');
    await fails(g, 'message:delivered', { room_id: roomId, up_to_seq: 3 }, 'not_found');
    assert.equal((await ok(g, 'unread:get', {})).counts[roomId], undefined, 'a globex user has no unread count for an acme room');
    const res = await ack(g, 'unread:get', { room_ids: [roomId] });
    assert.ok(res.ok === false && ['forbidden', 'not_found'].includes(res.error.code), `unread:get of an acme room from globex: ${JSON.stringify(res)}`);
  }

  // globex makes its own room with the same id: a separate room with its own log.
  const own = await ok(globexEve, 'room:create', { room_id: roomId, visibility: 'public' });
  assert.equal(own.room.owner_id, 'eve');
  await ok(globexAlice, 'room:join', { room_id: roomId });
  const g1 = (await ok(globexEve, 'message:send', { room_id: roomId, body: 'globex only' })).message;
  assert.equal(g1.seq, 1, 'the globex room has its own sequence');
  await waitFor(globexAlice, 'message:new', (d) => d.message?.id === g1.id);
  const a4 = (await ok(acmeAlice, 'message:send', { room_id: roomId, body: 'acme only' })).message;
  assert.equal(a4.seq, 4);
  await waitFor(acmeBob, 'message:new', (d) => d.message?.id === a4.id);

  await ok(globexEve, 'typing:start', { room_id: roomId });
  await ok(acmeBob, 'typing:start', { room_id: roomId });
  await waitFor(globexAlice, 'typing:update', (d) => d.user_id === 'eve');
  await waitFor(acmeAlice, 'typing:update', (d) => d.user_id === 'bob');
  await ok(acmeBob, 'receipt:read', { room_id: roomId, up_to_seq: 4 });
  await sleep(400);

  const bodies = (s) => seen(s, 'message:new').map((e) => e.data.message.body);
  for (const s of [acmeAlice, acmeBob]) {
    assert.ok(bodies(s).every((b) => b.startsWith('acme')), `acme user got ${bodies(s)}`);
    assert.deepEqual(seen(s, 'typing:update', (d) => d.user_id === 'eve'), [], 'acme must not see globex typing');
  }
  for (const s of [globexEve, globexAlice]) {
    assert.ok(bodies(s).every((b) => b === 'globex only'), `globex user got ${bodies(s)}`);
    assert.deepEqual(seen(s, 'typing:update', (d) => d.user_id === 'bob'), [], 'globex must not see acme typing');
    assert.deepEqual(seen(s, 'receipt:read', (d) => d.user_id === 'bob'), [], 'globex must not see acme receipts');
  }
  const gh = (await ok(globexAlice, 'message:history', { room_id: roomId })).messages;
  assert.deepEqual(gh.map((m) => m.body), ['globex only']);
  const ah = (await ok(acmeBob, 'message:history', { room_id: roomId })).messages;
  assert.deepEqual(ah.map((m) => m.body), ['acme secret 1', 'acme secret 2', 'acme secret 3', 'acme only']);
  const gm = (await ok(globexEve, 'room:members', { room_id: roomId })).members.map((m) => m.user_id).sort();
  assert.deepEqual(gm, ['alice', 'eve']);
  const am = (await ok(acmeAlice, 'room:members', { room_id: roomId })).members.map((m) => m.user_id).sort();
  assert.deepEqual(am, ['alice', 'bob']);
});

// ---------------------------------------------------------------------------------------

test('9. rate limit: a flooder is limited then disconnected, others are unaffected', { timeout: 30_000 }, async (t) => {
  const config = writeConfig(
    `limits-${RUN}.yaml`,
    ['limits:', '  per_socket:', '    message: {rate: 1, burst: 3}', '  abuse_threshold: 20', '  abuse_window: 10s', ''].join('\n'),
  );
  const limited = await startNode({ name: 'rate-limited', args: ['--config', config] });
  const tenant = 'acme-flood';
  const flooder = await connectUser(limited, 'mallory', tenant);
  const bob = await connectUser(limited, 'bob', tenant);
  const room = await publicRoom(flooder, `flood-${RUN}`, bob);

  const counts = { ok: 0, rate_limited: 0, other: [], noAck: 0 };
  const bobResults = [];
  const bobSends = (async () => {
    for (let i = 0; i < 2; i++) {
      await sleep(15);
      bobResults.push(await ack(bob, 'message:send', { room_id: room, body: `bob ${i}` }));
    }
  })();
  for (let i = 0; i < 60 && flooder.connected; i++) {
    let res;
    try {
      res = await ack(flooder, 'message:send', { room_id: room, body: `flood ${i}` }, 1000);
    } catch {
      counts.noAck++;
      continue;
    }
    if (res.ok) counts.ok++;
    else if (res.error?.code === 'rate_limited') counts.rate_limited++;
    else counts.other.push(res.error);
  }
  await bobSends;
  const reason = await disconnected(flooder, 2000).catch(() => null);
  t.diagnostic(`flooder: ${JSON.stringify(counts)}, disconnect reason ${reason}`);

  assert.deepEqual(counts.other, [], 'only ok or rate_limited answers');
  assert.ok(counts.ok >= 3 && counts.ok <= 5, `the burst of 3 (plus refill) should pass, ${counts.ok} did`);
  assert.ok(counts.rate_limited >= 1, 'some sends should be rate_limited');
  assert.ok(counts.rate_limited <= 20, `disconnect should come at the abuse threshold (20), after ${counts.rate_limited} refusals`);
  assert.equal(reason, 'io server disconnect', 'past the abuse threshold the server disconnects the flooder');

  for (const r of bobResults) assert.equal(r.ok, true, `bob's sends during the flood: ${JSON.stringify(r)}`);
  assert.ok(bob.connected, 'bob stays connected');
  const later = await ok(bob, 'message:send', { room_id: room, body: 'bob after the flood' });
  assert.equal(later.message.sender_id, 'bob');
  await limited.stop();
});

// ---------------------------------------------------------------------------------------
// v1.1: room:delete, message:edit, message:delete, message:react (dataplane/PROTOCOL.md,
// "/chat v1.1 as implemented"). Each flow runs on the embedded node and, with Redis, with
// alice on node A and bob on node B.

/** Alice owns a private room with bob and carol; returns the three sockets. */
async function v11Room(a, b, tenant, room) {
  const alice = await connectUser(a, 'alice', tenant);
  const bob = await connectUser(b, 'bob', tenant);
  const carol = await connectUser(b, 'carol', tenant);
  await ok(alice, 'room:create', { room_id: room, visibility: 'private', members: ['bob', 'carol'] });
  return { alice, bob, carol };
}

async function editDeleteReactFlow(t, a, b, tag) {
  const tenant = `acme-v11-${tag}-${RUN}`;
  const room = `v11-${tag}`;
  const { alice, bob, carol } = await v11Room(a, b, tenant, room);
  const first = (await ok(alice, 'message:send', { room_id: room, body: 'helo', meta: { k: 1 } })).message;
  const second = (await ok(bob, 'message:send', { room_id: room, body: "bob's" })).message;
  const unreadBefore = (await ok(carol, 'unread:get', {})).counts;
  assert.equal(unreadBefore[room], 2);

  await t.test(`${tag}: the sender edits; members get message:updated; history serves it`, async () => {
    const edited = (await ok(alice, 'message:edit', { room_id: room, seq: 1, body: 'hello' })).message;
    assert.equal(edited.id, first.id);
    assert.equal(edited.seq, 1);
    assert.equal(edited.body, 'hello');
    assert.deepEqual(edited.meta, { k: 1 });
    assert.ok(edited.edited_at >= first.ts);
    const got = await waitFor(bob, 'message:updated', (d) => d.message?.body === 'hello');
    assert.deepEqual(got.data.message, edited);
    await fails(bob, 'message:edit', { room_id: room, seq: 1, body: 'mine now' }, 'forbidden');
    await fails(alice, 'message:edit', { room_id: room, seq: 99, body: 'x' }, 'not_found');
    const hist = (await ok(carol, 'message:history', { room_id: room })).messages;
    assert.deepEqual(hist[0], edited);
  });

  await t.test(`${tag}: reactions aggregate, are bounded, stored and returned by history`, async () => {
    const r1 = await ok(bob, 'message:react', { room_id: room, seq: 1, emoji: '👍', on: true });
    assert.deepEqual(r1.reactions, [{ emoji: '👍', count: 1, user_ids: ['bob'] }]);
    const got = await waitFor(alice, 'message:reactions', (d) => d.seq === 1);
    assert.deepEqual(got.data, { room_id: room, seq: 1, reactions: r1.reactions });
    const r2 = await ok(carol, 'message:react', { room_id: room, seq: 1, emoji: '👍', on: true });
    assert.deepEqual(r2.reactions, [{ emoji: '👍', count: 2, user_ids: ['bob', 'carol'] }]);
    await waitFor(alice, 'message:reactions', (d) => d.reactions?.[0]?.count === 2);
    clearSeen(alice);
    assert.deepEqual(await ok(carol, 'message:react', { room_id: room, seq: 1, emoji: '👍', on: true }), r2, 'a repeat changes nothing');
    await expectNone(alice, 'message:reactions', () => true, 300);
    for (const e of ['a', 'b', 'c', 'd']) await ok(bob, 'message:react', { room_id: room, seq: 1, emoji: e, on: true });
    await fails(bob, 'message:react', { room_id: room, seq: 1, emoji: 'e', on: true }, 'forbidden');
    const off = await ok(bob, 'message:react', { room_id: room, seq: 1, emoji: 'a', on: false });
    assert.ok(off.reactions.every((r) => r.emoji !== 'a'));
    const hist = (await ok(alice, 'message:history', { room_id: room })).messages;
    assert.deepEqual(hist[0].reactions, off.reactions);
    assert.equal(hist[1].reactions, undefined);
  });

  await t.test(`${tag}: deletes leave tombstones; seq and unread counts do not move`, async () => {
    await fails(carol, 'message:delete', { room_id: room, seq: 2 }, 'forbidden');
    const tomb = (await ok(alice, 'message:delete', { room_id: room, seq: 2 })).message;
    assert.equal(tomb.id, second.id);
    assert.equal(tomb.seq, 2);
    assert.equal(tomb.deleted, true);
    assert.equal(tomb.body, undefined);
    const got = await waitFor(bob, 'message:updated', (d) => d.message?.seq === 2);
    assert.deepEqual(got.data.message, tomb);
    await fails(bob, 'message:edit', { room_id: room, seq: 2, body: 'undo' }, 'conflict');
    const own = (await ok(alice, 'message:delete', { room_id: room, seq: 1 })).message;
    assert.equal(own.deleted, true);
    assert.equal(own.reactions, undefined, 'a tombstone has no reactions');
    await fails(bob, 'message:react', { room_id: room, seq: 1, emoji: '👍', on: true }, 'conflict');
    const hist = (await ok(carol, 'message:history', { room_id: room })).messages;
    assert.deepEqual(hist.map((m) => [m.seq, m.deleted, m.body]), [[1, true, undefined], [2, true, undefined]]);
    assert.deepEqual((await ok(carol, 'unread:get', {})).counts, unreadBefore);
    assert.equal((await ok(bob, 'message:send', { room_id: room, body: 'next' })).message.seq, 3);
  });

  await t.test(`${tag}: another tenant's alice and bob can neither see nor change any of it`, async () => {
    const other = `${tenant}-other`;
    const eve = await connectUser(b, 'alice', other);
    await fails(eve, 'message:edit', { room_id: room, seq: 3, body: 'x' }, 'not_found');
    await fails(eve, 'message:delete', { room_id: room, seq: 3 }, 'not_found');
    await fails(eve, 'message:react', { room_id: room, seq: 3, emoji: '👍', on: true }, 'not_found');
    await fails(eve, 'room:delete', { room_id: room }, 'not_found');
    const hist = (await ok(carol, 'message:history', { room_id: room })).messages;
    assert.deepEqual(hist.map((m) => m.seq), [1, 2, 3]);
    assert.equal(hist[2].body, 'next');
  });

  await t.test(`${tag}: threads: replies take room seqs, page by seq, roots count them`, async () => {
    const root = (await ok(alice, 'message:send', { room_id: room, body: 'thread root' })).message;
    assert.equal(root.seq, 4);
    const replies = [];
    for (const body of ['r1', 'r2', 'r3']) {
      const m = (await ok(bob, 'message:send', { room_id: room, body, thread_root: root.seq })).message;
      assert.equal(m.thread_root, root.seq);
      replies.push(m);
    }
    assert.deepEqual(replies.map((m) => m.seq), [5, 6, 7]);
    const got = await waitFor(carol, 'message:new', (d) => d.message?.id === replies[2].id);
    assert.equal(got.data.message.thread_root, root.seq);
    assert.deepEqual((await ok(carol, 'message:thread', { room_id: room, root_seq: root.seq })).messages, replies);
    assert.deepEqual(
      (await ok(carol, 'message:thread', { room_id: room, root_seq: root.seq, after_seq: 5, limit: 1 })).messages,
      [replies[1]],
    );
    const hist = (await ok(carol, 'message:history', { room_id: room, after_seq: 3 })).messages;
    assert.equal(hist[0].thread_replies, 3);
    assert.deepEqual(hist.map((m) => m.seq), [4, 5, 6, 7], 'replies are in the room history too');
    await fails(bob, 'message:send', { room_id: room, body: 'nested', thread_root: 5 }, 'bad_request');
    await fails(bob, 'message:thread', { room_id: room, root_seq: 99 }, 'not_found');
    // Unread: replies count like room messages; reading up to a seq covers them.
    const unread = (await ok(carol, 'unread:get', { room_ids: [room] })).counts[room];
    assert.equal(unread, 7);
    assert.equal((await ok(carol, 'receipt:read', { room_id: room, up_to_seq: 6 })).unread, 1);
  });

  await t.test(`${tag}: room:delete (owner only) tells every member and removes everything`, async () => {
    await fails(bob, 'room:delete', { room_id: room }, 'forbidden');
    await fails(alice, 'room:delete', { room_id: `${room}-nope` }, 'not_found');
    await ok(bob, 'typing:start', { room_id: room });
    assert.deepEqual(await ok(alice, 'room:delete', { room_id: room }), {});
    for (const s of [alice, bob, carol]) {
      const got = await waitFor(s, 'room:deleted', (d) => d.room_id === room);
      assert.deepEqual(got.data, { room_id: room });
    }
    await fails(bob, 'message:history', { room_id: room }, 'not_found');
    await fails(bob, 'message:send', { room_id: room, body: 'anyone?' }, 'not_found');
    assert.equal((await ok(carol, 'unread:get', {})).counts[room], undefined);
    // The id again: a new room from seq 1; bob's socket is no longer in it.
    await ok(alice, 'room:create', { room_id: room, visibility: 'public' });
    clearSeen(bob);
    const m = (await ok(alice, 'message:send', { room_id: room, body: 'fresh start' })).message;
    assert.equal(m.seq, 1);
    await expectNone(bob, 'message:new', () => true, 300);
    await ok(bob, 'room:join', { room_id: room });
    assert.deepEqual((await ok(bob, 'message:history', { room_id: room })).messages.map((x) => x.body), ['fresh start']);
    assert.equal((await ok(bob, 'unread:get', { room_ids: [room] })).counts[room], 1);
    assert.deepEqual((await ok(bob, 'typing:get-aggregated', { room_id: room })).user_ids, []);
  });
}

test('10. v1.1 on one node: edit, delete, react, room:delete', { timeout: 60_000 }, async (t) => {
  await editDeleteReactFlow(t, node, node, 'one');
});

test('11. v1.1 across two nodes with Redis: edit, delete, react, room:delete', { timeout: 60_000 }, async (t) => {
  const nodes = await sharedNodes(t);
  if (!nodes) return;
  await editDeleteReactFlow(t, nodes.a, nodes.b, 'two');
});

// ---------------------------------------------------------------------------------------
// v1.1 moderation: roles, kick, ban, unban, mute, slow mode (dataplane/PROTOCOL.md,
// "Moderation"). Alice owns the room on node A; bob (moderator) and carol on node B, carol
// also on node A; dave (member) on node A.

async function moderationFlow(t, a, b, tag) {
  const tenant = `acme-mod-${tag}-${RUN}`;
  const room = `mod-${tag}`;
  const alice = await connectUser(a, 'alice', tenant);
  const dave = await connectUser(a, 'dave', tenant);
  const carolA = await connectUser(a, 'carol', tenant);
  const bob = await connectUser(b, 'bob', tenant);
  const carolB = await connectUser(b, 'carol', tenant);
  await ok(alice, 'room:create', { room_id: room, visibility: 'public', members: ['bob', 'carol', 'dave'] });
  const who = (user_id, extra = {}) => ({ room_id: room, user_id, ...extra });

  await t.test(`${tag}: only the owner sets roles; nobody acts on the owner`, async () => {
    await fails(dave, 'room:set-role', who('bob', { role: 'moderator' }), 'forbidden');
    await fails(alice, 'room:set-role', who('alice', { role: 'member' }), 'forbidden');
    await fails(alice, 'room:set-role', who('nobody', { role: 'moderator' }), 'not_found');
    assert.deepEqual(await ok(alice, 'room:set-role', who('bob', { role: 'moderator' })), {});
    await fails(bob, 'room:kick', who('alice'), 'forbidden');
    await fails(dave, 'room:kick', who('carol'), 'forbidden');
  });

  await t.test(`${tag}: a kick reaches every socket of the user on every node`, async () => {
    assert.deepEqual(await ok(bob, 'room:kick', who('carol', { reason: 'spam' })), {});
    for (const s of [carolA, carolB]) {
      const got = await waitFor(s, 'room:kicked', (d) => d.room_id === room);
      assert.deepEqual(got.data, { room_id: room, reason: 'spam' });
    }
    clearSeen(carolA);
    clearSeen(carolB);
    await ok(alice, 'message:send', { room_id: room, body: 'carol is out' });
    await expectNone(carolA, 'message:new', () => true, 300);
    await expectNone(carolB, 'message:new', () => true, 100);
    await fails(carolB, 'message:send', { room_id: room, body: 'hi?' }, 'forbidden');
    await ok(carolB, 'room:join', { room_id: room });
  });

  await t.test(`${tag}: a ban kicks and bars joining and invites until unbanned`, async () => {
    await ok(bob, 'room:ban', who('carol', { reason: 'again' }));
    await waitFor(carolA, 'room:kicked', (d) => d.reason === 'again');
    await fails(carolA, 'room:join', { room_id: room }, 'forbidden');
    const inv = await ok(alice, 'room:invite', { room_id: room, user_ids: ['carol'] });
    assert.deepEqual([inv.skipped, inv.banned], [['carol'], ['carol']]);
    await fails(dave, 'room:unban', who('carol'), 'forbidden');
    assert.deepEqual(await ok(bob, 'room:unban', who('carol')), {});
    await ok(carolA, 'room:join', { room_id: room });
  });

  await t.test(`${tag}: a mute refuses sends until lifted (until in the past)`, async () => {
    await ok(bob, 'room:mute', who('dave'));
    await fails(dave, 'message:send', { room_id: room, body: 'muted?' }, 'forbidden');
    await ok(bob, 'room:mute', who('dave', { until: 0 }));
    await ok(dave, 'message:send', { room_id: room, body: 'unmuted' });
    await ok(bob, 'room:mute', who('dave', { until: Date.now() + 60_000 }));
    await fails(dave, 'message:send', { room_id: room, body: 'still muted' }, 'forbidden');
    await ok(alice, 'room:mute', who('dave', { until: null }));
    await fails(dave, 'message:send', { room_id: room, body: 'muted for good' }, 'forbidden');
    await ok(alice, 'room:mute', who('dave', { until: 1 }));
  });

  await t.test(`${tag}: slow mode holds members back, not owners or moderators`, async () => {
    await fails(dave, 'room:set-slow-mode', { room_id: room, interval_s: 30 }, 'forbidden');
    const { room: r } = await ok(bob, 'room:set-slow-mode', { room_id: room, interval_s: 30 });
    assert.equal(r.slow_mode_s, 30);
    await ok(dave, 'message:send', { room_id: room, body: 'one' });
    await fails(dave, 'message:send', { room_id: room, body: 'two' }, 'rate_limited');
    for (const s of [alice, alice, bob, bob]) await ok(s, 'message:send', { room_id: room, body: 'exempt' });
    const off = await ok(alice, 'room:set-slow-mode', { room_id: room, interval_s: 0 });
    assert.equal(off.room.slow_mode_s, undefined);
    await ok(dave, 'message:send', { room_id: room, body: 'two' });
  });

  await t.test(`${tag}: moderators delete others' messages; members cannot`, async () => {
    const mine = (await ok(dave, 'message:send', { room_id: room, body: 'oops' })).message;
    const owners = (await ok(alice, 'message:send', { room_id: room, body: 'owner' })).message;
    await fails(dave, 'message:delete', { room_id: room, seq: owners.seq }, 'forbidden');
    assert.equal((await ok(bob, 'message:delete', { room_id: room, seq: mine.seq })).message.deleted, true);
  });

  await t.test(`${tag}: another tenant's alice cannot moderate this room`, async () => {
    const eve = await connectUser(b, 'alice', `${tenant}-other`);
    for (const [event, payload] of [
      ['room:set-role', who('dave', { role: 'moderator' })],
      ['room:kick', who('dave')],
      ['room:ban', who('dave')],
      ['room:unban', who('dave')],
      ['room:mute', who('dave')],
      ['room:set-slow-mode', { room_id: room, interval_s: 5 }],
    ]) {
      await fails(eve, event, payload, 'not_found');
    }
    await expectNone(dave, 'room:kicked', () => true, 300);
    await ok(dave, 'message:send', { room_id: room, body: 'untouched' });
  });
}

test('12. v1.1 moderation on one node', { timeout: 60_000 }, async (t) => {
  await moderationFlow(t, node, node, 'one');
});

test('13. v1.1 moderation across two nodes with Redis (kick across nodes)', { timeout: 60_000 }, async (t) => {
  const nodes = await sharedNodes(t);
  if (!nodes) return;
  await moderationFlow(t, nodes.a, nodes.b, 'two');
});

// ---------------------------------------------------------------------------------------
// v1.1 sync:get (dataplane/PROTOCOL.md, "sync:get"): a reader away while 27 of 36 rooms
// change catches up page by page from its old cursor: every changed room once, with last
// seq, unread count and last message; unchanged, kicked-from and deleted rooms stay out.
// (Rooms are created by both users, inside the default per-socket room-event burst.)

async function syncPages(sock, cursor, limit) {
  const rooms = [];
  let pages = 0;
  for (;;) {
    const page = await ok(sock, 'sync:get', cursor ? { cursor, limit } : { limit });
    pages += 1;
    rooms.push(...page.rooms);
    cursor = page.cursor;
    assert.equal(typeof cursor, 'string');
    if (!page.more) return { rooms, cursor, pages };
    assert.equal(page.rooms.length, limit);
  }
}

async function syncFlow(t, a, b, tag) {
  const tenant = `acme-sync-${tag}-${RUN}`;
  const rooms = Array.from({ length: 36 }, (_, i) => `s-${tag}-${String(i).padStart(2, '0')}`);
  let reader = await connectUser(a, 'reader', tenant);
  const writer = await connectUser(b, 'writer', tenant);
  const moderator = await connectUser(b, 'writer', tenant);
  for (const [i, room] of rooms.entries()) {
    if (i % 2 === 0) await ok(reader, 'room:create', { room_id: room, visibility: 'private', members: ['writer'] });
    else await ok(writer, 'room:create', { room_id: room, visibility: 'private', members: ['reader'] });
  }
  for (const room of ['w-kick', 'w-del']) await ok(moderator, 'room:create', { room_id: room, visibility: 'public', members: ['reader'] });

  let cursor;
  await t.test(`${tag}: the first sync lists every room once, in pages`, async () => {
    const got = await syncPages(reader, undefined, 10);
    assert.equal(got.pages, 4);
    assert.deepEqual(got.rooms.map((r) => r.room_id).sort(), [...rooms, 'w-del', 'w-kick'].sort());
    cursor = got.cursor;
    assert.deepEqual(await ok(reader, 'sync:get', { cursor }), { rooms: [], cursor, more: false });
  });

  await t.test(`${tag}: after a long disconnect, exactly the changed rooms, once each`, async () => {
    reader.disconnect();
    const expected = new Map();
    for (const [i, room] of rooms.slice(0, 27).entries()) {
      // Two sockets share the sends (the per-socket message burst is 20).
      const m = (await ok(i % 2 ? moderator : writer, 'message:send', { room_id: room, body: `hi ${room}` })).message;
      expected.set(room, m);
    }
    const edited = (await ok(writer, 'message:edit', { room_id: rooms[0], seq: 1, body: 'edited' })).message;
    expected.set(rooms[0], edited);
    await ok(moderator, 'message:send', { room_id: 'w-kick', body: 'x' });
    await ok(moderator, 'room:kick', { room_id: 'w-kick', user_id: 'reader' });
    await ok(moderator, 'message:send', { room_id: 'w-del', body: 'x' });
    await ok(moderator, 'room:delete', { room_id: 'w-del' });
    reader = await connectUser(a, 'reader', tenant);
    const got = await syncPages(reader, cursor, 10);
    assert.equal(got.pages, 3);
    assert.deepEqual(got.rooms.map((r) => r.room_id).sort(), [...expected.keys()].sort());
    for (const r of got.rooms) {
      const m = expected.get(r.room_id);
      assert.deepEqual(r, { room_id: r.room_id, last_seq: 1, unread: 1, last_message: m });
    }
    cursor = got.cursor;
    await ok(reader, 'receipt:read', { room_id: rooms[1], up_to_seq: 1 });
    const read = await ok(reader, 'sync:get', { cursor });
    assert.deepEqual(read.rooms.map((r) => [r.room_id, r.unread]), [[rooms[1], 0]]);
  });

  await t.test(`${tag}: another tenant's reader sees none of it`, async () => {
    const eve = await connectUser(b, 'reader', `${tenant}-other`);
    assert.deepEqual((await ok(eve, 'sync:get', {})).rooms, []);
    await fails(eve, 'sync:get', { cursor: 'nope' }, 'bad_request');
  });
}

test('14. v1.1 sync:get on one node', { timeout: 60_000 }, async (t) => {
  await syncFlow(t, node, node, 'one');
});

test('15. v1.1 sync:get across two nodes with Redis', { timeout: 60_000 }, async (t) => {
  const nodes = await sharedNodes(t);
  if (!nodes) return;
  await syncFlow(t, nodes.a, nodes.b, 'two');
});
