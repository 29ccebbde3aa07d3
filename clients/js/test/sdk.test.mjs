// The SDK against real `switchboard serve` nodes: every request event through its typed
// method, typed errors, tenants kept apart, two nodes sharing the test environment's
// Redis, catch-up after the node under the client is killed, and token refresh.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, afterEach, test } from 'node:test';
import { parse } from 'yaml';

import { generate } from '../scripts/generate-types.mjs';
import {
  METHODS,
  NAMESPACES,
  SwitchboardError,
  client,
  closeAll,
  front,
  nowSecs,
  randomId,
  record,
  services,
  startNode,
  stopAll,
  token,
  until,
} from './helpers.mjs';

afterEach(closeAll);
after(stopAll);

test('the generated types are what dataplane/asyncapi.yaml generates', () => {
  const api = parse(readFileSync(new URL('../../../dataplane/asyncapi.yaml', import.meta.url), 'utf8'));
  const committed = readFileSync(new URL('../src/generated/protocol.ts', import.meta.url), 'utf8');
  assert.equal(committed, generate(api), 'src/generated/protocol.ts is stale: run `npm run generate` in clients/js');
});

/** Wrap a client's `request` to note which events went through it. */
function noting(c, seen) {
  const inner = c.request.bind(c);
  c.request = (ns, event, ...rest) => {
    seen.add(`${ns} ${event}`);
    return inner(ns, event, ...rest);
  };
  return c;
}

test('one node: every request event through its typed method', async () => {
  const node = await startNode({ name: 'sdk-all' });
  const tenant = `t${randomId(3)}`;
  const seen = new Set();
  const tok = (u) => token(node.secret, u, tenant);
  const alice = noting(await client(node, tok('alice')), seen);
  const bob = noting(await client(node, tok('bob')), seen);
  const carol = noting(await client(node, tok('carol')), seen);
  const room = `r-${randomId(3)}`;
  const bobGot = record(bob, '/chat', 'message:new');

  // /chat
  const created = await alice.chat.roomCreate({ room_id: room, visibility: 'public', members: ['bob'] });
  assert.equal(created.room.id, room);
  assert.deepEqual(created.skipped, []);
  assert.equal((await carol.chat.roomJoin({ room_id: room })).room.owner_id, 'alice');
  await alice.chat.roomInvite({ room_id: room, user_ids: ['dave'] });
  const { members } = await alice.chat.roomMembers({ room_id: room });
  assert.deepEqual(members.map((m) => m.user_id).sort(), ['alice', 'bob', 'carol', 'dave']);
  const sent = await alice.chat.messageSend({ room_id: room, body: 'hello', client_msg_id: 'c1' });
  assert.equal(sent.message.seq, 1);
  assert.equal(sent.duplicate, false);
  await until(() => bobGot.length === 1, 5000, 'bob gets message:new');
  assert.equal(bobGot[0].message.body, 'hello');
  const edited = await alice.chat.messageEdit({ room_id: room, seq: 1, body: 'hello!' });
  assert.equal(edited.message.body, 'hello!');
  const reacted = await bob.chat.messageReact({ room_id: room, seq: 1, emoji: '👍', on: true });
  assert.deepEqual(reacted.reactions.map((r) => [r.emoji, r.count]), [['👍', 1]]);
  await bob.chat.messageSend({ room_id: room, body: 'in thread', thread_root: 1 });
  assert.equal((await alice.chat.messageHistory({ room_id: room })).messages.length, 2);
  assert.equal((await alice.chat.messageThread({ room_id: room, root_seq: 1 })).messages[0].body, 'in thread');
  assert.deepEqual(await bob.chat.messageDelivered({ room_id: room, up_to_seq: 2 }), {});
  // Sending moved bob's own pointers to his message (seq 2); carol has read nothing.
  assert.equal((await carol.chat.receiptRead({ room_id: room, up_to_seq: 1 })).unread, 1);
  assert.deepEqual((await bob.chat.receiptBatch({ receipts: [{ room_id: room, up_to_seq: 2, kind: 'read' }] })).unread, { [room]: 0 });
  assert.deepEqual((await carol.chat.unreadGet({})).counts, { [room]: 1 });
  const sync = await carol.chat.syncGet({});
  assert.deepEqual(sync.rooms.map((r) => [r.room_id, r.last_seq]), [[room, 2]]);
  await alice.chat.typingStart({ room_id: room });
  const agg = await bob.chat.typingGetAggregated({ room_id: room });
  assert.equal(agg.display_text, 'Alice is typing...');
  await alice.chat.typingStop({ room_id: room });
  assert.equal((await alice.chat.privacySet({ read_receipts: true })).privacy.read_receipts, true);
  await alice.chat.roomSetRole({ room_id: room, user_id: 'bob', role: 'moderator' });
  await bob.chat.roomMute({ room_id: room, user_id: 'carol', until: null });
  await assert.rejects(carol.chat.messageSend({ room_id: room, body: 'muted?' }), { code: 'forbidden' });
  assert.equal((await alice.chat.roomSetSlowMode({ room_id: room, interval_s: 5 })).room.slow_mode_s, 5);
  const kicked = record(carol, '/chat', 'room:kicked');
  await bob.chat.roomKick({ room_id: room, user_id: 'carol', reason: 'spam' });
  await until(() => kicked.length === 1, 5000, 'room:kicked');
  assert.deepEqual(kicked[0], { room_id: room, reason: 'spam' });
  await bob.chat.roomBan({ room_id: room, user_id: 'carol' });
  await assert.rejects(carol.chat.roomJoin({ room_id: room }), { code: 'forbidden' });
  await bob.chat.roomUnban({ room_id: room, user_id: 'carol' });
  const deleted = await alice.chat.messageDelete({ room_id: room, seq: 1 });
  assert.equal(deleted.message.deleted, true);
  await bob.chat.roomLeave({ room_id: room });
  await alice.chat.roomDelete({ room_id: room });

  // /presence
  assert.equal((await alice.presence.presenceSetStatus({ status: 'busy', message: 'focus' })).presence.status, 'busy');
  await alice.presence.presenceActivity({});
  const subscribed = await bob.presence.presenceSubscribe({ user_ids: ['alice'] });
  assert.equal(subscribed.presences[0].status, 'busy');
  await bob.presence.presenceUnsubscribe({ user_ids: ['alice'] });
  assert.equal((await bob.presence.presenceGetBatch({ user_ids: ['alice', 'zed'] })).presences[1].status, 'offline');

  // /webrtc
  const ice = await alice.webrtc.webrtcGetIceServers({});
  assert.ok(Array.isArray(ice.ice_servers) && typeof ice.ttl === 'number');
  const incoming = record(bob, '/webrtc', 'call:incoming');
  const { call } = await alice.webrtc.callInitiate({ callee_id: 'bob', media_type: 'audio' });
  await until(() => incoming.length === 1, 5000, 'call:incoming');
  assert.equal(incoming[0].call.id, call.id);
  assert.equal((await bob.webrtc.callAnswer({ call_id: call.id })).call.state, 'active');
  const offers = record(bob, '/webrtc', 'webrtc:offer');
  await alice.webrtc.webrtcOffer({ call_id: call.id, to_user_id: 'bob', sdp: 'v=0 offer' });
  await until(() => offers.length === 1, 5000, 'webrtc:offer');
  assert.deepEqual(offers[0], { call_id: call.id, from_user_id: 'alice', to_user_id: 'bob', sdp: 'v=0 offer' });
  await bob.webrtc.webrtcAnswer({ call_id: call.id, to_user_id: 'alice', sdp: 'v=0 answer' });
  await alice.webrtc.webrtcIceCandidate({ call_id: call.id, to_user_id: 'bob', candidate: { candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host' } });
  const q = await alice.webrtc.callReportQuality({ call_id: call.id, latency_ms: 900, packet_loss_percentage: 0, jitter_ms: 1, bitrate_kbps: 500 });
  assert.deepEqual(q.issues, ['high_latency']);
  assert.equal((await alice.webrtc.callHangup({ call_id: call.id })).call.state, 'ended');
  await until(async () => (await alice.webrtc.callHistory({})).calls.length === 1, 5000, 'call history');
  const group = (await alice.webrtc.callCreateGroup({ participant_ids: ['bob', 'carol'], media_type: 'video' })).call;
  await alice.webrtc.callAddParticipant({ call_id: group.id, user_id: 'dave' });
  await alice.webrtc.callRemoveParticipant({ call_id: group.id, user_id: 'dave' });
  await carol.webrtc.callReject({ call_id: group.id });
  await alice.webrtc.callHangup({ call_id: group.id });

  // /notifications
  const dev = await alice.notifications.notificationRegisterDevice({ platform: 'fcm', token: `tok-${randomId(8)}` });
  assert.equal(dev.device.platform, 'fcm');
  await alice.notifications.notificationUnregisterDevice({ token: dev.device.token });
  assert.equal((await alice.notifications.notificationSetPreferences({ min_priority: 'high' })).preferences.min_priority, 'high');
  assert.equal((await alice.notifications.notificationGetPreferences({})).preferences.min_priority, 'high');
  assert.deepEqual((await alice.notifications.notificationList({})).notifications, []);
  assert.deepEqual(await alice.notifications.notificationMarkRead({ ids: ['n1'] }), { marked: 0 });

  // auth:refresh on every namespace (a fresh token of the same user and session).
  await alice.refresh(); // no refreshToken: nothing happens
  for (const ns of NAMESPACES) {
    const fresh = token(node.secret, 'alice', tenant, { sid: undefined, jti: undefined });
    const plain = noting(await client(node, token(node.secret, 'alice', tenant, { sid: undefined, jti: undefined }), { namespaces: [ns] }), seen);
    const api = { '/chat': plain.chat, '/presence': plain.presence, '/webrtc': plain.webrtc, '/notifications': plain.notifications }[ns];
    assert.ok((await api.authRefresh({ token: fresh })).expires_at > Date.now());
  }

  const all = NAMESPACES.flatMap((ns) => Object.values(METHODS[ns]).map((e) => `${ns} ${e}`));
  const missed = all.filter((e) => !seen.has(e));
  assert.deepEqual(missed, [], 'every request event is exercised');
});

test('typed errors: SwitchboardError with the protocol code', async () => {
  const node = await startNode({ name: 'sdk-errors' });
  const tenant = `t${randomId(3)}`;
  const alice = await client(node, token(node.secret, 'alice', tenant));

  const err = await alice.chat.roomJoin({ room_id: 'nope' }).catch((e) => e);
  assert.ok(err instanceof SwitchboardError);
  assert.equal(err.code, 'not_found');
  assert.equal(err.event, 'room:join');
  await assert.rejects(alice.chat.messageSend({ room_id: 'x' }), { name: 'SwitchboardError', code: 'bad_request' });
  await assert.rejects(alice.chat.roomCreate({ room_id: 'bad id!', visibility: 'public' }), { code: 'bad_request' });
  // An event the node does not know is answered too (bad_request), never left to time out.
  await assert.rejects(alice.request('/chat', 'no:such-event', {}, { timeoutMs: 3000 }), { code: 'bad_request' });

  const refused = await client(node, token('another-secret-entirely', 'alice', tenant), { connect: false });
  const e = await refused.connect().catch((x) => x);
  assert.ok(e instanceof SwitchboardError);
  assert.equal(e.code, 'unauthorized');
  assert.equal(e.event, 'connect');
});

test('tenants stay apart through the SDK', async () => {
  const node = await startNode({ name: 'sdk-tenants' });
  const [t1, t2] = [`a${randomId(3)}`, `b${randomId(3)}`];
  const a = await client(node, token(node.secret, 'alice', t1));
  const b = await client(node, token(node.secret, 'bob', t1));
  const other = await client(node, token(node.secret, 'bob', t2)); // same user id, other tenant
  const seenOther = record(other, '/chat', 'message:new');
  const room = `r-${randomId(3)}`;
  await a.chat.roomCreate({ room_id: room, visibility: 'public', members: ['bob'] });
  const got = record(b, '/chat', 'message:new');
  await a.chat.messageSend({ room_id: room, body: 'only t1' });
  await until(() => got.length === 1, 5000, 'same-tenant delivery');
  await assert.rejects(other.chat.roomJoin({ room_id: room }), { code: 'not_found' });
  await assert.rejects(other.chat.messageHistory({ room_id: room }), { code: 'not_found' });
  assert.deepEqual((await other.chat.unreadGet({})).counts, {});
  assert.equal(seenOther.length, 0);
});

test('two nodes sharing Redis: events cross nodes, typed', async (t) => {
  const [redisUrl] = services(t, ['SWITCHBOARD_TEST_REDIS_URL'], 'the two-node SDK tests need Redis') ?? [];
  if (!redisUrl) return;
  const secret = `s-${randomId(16)}`;
  const run = randomId(3);
  const a = await startNode({ name: 'sdk-2a', secret, redisUrl, nodeId: `sdk-a-${run}` });
  const b = await startNode({ name: 'sdk-2b', secret, redisUrl, nodeId: `sdk-b-${run}` });
  const tenant = `t${run}`;
  const alice = await client(a, token(secret, 'alice', tenant));
  const bob = await client(b, token(secret, 'bob', tenant));
  const room = `r-${run}`;
  await alice.chat.roomCreate({ room_id: room, visibility: 'private', members: ['bob'] });
  const got = record(bob, '/chat', 'message:new');
  const updates = record(bob, '/presence', 'presence:update');
  await bob.presence.presenceSubscribe({ user_ids: ['alice'] });
  await alice.chat.messageSend({ room_id: room, body: 'across' });
  await until(() => got.length === 1, 5000, 'message across nodes');
  assert.equal(got[0].message.sender_id, 'alice');
  await alice.presence.presenceSetStatus({ status: 'away' });
  await until(() => updates.some((u) => u.presence.user_id === 'alice' && u.presence.status === 'away'), 5000, 'presence across nodes');
});

test('catch-up: the node under the client is killed; every message once, in order', async (t) => {
  const [redisUrl] = services(t, ['SWITCHBOARD_TEST_REDIS_URL'], 'the catch-up test needs two nodes sharing Redis') ?? [];
  if (!redisUrl) return;
  const secret = `s-${randomId(16)}`;
  const run = randomId(3);
  const a = await startNode({ name: 'sdk-cu-a', secret, redisUrl, nodeId: `cu-a-${run}` });
  const b = await startNode({ name: 'sdk-cu-b', secret, redisUrl, nodeId: `cu-b-${run}` });
  let target = a.port;
  const lb = await front(() => target);
  t.after(() => lb.close());
  const tenant = `t${run}`;
  const room = `r-${run}`;
  const bob = await client(b, token(secret, 'bob', tenant));
  await bob.chat.roomCreate({ room_id: room, visibility: 'public', members: ['alice'] });
  const alice = await client(lb.url, token(secret, 'alice', tenant), { manager: { transports: ['websocket'] } });
  const got = record(alice, '/chat', 'message:new');
  await until(() => alice.lastSeqs().has(room), 5000, 'alice tracks the room');

  for (let i = 1; i <= 3; i++) await bob.chat.messageSend({ room_id: room, body: `m${i}` });
  await until(() => got.length === 3, 5000, 'live messages');

  // The node under alice dies without a goodbye; the front sends new connections to b.
  process.kill(a.pid, 'SIGKILL');
  await a.whenExited;
  lb.cut();
  target = b.port;
  for (let i = 4; i <= 9; i++) await bob.chat.messageSend({ room_id: room, body: `m${i}` });
  await until(() => got.length >= 9, 15000, 'catch-up after reconnect');
  await bob.chat.messageSend({ room_id: room, body: 'm10' });
  await until(() => got.length >= 10, 5000, 'live after catch-up');
  await new Promise((r) => setTimeout(r, 300)); // room for a duplicate to show up
  assert.deepEqual(
    got.map((p) => p.message.seq),
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
  );
  assert.deepEqual(
    got.map((p) => p.message.body),
    ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8', 'm9', 'm10'],
  );
});

test('token refresh: on auth:expiring, and before exp when the server does not ask', async () => {
  const node = await startNode({ name: 'sdk-refresh', args: ['--set', 'jwt.expiry_notice=2s'] });
  const tenant = `t${randomId(3)}`;
  const sid = `sid-${randomId(4)}`;
  let asked = 0;
  const fresh = () => {
    asked += 1;
    return token(node.secret, 'alice', tenant, { sid, exp: nowSecs() + 3600 });
  };
  // Expires in 4 s: the server sends auth:expiring 2 s before (refreshBeforeMs is shorter).
  const short = token(node.secret, 'alice', tenant, { sid, exp: nowSecs() + 4 });
  const c = await client(node, short, { refreshToken: fresh, refreshBeforeMs: 500 });
  await until(() => asked >= 1, 6000, 'refresh on auth:expiring');
  await until(() => c.currentToken() !== short, 2000, 'new token in use');
  await new Promise((r) => setTimeout(r, 3000)); // past the old exp
  assert.ok(Object.values(c.sockets).every((s) => s.connected), 'still connected on every namespace');
  assert.equal(asked, 1, 'one refresh for the four namespaces');
  await c.chat.unreadGet({});

  // No notice from the server (notice 2 s, token 1 h): the SDK refreshes before exp.
  let early = 0;
  const long = token(node.secret, 'bob', tenant, { sid, exp: nowSecs() + 3600 });
  const d = await client(node, long, {
    refreshToken: () => {
      early += 1;
      return token(node.secret, 'bob', tenant, { sid, exp: nowSecs() + 7200 });
    },
    refreshBeforeMs: 3600_000 - 1000,
  });
  await until(() => early === 1, 5000, 'refresh before exp');
  await until(() => d.currentToken() !== long, 2000, 'new token in use');
  await d.presence.presenceActivity({});
});
