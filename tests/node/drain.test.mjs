// Graceful drain with the official socket.io-client (npm, v4.8.x): a client connected to
// node A, which gets SIGTERM, is told `server:draining`, sees its transport close
// (`transport close`), and reconnects by itself, through the same URL, to node B. Its
// presence never shows offline to a subscriber on B. The contract: PROTOCOL.md,
// "Graceful drain (as implemented)".
//
// The clients reach the nodes through a small TCP proxy standing in for a Service: all
// connections go to A until A drains; then the first new connection still goes to A
// (as a load balancer that has not yet seen A's readiness fail would send it: A answers
// 503) and every later one to B.
//
// Needs Redis (SWITCHBOARD_TEST_REDIS_URL, from `tests/env/envctl up redis` then
// `source tests/.state/env`): without it the test is skipped, or fails when CI=true.
//
// Run: cargo build -p switchboard-dataplane, then cd tests/node && npm test

import assert from 'node:assert/strict';
import { after } from 'node:test';

import { Manager } from 'socket.io-client';

import { connectUser, ok, record, scenario, seen, sleep, waitFor } from './lib/client.mjs';
import { token } from './lib/jwt.mjs';
import { tcpProxy } from './lib/proxy.mjs';
import { randomId, services, startNode, stopAll } from './lib/server.mjs';


const WINDOW_MS = 2000;
const RECONNECT_GRACE_MS = 3000;
const HEARTBEAT_TTL_MS = 3000;

after(async () => {
  await stopAll();
});


/** A Manager with a socket per namespace for user `sub`, recording what they see. */
function connectThrough(url, sub, tok, namespaces) {
  const manager = new Manager(url, {
    transports: ['websocket'],
    reconnection: true,
    reconnectionDelay: 200,
    reconnectionDelayMax: 1000,
    randomizationFactor: 0,
    timeout: 5000,
  });
  manager.errors = [];
  manager.reconnected = 0;
  manager.on('reconnect_error', (e) => manager.errors.push(e));
  manager.on('reconnect', () => manager.reconnected++);
  const sockets = namespaces.map((ns) => {
    const s = manager.socket(ns, { auth: { token: tok } });
    s.user = `${sub}${ns}`;
    record(s, ['server:draining', 'connect']);
    return s;
  });
  return { manager, sockets };
}

const errorText = (e) => [e?.message, e?.description?.message, e?.description?.error?.message, String(e?.description ?? '')].join(' ');

scenario('a client of a draining node reconnects to another node by itself, and stays online', {}, async (t) => {
  const [REDIS] = services(t, ['SWITCHBOARD_TEST_REDIS_URL'], 'the drain test needs two nodes sharing Redis') ?? [];
  if (!REDIS) return;
  const run = randomId(4);
  const tenant = `drain-${run}`;
  const secret = `test-secret-${randomId(16)}`;
  const common = ['--set', `presence.heartbeat_ttl=${HEARTBEAT_TTL_MS}ms`, '--set', `server.reconnect_grace=${RECONNECT_GRACE_MS}ms`];
  const a = await startNode({ name: 'drain-a', secret, redisUrl: REDIS, nodeId: `drain-a-${run}`, args: [...common, '--set', `server.drain_window=${WINDOW_MS}ms`] });
  const b = await startNode({ name: 'drain-b', secret, redisUrl: REDIS, nodeId: `drain-b-${run}`, args: common });

  let draining = false;
  let sentToA = 0;
  const lb = await tcpProxy(() => {
    if (!draining) return a.port;
    sentToA++;
    return sentToA === 1 ? a.port : b.port;
  });
  try {
    // Dave: two connections (say, an app with /presence and /chat, and a tab with /chat
    // only): A closes one halfway through the window and the other at its end. His one
    // /presence device would show him offline the moment its connection went, were it
    // not kept while he reconnects.
    const tok = token(secret, 'dave', tenant);
    const tabs = [connectThrough(lb.url, 'dave', tok, ['/presence', '/chat']), connectThrough(lb.url, 'dave', tok, ['/chat'])];
    const all = tabs.flatMap((t) => t.sockets);
    await Promise.all(all.map((s) => waitFor(s, 'connect', () => true, 5000)));
    assert.ok(lb.log.every((c) => c.to === a.port), 'before the drain every connection went to A');

    // Erin, on B, watches Dave's presence.
    const erin = await connectUser(b, 'erin', tenant, { namespace: '/presence' });
    const sub = await ok(erin, 'presence:subscribe', { user_ids: ['dave'] });
    assert.equal(sub.presences[0].status, 'online');
    assert.equal(sub.presences[0].devices, 1);

    const t0 = Date.now();
    draining = true;
    process.kill(a.pid, 'SIGTERM');

    // Every socket hears about the drain, then loses its transport (not a namespace
    // disconnect) about when it was told, then comes back by itself.
    for (const s of all) {
      const notice = await waitFor(s, 'server:draining', () => true, 2000);
      assert.ok(notice.data.within_ms > 0 && notice.data.within_ms <= WINDOW_MS, `within_ms ${JSON.stringify(notice.data)}`);
      const gone = await waitFor(s, 'disconnect', () => true, WINDOW_MS + 2000);
      assert.equal(gone.data, 'transport close', 'the official client retries a transport close');
      const late = gone.at - t0 - notice.data.within_ms;
      assert.ok(late > -300 && late < 1000, `closed ${gone.at - t0} ms into the drain, announced ${notice.data.within_ms} ms`);
    }
    const [first, second] = tabs.map((t) => Math.min(...t.sockets.map((s) => seen(s, 'disconnect')[0].at)));
    assert.ok(Math.abs(first - second) >= WINDOW_MS / 4, `the two connections were closed apart (${Math.abs(first - second)} ms), spread over the window`);
    for (const s of all) await waitFor(s, 'connect', () => true, 8000, t0);
    for (const t of tabs) assert.ok(t.manager.reconnected >= 1, 'reconnected through its own reconnection logic');

    // The first retry hit A while it drained: refused (503 on the WebSocket handshake),
    // retried, and landed on B like every later connection.
    const afterDrain = lb.log.filter((c) => c.at >= t0);
    assert.equal(afterDrain[0]?.to, a.port, 'one reconnection attempt reached A while it drained');
    assert.ok(afterDrain.slice(1).every((c) => c.to === b.port), 'every other one went to B');
    const refused = tabs.flatMap((t) => t.manager.errors);
    assert.equal(refused.length, 1, `one failed attempt: ${refused.map(errorText).join('; ')}`);
    assert.match(errorText(refused[0]), /503/, 'the attempt that reached A got 503');

    // A exits by itself once drained.
    const exit = await Promise.race([a.whenExited, sleep(WINDOW_MS + 8000).then(() => null)]);
    assert.deepEqual(exit, { code: 0, signal: null }, `A exited: ${a.output()}`);

    // Dave's chat works on B.
    const chat = tabs[0].sockets[1];
    const room = await chat.timeout(3000).emitWithAck('room:create', { visibility: 'public' });
    assert.equal(room.ok, true, JSON.stringify(room));

    // A's device of Dave stays until A's last heartbeat lapses, then B sweeps it: Dave is
    // back to one device (now on B), and was never shown offline.
    const settled = await waitFor(erin, 'presence:update', (d) => d.presence.user_id === 'dave' && d.presence.devices === 1, RECONNECT_GRACE_MS + HEARTBEAT_TTL_MS + 4000, t0 + RECONNECT_GRACE_MS);
    assert.equal(settled.data.presence.status, 'online');
    const offline = seen(erin, 'presence:update', (d) => d.presence.user_id === 'dave' && d.presence.status === 'offline');
    assert.equal(offline.length, 0, `Dave must never show offline: ${offline.map((e) => JSON.stringify(e.data)).join(', ')}`);
    const now = await ok(erin, 'presence:get-batch', { user_ids: ['dave'] });
    assert.deepEqual([now.presences[0].status, now.presences[0].devices], ['online', 1]);
    for (const s of all) s.close();
  } finally {
    lb.close();
  }
});
