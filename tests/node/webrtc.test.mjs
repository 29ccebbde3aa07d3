// Calls and signaling on Switchboard's /webrtc namespace with the official
// socket.io-client (npm, v4.8.x), against two `switchboard serve` nodes sharing the real
// Redis, with call history in the real MongoDB-wire server (FerretDB from tests/env, or
// MONGODB_URI) and TURN credentials for the coturn from tests/env. The contract is
// PROTOCOL.md (/webrtc).
//
// Needs SWITCHBOARD_TEST_REDIS_URL and SWITCHBOARD_TEST_MONGODB_URI (`tests/env/envctl up
// redis ferretdb coturn node`, then `source tests/.state/env`): without them the tests
// are skipped, or fail when CI=true.
//
// Run: cargo build -p switchboard-dataplane, then cd tests/node && npm test

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import { ack, closeAll, connectUser, disconnected, expectNone, fails, ok, scenario, sleep, waitFor } from './lib/client.mjs';
import { randomId, revoke, services, startNode, stopAll } from './lib/server.mjs';

const RUN = randomId(4);
const RINGING_MS = 2000;
const GRACE_MS = 1000;
const NEED = ['SWITCHBOARD_TEST_REDIS_URL', 'SWITCHBOARD_TEST_MONGODB_URI'];
const WHY = 'the /webrtc tests need Redis and MongoDB';

const WEBRTC = { namespace: '/webrtc' };
const test = scenario;

/** Two nodes sharing Redis and one history database; null when the services are missing. */
let nodes = null;

before(async () => {
  const found = services(null, NEED, WHY);
  if (!found) return;
  const [redisUrl, mongo] = found;
  const secret = `webrtc-secret-${randomId(12)}`;
  const adminToken = `admin-${randomId(16)}`;
  const env = {
    SWITCHBOARD_RINGING_TIMEOUT: `${RINGING_MS}ms`,
    SWITCHBOARD_CALL_DISCONNECT_GRACE: `${GRACE_MS}ms`,
    SWITCHBOARD_MAX_CALL_PARTICIPANTS: '4',
    SWITCHBOARD_MONGODB_URI: mongo,
    SWITCHBOARD_MONGODB_DATABASE: `sb_node_${RUN}`,
    ...(process.env.SWITCHBOARD_TEST_TURN_URL
      ? {
          SWITCHBOARD_STUN_URLS: process.env.SWITCHBOARD_TEST_STUN_URL,
          SWITCHBOARD_TURN_URLS: process.env.SWITCHBOARD_TEST_TURN_URL,
          SWITCHBOARD_TURN_SECRET: process.env.SWITCHBOARD_TEST_TURN_SECRET,
        }
      : {}),
  };
  const common = { redisUrl, secret, adminToken, env };
  nodes = [await startNode({ ...common, name: 'webrtc-a', nodeId: `wa-${RUN}` }), await startNode({ ...common, name: 'webrtc-b', nodeId: `wb-${RUN}` })];
});

after(async () => {
  closeAll();
  await stopAll();
});

function need(t) {
  if (!nodes) services(t, NEED, WHY);
  return !!nodes;
}

/** A tenant of its own per scenario, so runs and scenarios never see each other. */
const tenantFor = (name) => `t-${name}-${RUN}`;

const user = (node, sub, tenant) => connectUser(node, sub, tenant, WEBRTC);

/**
 * The user's history once it holds `callId`: history is written after `call:ended` goes
 * out (through the outbox, by whichever node drains it first), so it is polled.
 */
// History is written after `call:ended`, through the outbox (drained every second): allow
// for a database slowed by a busy disk, and say so when the call never shows up.
async function historyWith(socket, callId, payload = {}, ms = 15000) {
  const until = Date.now() + ms;
  for (;;) {
    const { calls } = await ok(socket, 'call:history', payload);
    if (calls.some((c) => c.id === callId)) return calls;
    assert.ok(Date.now() < until, `call ${callId} not in call:history ${JSON.stringify(payload)} after ${ms} ms: ${JSON.stringify(calls)}`);
    await sleep(100);
  }
}

const ended = (socket, callId, reason, ms = 3000) => waitFor(socket, 'call:ended', (d) => d?.call?.id === callId && d.reason === reason, ms);

test('1:1 call across nodes: incoming, answer, signaling relay with server-set from_user_id, hangup, history', async (t) => {
  if (!need(t)) return;
  const tenant = tenantFor('direct');
  const [a, b] = nodes;
  const alice = await user(a, 'alice', tenant);
  const bob = await user(b, 'bob', tenant);
  const eve = await user(b, 'eve', tenant);

  const { call } = await ok(alice, 'call:initiate', { callee_id: 'bob', media_type: 'video' });
  assert.equal(call.state, 'ringing');
  assert.equal(call.kind, 'direct');
  assert.deepEqual(call.participants.map((p) => [p.user_id, p.state]), [['alice', 'joined'], ['bob', 'ringing']]);
  const incoming = await waitFor(bob, 'call:incoming', (d) => d.call.id === call.id);
  assert.equal(incoming.data.call.initiator_id, 'alice');

  // Nobody outside the call can act on it or signal into it.
  await fails(eve, 'call:answer', { call_id: call.id }, 'not_found');
  await fails(eve, 'webrtc:offer', { call_id: call.id, to_user_id: 'bob', sdp: 'v=0' }, 'not_found');
  await fails(alice, 'call:answer', { call_id: call.id }, 'conflict');

  const answered = await ok(bob, 'call:answer', { call_id: call.id });
  assert.equal(answered.call.state, 'active');
  await waitFor(alice, 'call:answered', (d) => d.call.id === call.id && d.user_id === 'bob');

  // Signaling: from_user_id comes from the token, never from the payload.
  await ok(alice, 'webrtc:offer', { call_id: call.id, to_user_id: 'bob', sdp: 'v=0 offer', from_user_id: 'mallory' });
  const offer = await waitFor(bob, 'webrtc:offer', (d) => d.call_id === call.id);
  assert.equal(offer.data.from_user_id, 'alice');
  assert.equal(offer.data.sdp, 'v=0 offer');
  await ok(bob, 'webrtc:answer', { call_id: call.id, to_user_id: 'alice', sdp: 'v=0 answer' });
  assert.equal((await waitFor(alice, 'webrtc:answer', (d) => d.call_id === call.id)).data.from_user_id, 'bob');
  const cand = { candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 };
  await ok(bob, 'webrtc:ice-candidate', { call_id: call.id, to_user_id: 'alice', candidate: cand });
  assert.deepEqual((await waitFor(alice, 'webrtc:ice-candidate', (d) => d.call_id === call.id)).data.candidate, cand);
  await fails(alice, 'webrtc:offer', { call_id: call.id, to_user_id: 'eve', sdp: 'v=0' }, 'forbidden');
  await fails(alice, 'webrtc:offer', { call_id: call.id, to_user_id: 'bob', sdp: '' }, 'bad_request');
  await fails(alice, 'webrtc:ice-candidate', { call_id: call.id, to_user_id: 'bob', candidate: 42 }, 'bad_request');
  await expectNone(eve, 'webrtc:offer', () => true, 100);

  await sleep(50);
  const hung = await ok(alice, 'call:hangup', { call_id: call.id });
  assert.equal(hung.call.state, 'ended');
  assert.equal(hung.call.end_reason, 'hangup');
  await ended(bob, call.id, 'hangup');
  await ended(alice, call.id, 'hangup');
  await fails(bob, 'webrtc:offer', { call_id: call.id, to_user_id: 'alice', sdp: 'v=0' }, 'forbidden');
  await fails(bob, 'call:hangup', { call_id: call.id }, 'conflict');

  const calls = await historyWith(bob, call.id);
  assert.equal(calls[0].id, call.id);
  assert.equal(calls[0].end_reason, 'hangup');
  assert.ok(calls[0].duration_ms >= 50, `duration ${calls[0].duration_ms}`);
  const bobRec = calls[0].participants.find((p) => p.user_id === 'bob');
  assert.ok(bobRec.joined_at && bobRec.left_at >= bobRec.joined_at, JSON.stringify(bobRec));
  assert.deepEqual((await ok(eve, 'call:history', {})).calls, []);
});

test('ringing times out for both sides; reject ends as rejected; history pages newest first', async (t) => {
  if (!need(t)) return;
  const tenant = tenantFor('timeout');
  const [a, b] = nodes;
  const alice = await user(a, 'alice', tenant);
  const bob = await user(b, 'bob', tenant);
  const started = Date.now();
  const { call } = await ok(alice, 'call:initiate', { callee_id: 'bob', media_type: 'audio' });
  await waitFor(bob, 'call:incoming', (d) => d.call.id === call.id);
  const e = await ended(alice, call.id, 'timeout', RINGING_MS + 3000);
  const took = e.at - started;
  assert.ok(took >= RINGING_MS - 50 && took < RINGING_MS + 1500, `timeout after ${took} ms (ringing_timeout ${RINGING_MS} ms)`);
  await ended(bob, call.id, 'timeout');

  const second = (await ok(alice, 'call:initiate', { callee_id: 'bob', media_type: 'audio' })).call;
  await waitFor(bob, 'call:incoming', (d) => d.call.id === second.id);
  await ok(bob, 'call:reject', { call_id: second.id });
  await waitFor(alice, 'call:rejected', (d) => d.call.id === second.id && d.user_id === 'bob');
  await ended(alice, second.id, 'rejected');

  await historyWith(alice, call.id);
  const page1 = await historyWith(alice, second.id, { limit: 1 });
  assert.deepEqual(page1.map((c) => c.id), [second.id]);
  const page2 = (await ok(alice, 'call:history', { limit: 1, before: page1[0].created_at })).calls;
  assert.deepEqual(page2.map((c) => [c.id, c.end_reason]), [[call.id, 'timeout']]);
  // The cursor with the id tie-break pages the same way.
  const page2b = (await ok(alice, 'call:history', { limit: 1, before: page1[0].created_at, before_id: page1[0].id })).calls;
  assert.deepEqual(page2b.map((c) => c.id), [call.id]);
  await fails(alice, 'call:history', { before_id: page1[0].id }, 'bad_request');
  await fails(alice, 'call:history', { limit: 0 }, 'bad_request');
});

test('busy callee, caller already in a call, crossing calls (glare) become one call', async (t) => {
  if (!need(t)) return;
  const tenant = tenantFor('busy');
  const [a, b] = nodes;
  const alice = await user(a, 'alice', tenant);
  const bob = await user(b, 'bob', tenant);
  const carol = await user(a, 'carol', tenant);
  const { call } = await ok(alice, 'call:initiate', { callee_id: 'bob', media_type: 'audio' });
  await ok(bob, 'call:answer', { call_id: call.id });

  const busy = (await ok(carol, 'call:initiate', { callee_id: 'bob', media_type: 'audio' })).call;
  assert.equal(busy.state, 'ended');
  assert.equal(busy.end_reason, 'busy');
  await ended(carol, busy.id, 'busy');
  await expectNone(bob, 'call:incoming', (d) => d.call.id === busy.id, 200);
  await fails(alice, 'call:initiate', { callee_id: 'carol', media_type: 'audio' }, 'conflict');
  await ok(alice, 'call:hangup', { call_id: call.id });

  // Glare: dave calls erin while erin calls dave.
  const dave = await user(a, 'dave', tenant);
  const erin = await user(b, 'erin', tenant);
  const [d1, e1] = await Promise.all([
    ok(dave, 'call:initiate', { callee_id: 'erin', media_type: 'video' }),
    ok(erin, 'call:initiate', { callee_id: 'dave', media_type: 'video' }),
  ]);
  assert.equal(d1.call.id, e1.call.id, 'both sides end up in the same call');
  assert.equal(d1.call.state === 'active' || e1.call.state === 'active', true, `${d1.call.state} / ${e1.call.state}`);
  await waitFor(dave, 'call:answered', (d) => d.call.id === d1.call.id);
  await waitFor(erin, 'call:answered', (d) => d.call.id === d1.call.id);
});

test('group call: create, answer, add and remove participants, per-participant state, ends as all_left', async (t) => {
  if (!need(t)) return;
  const tenant = tenantFor('group');
  const [a, b] = nodes;
  const alice = await user(a, 'alice', tenant);
  const bob = await user(b, 'bob', tenant);
  const carol = await user(a, 'carol', tenant);
  const dave = await user(b, 'dave', tenant);
  const erin = await user(a, 'erin', tenant);
  const frank = await user(b, 'frank', tenant);

  const { call } = await ok(alice, 'call:create-group', { participant_ids: ['bob', 'carol'], media_type: 'video' });
  assert.equal(call.kind, 'group');
  await waitFor(bob, 'call:incoming', (d) => d.call.id === call.id);
  await waitFor(carol, 'call:incoming', (d) => d.call.id === call.id);
  await ok(bob, 'call:answer', { call_id: call.id });
  await waitFor(alice, 'call:participant-joined', (d) => d.call.id === call.id && d.user_id === 'bob');
  await ok(carol, 'call:answer', { call_id: call.id });

  const added = await ok(bob, 'call:add-participant', { call_id: call.id, user_id: 'dave' });
  assert.equal(added.call.participants.find((p) => p.user_id === 'dave').state, 'ringing');
  await waitFor(dave, 'call:incoming', (d) => d.call.id === call.id);
  await fails(bob, 'call:add-participant', { call_id: call.id, user_id: 'erin' }, 'forbidden'); // max 4
  await fails(erin, 'call:add-participant', { call_id: call.id, user_id: 'frank' }, 'not_found');
  await ok(dave, 'call:answer', { call_id: call.id });

  // A joined member signals to another; the removed one can no longer.
  await ok(dave, 'webrtc:offer', { call_id: call.id, to_user_id: 'carol', sdp: 'v=0 g' });
  assert.equal((await waitFor(carol, 'webrtc:offer', (d) => d.call_id === call.id)).data.from_user_id, 'dave');
  await fails(bob, 'call:remove-participant', { call_id: call.id, user_id: 'carol' }, 'forbidden');
  const removed = await ok(alice, 'call:remove-participant', { call_id: call.id, user_id: 'dave' });
  assert.equal(removed.call.participants.find((p) => p.user_id === 'dave').state, 'left');
  await waitFor(bob, 'call:participant-left', (d) => d.call.id === call.id && d.user_id === 'dave');
  await fails(dave, 'webrtc:offer', { call_id: call.id, to_user_id: 'carol', sdp: 'v=0' }, 'forbidden');

  await ok(carol, 'call:hangup', { call_id: call.id });
  await ok(bob, 'call:hangup', { call_id: call.id });
  await ended(alice, call.id, 'all_left');
  const rec = (await historyWith(alice, call.id)).find((c) => c.id === call.id);
  assert.deepEqual(
    Object.fromEntries(rec.participants.map((p) => [p.user_id, p.state])),
    { alice: 'left', bob: 'left', carol: 'left', dave: 'left' },
  );
  assert.ok(rec.participants.every((p) => p.joined_at && p.left_at), JSON.stringify(rec.participants));
  await expectNone(frank, 'call:incoming', () => true, 100);
});

test('a participant whose sockets are gone ends the call as disconnected after the grace period', async (t) => {
  if (!need(t)) return;
  const tenant = tenantFor('grace');
  const [a, b] = nodes;
  const alice = await user(a, 'alice', tenant);
  const bob = await user(b, 'bob', tenant);
  const { call } = await ok(alice, 'call:initiate', { callee_id: 'bob', media_type: 'audio' });
  await ok(bob, 'call:answer', { call_id: call.id });

  // A reconnect within the grace period keeps the call.
  bob.close();
  await sleep(GRACE_MS / 3);
  const bob2 = await user(a, 'bob', tenant);
  await sleep(GRACE_MS + 500);
  await expectNone(alice, 'call:ended', (d) => d.call.id === call.id, 10);

  const gone = Date.now();
  bob2.close();
  const e = await ended(alice, call.id, 'disconnected', GRACE_MS + 3000);
  assert.ok(e.at - gone >= GRACE_MS - 50, `ended ${e.at - gone} ms after the disconnect (grace ${GRACE_MS} ms)`);
});

test('quality reports: validated, issues acked and emitted to the reporter, tenant aggregate on the admin API', async (t) => {
  if (!need(t)) return;
  const tenant = tenantFor('quality');
  const [a, b] = nodes;
  const alice = await user(a, 'alice', tenant);
  const bob = await user(b, 'bob', tenant);
  const { call } = await ok(alice, 'call:initiate', { callee_id: 'bob', media_type: 'video' });
  await ok(bob, 'call:answer', { call_id: call.id });
  const good = { call_id: call.id, latency_ms: 40, packet_loss_percentage: 0.1, jitter_ms: 5, bitrate_kbps: 1500 };
  assert.deepEqual((await ok(alice, 'call:report-quality', good)).issues, []);
  const bad = { call_id: call.id, latency_ms: 900, packet_loss_percentage: 12, jitter_ms: 200, bitrate_kbps: 10 };
  assert.deepEqual((await ok(bob, 'call:report-quality', bad)).issues, ['high_latency', 'packet_loss', 'high_jitter', 'low_bitrate']);
  const issue = await waitFor(bob, 'call:quality-issue', (d) => d.call_id === call.id);
  assert.deepEqual(issue.data.issues, ['high_latency', 'packet_loss', 'high_jitter', 'low_bitrate']);
  await expectNone(alice, 'call:quality-issue', () => true, 100);
  await fails(alice, 'call:report-quality', { ...good, packet_loss_percentage: 101 }, 'bad_request');
  await fails(alice, 'call:report-quality', { ...good, latency_ms: 'fast' }, 'bad_request');

  const res = await fetch(`${a.url}/admin/v1/tenants/${tenant}/calls/quality`, { headers: { authorization: `Bearer ${a.adminToken}` } });
  assert.equal(res.status, 200);
  const q = (await res.json()).data.quality;
  assert.equal(q.reports, 2);
  assert.equal(q.latency_ms.mean, 470);
  assert.equal(q.latency_ms.p95, 900);
  assert.equal(q.issues.packet_loss, 1);
  assert.equal((await fetch(`${a.url}/admin/v1/tenants/${tenant}/calls/quality`)).status, 401);

  await ok(alice, 'call:hangup', { call_id: call.id });
  const rec = (await historyWith(alice, call.id)).find((c) => c.id === call.id);
  assert.equal(rec.quality.reports, 2);
  assert.equal(rec.quality.bitrate_kbps.mean, 755);
});

test('tenants are walls: every /webrtc event from another tenant is refused and nothing leaks', async (t) => {
  if (!need(t)) return;
  const home = tenantFor('wall-a');
  const other = tenantFor('wall-b');
  const [a, b] = nodes;
  const alice = await user(a, 'alice', home);
  const bob = await user(b, 'bob', home);
  // Same user ids, other tenant.
  const xalice = await user(b, 'alice', other);
  const xbob = await user(a, 'bob', other);

  const { call } = await ok(alice, 'call:initiate', { callee_id: 'bob', media_type: 'audio' });
  await waitFor(bob, 'call:incoming', (d) => d.call.id === call.id);
  const id = call.id;
  const every = [
    ['call:answer', { call_id: id }],
    ['call:reject', { call_id: id }],
    ['call:hangup', { call_id: id }],
    ['call:add-participant', { call_id: id, user_id: 'carol' }],
    ['call:remove-participant', { call_id: id, user_id: 'bob' }],
    ['webrtc:offer', { call_id: id, to_user_id: 'alice', sdp: 'v=0' }],
    ['webrtc:answer', { call_id: id, to_user_id: 'alice', sdp: 'v=0' }],
    ['webrtc:ice-candidate', { call_id: id, to_user_id: 'alice', candidate: { candidate: '' } }],
    ['call:report-quality', { call_id: id, latency_ms: 1, packet_loss_percentage: 0, jitter_ms: 1, bitrate_kbps: 100 }],
  ];
  for (const [event, payload] of every) {
    for (const s of [xalice, xbob]) await fails(s, event, payload, 'not_found');
  }
  // Calls and history of the other tenant are its own.
  assert.deepEqual((await ok(xbob, 'call:history', {})).calls, []);
  const own = (await ok(xalice, 'call:initiate', { callee_id: 'bob', media_type: 'audio' })).call;
  assert.equal(own.state, 'ringing', 'bob of the other tenant is not busy with home-tenant calls');
  await waitFor(xbob, 'call:incoming', (d) => d.call.id === own.id);
  await expectNone(bob, 'call:incoming', (d) => d.call.id === own.id, 200);
  await expectNone(xbob, 'call:incoming', (d) => d.call.id === id, 10);
  // A group call of the other tenant invites only its own users of those ids.
  const xcarol = await user(b, 'carol', other);
  const group = (await ok(xcarol, 'call:create-group', { participant_ids: ['alice', 'bob'], media_type: 'audio' })).call;
  await waitFor(xalice, 'call:incoming', (d) => d.call.id === group.id);
  await waitFor(xbob, 'call:incoming', (d) => d.call.id === group.id);
  await expectNone(alice, 'call:incoming', (d) => d.call.id === group.id, 200);
  await expectNone(bob, 'call:incoming', (d) => d.call.id === group.id, 10);
  for (const s of [alice, bob]) await fails(s, 'call:answer', { call_id: group.id }, 'not_found');
  const ice = await ok(xalice, 'webrtc:get-ice-servers', {});
  assert.ok(Array.isArray(ice.ice_servers));
  const res = await ack(alice, 'call:hangup', { call_id: own.id });
  assert.equal(res.error?.code, 'not_found');

  // Revoking home-tenant bob disconnects his /webrtc socket, not the other tenant's bob.
  const r = await revoke(a, { tenant: home, user_id: 'bob' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(await disconnected(bob), 'io server disconnect');
  await expectNone(xbob, 'disconnect', () => true, 300);
});
