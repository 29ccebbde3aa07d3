// Interoperability of Switchboard's /notifications namespace and notification service API
// with the official socket.io-client (npm, v4.8.x). Contract: PROTOCOL.md (/notifications,
// HTTP); what the node does precisely: dataplane/PROTOCOL.md "/notifications as implemented".
//
// Servers: `switchboard serve` started by the test (SWITCHBOARD_BIN). The cross-node test
// needs Redis (SWITCHBOARD_TEST_REDIS_URL): skipped without it, failed when CI=true.
//
// Run: cargo build -p switchboard-dataplane, then cd tests/node && npm test

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import { closeAll, connectUser, expectNone, fails, ok, scenario, waitFor } from './lib/client.mjs';
import { randomId, services, startNode, stopAll } from './lib/server.mjs';

const RUN = randomId(4);
const SERVICE = `service-${randomId(16)}`;
const NS = { namespace: '/notifications' };
const test = scenario;

let node;

before(async () => {
  node = await startNode({ name: 'notifications-embedded', env: { SWITCHBOARD_SERVICE_TOKEN: SERVICE } });
});

after(async () => {
  closeAll();
  await stopAll();
});

/** POST /api/v1/notifications; returns { status, body }. */
async function enqueue(target, body, token = SERVICE) {
  const res = await fetch(`${target.url}/api/v1/notifications`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

const note = (tenant, id, users, extra = {}) => ({
  id,
  tenant,
  user_ids: users,
  type: 'mention',
  priority: 'normal',
  title: 'You were mentioned',
  body: 'in #general',
  data: { room: 'general' },
  ...extra,
});

test('devices, preferences, delivery, list and mark-read with the official client', async () => {
  const tenant = `acme-${RUN}`;
  const alice = await connectUser(node, 'alice', tenant, NS);
  const { device } = await ok(alice, 'notification:register-device', { platform: 'fcm', token: `tok-${RUN}`, app_id: 'com.example.chat' });
  assert.equal(device.platform, 'fcm');
  assert.equal(typeof device.registered_at, 'number');
  await fails(alice, 'notification:register-device', { platform: 'pager', token: 'x' }, 'bad_request');
  await fails(alice, 'notification:register-device', 'not an object', 'bad_request');

  const { preferences } = await ok(alice, 'notification:set-preferences', {
    quiet_hours: { start: '23:00', end: '06:30', timezone: 'America/Sao_Paulo' },
    types: { system: false },
  });
  assert.deepEqual(preferences.quiet_hours, { start: '23:00', end: '06:30', timezone: 'America/Sao_Paulo' });
  assert.equal(preferences.types.system, false);
  assert.deepEqual((await ok(alice, 'notification:get-preferences', {})).preferences, preferences);

  const id = `n-${randomId(6)}`;
  const res = await enqueue(node, note(tenant, id, ['alice']));
  assert.equal(res.status, 202, JSON.stringify(res.body));
  const e = await waitFor(alice, 'notification', (d) => d.id === id, 3000);
  assert.equal(e.data.type, 'mention');
  assert.equal(e.data.title, 'You were mentioned');
  assert.deepEqual(e.data.data, { room: 'general' });

  // A system notification is turned off for alice: nothing arrives, nothing is listed.
  const off = `n-${randomId(6)}`;
  assert.equal((await enqueue(node, note(tenant, off, ['alice'], { type: 'system' }))).status, 202);
  await expectNone(alice, 'notification', (d) => d.id === off, 500);

  const { notifications } = await ok(alice, 'notification:list', { unread_only: true });
  assert.deepEqual(notifications.map((n) => n.id), [id]);
  assert.equal((await ok(alice, 'notification:mark-read', { ids: [id] })).marked, 1);
  assert.deepEqual((await ok(alice, 'notification:list', { unread_only: true })).notifications, []);
  await ok(alice, 'notification:unregister-device', { token: `tok-${RUN}` });
  await fails(alice, 'notification:unregister-device', { token: `tok-${RUN}` }, 'not_found');
});

test('the service API needs the service token and names bad fields', async () => {
  const tenant = `acme-${RUN}`;
  assert.equal((await enqueue(node, note(tenant, 'n1', ['alice']), null)).status, 401);
  const bad = await enqueue(node, { ...note(tenant, 'n1', ['alice']), user_ids: [] });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.code, 'bad_request');
  assert.match(bad.body.error.message, /user_ids/);
});

test('a notification for one tenant never reaches the same user id in another', async () => {
  const [a, b] = [`a-${RUN}`, `b-${RUN}`];
  const mine = await connectUser(node, 'sam', a, NS);
  const theirs = await connectUser(node, 'sam', b, NS);
  const id = `n-${randomId(6)}`;
  assert.equal((await enqueue(node, note(a, id, ['sam']))).status, 202);
  await waitFor(mine, 'notification', (d) => d.id === id, 3000);
  await expectNone(theirs, 'notification', () => true, 500);
  assert.deepEqual((await ok(theirs, 'notification:list', {})).notifications, []);
});

test('in-app delivery reaches the user on another node through Redis', async (t) => {
  const [redisUrl] = services(t, ['SWITCHBOARD_TEST_REDIS_URL'], 'the cross-node test needs Redis') ?? [];
  if (!redisUrl) return;
  const secret = `secret-${randomId(16)}`;
  const env = { SWITCHBOARD_SERVICE_TOKEN: SERVICE };
  const a = await startNode({ name: 'notif-a', secret, redisUrl, env });
  const b = await startNode({ name: 'notif-b', secret, redisUrl, env });
  const tenant = `x-${RUN}`;
  const onB = await connectUser(b, 'kim', tenant, NS);
  const id = `n-${randomId(6)}`;
  assert.equal((await enqueue(a, note(tenant, id, ['kim']))).status, 202);
  await waitFor(onB, 'notification', (d) => d.id === id, 3000);
  const onA = await connectUser(a, 'kim', tenant, NS);
  assert.deepEqual((await ok(onA, 'notification:list', {})).notifications.map((n) => n.id), [id]);
});
