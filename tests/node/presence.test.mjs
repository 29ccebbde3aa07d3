// Interoperability of Switchboard's /presence namespace with the official
// socket.io-client (npm, v4.8.x). The contract is PROTOCOL.md (Authentication, Acks,
// /presence); the conflict rule (manual status beats automatic ones while a device is
// connected, manual `offline` is invisible) is in dataplane/src/presence.rs.
//
// Servers: the test starts `switchboard serve` itself (SWITCHBOARD_BIN, default
// target/debug/switchboard) on free loopback ports. Single-node tests use embedded mode;
// the cross-node test needs Redis (SWITCHBOARD_TEST_REDIS_URL, from
// `tests/env/envctl up redis` then `source tests/.state/env`): without it the test is
// skipped, or fails when CI=true.
//
// Run: cargo build -p switchboard-dataplane, then cd tests/node && npm test

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import { Manager } from 'socket.io-client';

import { ACK_CODES, ack, closeAll, connectError, connectSocket, connectUser, expectNone, ok, scenario, seen, sleep, socketFor, waitFor } from './lib/client.mjs';
import { claimsFor, nowSecs, sign, token } from './lib/jwt.mjs';
import { randomId, services, startNode, stopAll, writeConfig } from './lib/server.mjs';

/** Distinguishes this run's data in a shared Redis from earlier runs'. */
const RUN = randomId(4);


/** PROTOCOL.md: `presence:update` reaches subscribers within 1 s (across nodes too). */
const UPDATE_WITHIN_MS = 1000;

const PRESENCE = { namespace: '/presence' };

/** The embedded (single-node, in-memory) server most tests use. */
let node;

before(async () => {
  node = await startNode({ name: 'presence-embedded' });
});

after(async () => {
  closeAll();
  await stopAll();
});

/** Scenarios close their sockets when they end (lib/client.mjs). */
const test = scenario;

/** Connect `sub@tenant` to /presence of `target`. */
const presenceUser = (target, sub, tenant, opts = {}) => connectUser(target, sub, tenant, { ...PRESENCE, ...opts });

/**
 * Wait for a `presence:update` about `user` matching `pred`, recorded at or after `since`;
 * assert it came within `limit` ms of `since`. Returns { presence, latency }.
 */
async function updateOf(socket, user, pred, since, limit = UPDATE_WITHIN_MS) {
  const e = await waitFor(socket, 'presence:update', (d) => d?.presence?.user_id === user && pred(d.presence), limit + 1500, since);
  const latency = e.at - since;
  assert.ok(latency <= limit, `${socket.user}: the update about ${user} took ${latency} ms (limit ${limit} ms): ${JSON.stringify(e.data)}`);
  return { presence: e.data.presence, latency };
}

const is = (status, devices) => (p) => p.status === status && (devices === undefined || p.devices === devices);

/**
 * Assert a presence object: `{user_id, status, message?, last_seen, devices}`.
 * `message` undefined in `want` means none is shown (absent or null).
 */
function assertPresence(p, want, label = '') {
  const where = label ? `${label}: ` : '';
  assert.equal(typeof p, 'object', `${where}presence should be an object, got ${JSON.stringify(p)}`);
  assert.equal(p.user_id, want.user_id, `${where}user_id in ${JSON.stringify(p)}`);
  assert.equal(p.status, want.status, `${where}status in ${JSON.stringify(p)}`);
  assert.equal(p.devices, want.devices, `${where}devices in ${JSON.stringify(p)}`);
  if (want.message === undefined) assert.ok(p.message == null, `${where}no message expected in ${JSON.stringify(p)}`);
  else assert.equal(p.message, want.message, `${where}message in ${JSON.stringify(p)}`);
  assert.ok(Number.isInteger(p.last_seen) && p.last_seen >= 0, `${where}last_seen should be an integer (ms), got ${JSON.stringify(p.last_seen)}`);
}

/** Assert `ms` is a ms-since-epoch timestamp within `slack` ms of `around`. */
function assertNear(ms, around, slack, label) {
  assert.ok(Number.isInteger(ms), `${label}: ${JSON.stringify(ms)} is not an integer timestamp`);
  assert.ok(ms > 1e12, `${label}: ${ms} does not look like ms since the epoch`);
  assert.ok(Math.abs(ms - around) <= slack, `${label}: ${ms} is ${ms - around} ms from ${around} (allowed ±${slack})`);
}

/** Presences of `ids` as `viewer` sees them through get-batch. */
async function batch(viewer, ids) {
  const data = await ok(viewer, 'presence:get-batch', { user_ids: ids });
  assert.ok(Array.isArray(data.presences), `get-batch: presences should be an array, got ${JSON.stringify(data)}`);
  assert.equal(data.presences.length, ids.length, `get-batch of ${ids.length} ids: ${JSON.stringify(data.presences)}`);
  return data.presences;
}

/** Assert a connect_error message starts with the protocol code. */
function assertStartsWith(message, code) {
  assert.equal(typeof message, 'string', 'connect_error should carry a message');
  assert.ok(message.startsWith(code), `connect_error message should start with "${code}", got ${JSON.stringify(message)}`);
}

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return `min ${s[0]} ms, median ${s[Math.floor(s.length / 2)]} ms, max ${s[s.length - 1]} ms (n=${s.length})`;
};

// ---------------------------------------------------------------------------------------

test('1. single node: subscribe, online, manual status, invisible, automatic, offline', { timeout: 20_000 }, async (t) => {
  const tenant = 'acme';
  const bob = await presenceUser(node, 'bob', tenant);
  // carol never subscribes: her get-batch reads through the node's cache or store.
  const carol = await presenceUser(node, 'carol', tenant);
  let alice;

  await t.test('subscribe to an absent user: offline, 0 devices', async () => {
    const data = await ok(bob, 'presence:subscribe', { user_ids: ['alice'] });
    assert.ok(Array.isArray(data.presences), `subscribe ack: ${JSON.stringify(data)}`);
    assert.equal(data.presences.length, 1);
    assertPresence(data.presences[0], { user_id: 'alice', status: 'offline', devices: 0 }, 'subscribe ack');
  });

  await t.test('alice connects → bob gets online, 1 device, within 1 s', async () => {
    const t0 = Date.now();
    alice = await presenceUser(node, 'alice', tenant);
    const { presence, latency } = await updateOf(bob, 'alice', is('online'), t0);
    assertPresence(presence, { user_id: 'alice', status: 'online', devices: 1 }, 'update');
    assertNear(presence.last_seen, Date.now(), 2000, 'last_seen while online');
    t.diagnostic(`connect → presence:update in ${latency} ms`);
  });

  await t.test('set-status busy with a message → bob sees it; get-batch right after is not stale', async () => {
    const t0 = Date.now();
    const data = await ok(alice, 'presence:set-status', { status: 'busy', message: 'meeting' });
    assertPresence(data.presence, { user_id: 'alice', status: 'busy', message: 'meeting', devices: 1 }, 'set-status ack');
    const { presence } = await updateOf(bob, 'alice', is('busy'), t0);
    assertPresence(presence, { user_id: 'alice', status: 'busy', message: 'meeting', devices: 1 }, 'update');
    // Right after the update: both the subscriber and a bystander read the new state.
    const [forBob] = await batch(bob, ['alice']);
    assertPresence(forBob, { user_id: 'alice', status: 'busy', message: 'meeting', devices: 1 }, "bob's get-batch");
    const [forCarol] = await batch(carol, ['alice']);
    assertPresence(forCarol, { user_id: 'alice', status: 'busy', message: 'meeting', devices: 1 }, "carol's get-batch");
  });

  await t.test('set-status offline by hand is invisible: offline, 0 devices, no message', async () => {
    const t0 = Date.now();
    // Even a message given with it stays hidden: invisible looks exactly like offline.
    const data = await ok(alice, 'presence:set-status', { status: 'offline', message: 'hiding' });
    assert.equal(data.presence?.status, 'offline', `set-status offline ack: ${JSON.stringify(data)}`);
    const { presence } = await updateOf(bob, 'alice', is('offline'), t0);
    assertPresence(presence, { user_id: 'alice', status: 'offline', devices: 0 }, 'invisible update');
    assertNear(presence.last_seen, t0, 2000, 'last_seen of an invisible user');
    const [forCarol] = await batch(carol, ['alice']);
    assertPresence(forCarol, { user_id: 'alice', status: 'offline', devices: 0 }, "carol's get-batch of an invisible user");
    // Invisible, not gone: alice's own socket still works.
    assert.ok(alice.connected);
  });

  await t.test('set-status online → back to automatic online (1 device, no message)', async () => {
    const t0 = Date.now();
    const data = await ok(alice, 'presence:set-status', { status: 'online' });
    assertPresence(data.presence, { user_id: 'alice', status: 'online', devices: 1 }, 'set-status online ack');
    const { presence } = await updateOf(bob, 'alice', is('online', 1), t0);
    assertPresence(presence, { user_id: 'alice', status: 'online', devices: 1 }, 'update');
    const [forBob] = await batch(bob, ['alice']);
    assertPresence(forBob, { user_id: 'alice', status: 'online', devices: 1 }, "bob's get-batch");
  });

  await t.test('alice disconnects → offline, 0 devices, last_seen ≈ now', async () => {
    const t0 = Date.now();
    alice.disconnect();
    const { presence, latency } = await updateOf(bob, 'alice', is('offline'), t0);
    assertPresence(presence, { user_id: 'alice', status: 'offline', devices: 0 }, 'update');
    assertNear(presence.last_seen, t0, 1500, 'last_seen after disconnecting');
    const [forCarol] = await batch(carol, ['alice']);
    assertPresence(forCarol, { user_id: 'alice', status: 'offline', devices: 0 }, "carol's get-batch");
    assert.equal(forCarol.last_seen, presence.last_seen, 'get-batch and the update agree on last_seen');
    t.diagnostic(`disconnect → presence:update in ${latency} ms`);
  });

  await t.test('unsubscribe: no more updates about alice', async () => {
    assert.deepEqual(await ok(bob, 'presence:unsubscribe', { user_ids: ['alice'] }), {});
    const t0 = Date.now();
    await connectSocket(alice);
    // carol still sees alice come back, bob (unsubscribed) gets nothing.
    await eventuallyOnline(carol, 'alice');
    await sleep(300);
    const after = seen(bob, 'presence:update', (d) => d?.presence?.user_id === 'alice').filter((e) => e.at >= t0);
    assert.deepEqual(after.map((e) => e.data), [], 'bob unsubscribed from alice but still got updates');
  });
});

/** get-batch until `user` shows online (≤ 1 s). */
async function eventuallyOnline(viewer, user) {
  const deadline = Date.now() + UPDATE_WITHIN_MS;
  for (;;) {
    const [p] = await batch(viewer, [user]);
    if (p.status === 'online') return p;
    assert.ok(Date.now() < deadline, `${user} should show online to ${viewer.user} within 1 s, got ${JSON.stringify(p)}`);
    await sleep(50);
  }
}

// ---------------------------------------------------------------------------------------

test('2. idle: away after idle_timeout, back online on presence:activity or a /chat event', { timeout: 20_000 }, async (t) => {
  const idleNode = await startNode({ name: 'presence-idle', env: { SWITCHBOARD_IDLE_TIMEOUT: '1s' } });
  try {
    const tenant = 'acme';
    const bob = await presenceUser(idleNode, 'bob', tenant);
    await ok(bob, 'presence:subscribe', { user_ids: ['alice'] });
    // alice's /chat socket exists from the start; connecting it is not an event.
    const aliceChat = await connectUser(idleNode, 'alice', tenant);
    let t0 = Date.now();
    const alice = await presenceUser(idleNode, 'alice', tenant);
    await updateOf(bob, 'alice', is('online', 1), t0);

    await t.test('silent for the idle timeout (1 s) → away within ~2 s', async () => {
      const { presence, latency } = await updateOf(bob, 'alice', is('away'), t0, 2000);
      assertPresence(presence, { user_id: 'alice', status: 'away', devices: 1 }, 'away update');
      assert.ok(latency >= 900, `away came after ${latency} ms, before the 1 s idle timeout`);
      const [p] = await batch(bob, ['alice']);
      assertPresence(p, { user_id: 'alice', status: 'away', devices: 1 }, 'get-batch while away');
      t.diagnostic(`away ${latency} ms after connecting (idle_timeout 1 s)`);
    });

    await t.test('presence:activity {} → online again', async () => {
      t0 = Date.now();
      assert.deepEqual(await ok(alice, 'presence:activity', {}), {});
      const { presence, latency } = await updateOf(bob, 'alice', is('online'), t0);
      assertPresence(presence, { user_id: 'alice', status: 'online', devices: 1 }, 'update after activity');
      t.diagnostic(`activity → online in ${latency} ms`);
    });

    await t.test('away again, then a /chat event (unread:get) counts as activity', async () => {
      const { latency: awayAfter } = await updateOf(bob, 'alice', is('away'), t0, 2000);
      t.diagnostic(`away again ${awayAfter} ms after the activity`);
      const t1 = Date.now();
      const unread = await ok(aliceChat, 'unread:get', {});
      assert.equal(typeof unread.counts, 'object', `unread:get: ${JSON.stringify(unread)}`);
      const { presence, latency } = await updateOf(bob, 'alice', is('online'), t1);
      assertPresence(presence, { user_id: 'alice', status: 'online', devices: 1 }, 'update after a /chat event');
      t.diagnostic(`/chat unread:get → online in ${latency} ms`);
    });

    await t.test('a manual status is not replaced by away', async () => {
      const t1 = Date.now();
      await ok(alice, 'presence:set-status', { status: 'busy', message: 'deep work' });
      await updateOf(bob, 'alice', is('busy'), t1);
      await sleep(1600); // past the idle timeout with no activity
      const [p] = await batch(bob, ['alice']);
      assertPresence(p, { user_id: 'alice', status: 'busy', message: 'deep work', devices: 1 }, 'manual status after idling');
      const awayUpdates = seen(bob, 'presence:update', (d) => d.presence.user_id === 'alice' && d.presence.status === 'away').filter(
        (e) => e.at >= t1,
      );
      assert.deepEqual(awayUpdates, [], 'no away update while a manual status is set');
      // Activity does not replace a status chosen by hand either.
      const t2 = Date.now();
      await ok(alice, 'presence:activity', {});
      await sleep(200);
      const online = seen(bob, 'presence:update', (d) => d.presence.user_id === 'alice' && d.presence.status === 'online').filter((e) => e.at >= t2);
      assert.deepEqual(online, [], 'activity must not turn a manual busy into online');
      const [q] = await batch(bob, ['alice']);
      assertPresence(q, { user_id: 'alice', status: 'busy', message: 'deep work', devices: 1 }, 'manual status after activity');
    });

    await t.test('multiplexed: /chat and /presence on one Manager (one connection); chat keeps presence online', async () => {
      // How apps usually connect: one Engine.IO connection carries both namespaces.
      await ok(bob, 'presence:subscribe', { user_ids: ['dana'] });
      const manager = new Manager(idleNode.url, { reconnection: false, autoConnect: false, transports: ['websocket'] });
      const auth = { token: token(idleNode.secret, 'dana', tenant) };
      const chat = manager.socket('/chat', { auth });
      const pres = manager.socket('/presence', { auth });
      try {
        const t1 = Date.now();
        await Promise.all([connectSocket(chat), connectSocket(pres)]);
        assert.equal(chat.io, pres.io, 'both namespaces share one Manager');
        await updateOf(bob, 'dana', is('online', 1), t1);
        // Chat traffic only, for longer than the idle timeout: dana never goes away.
        while (Date.now() - t1 < 1800) {
          const res = await chat.timeout(3000).emitWithAck('unread:get', {});
          assert.equal(res.ok, true, `unread:get on the multiplexed /chat: ${JSON.stringify(res)}`);
          await sleep(250);
        }
        const away = seen(bob, 'presence:update', (d) => d.presence.user_id === 'dana' && d.presence.status !== 'online');
        assert.deepEqual(away.map((e) => e.data), [], 'dana is active on /chat: no away');
      } finally {
        chat.close();
        pres.close();
      }
    });
  } finally {
    closeAll();
    await idleNode.stop();
  }
});

// ---------------------------------------------------------------------------------------

/** The shared Redis URL, or null after skipping `t` (failing it when CI=true). */
function redisOr(t) {
  return services(t, ['SWITCHBOARD_TEST_REDIS_URL'], 'the cross-node presence test needs Redis')?.[0] ?? null;
}

test('3. cross-node: three nodes, one Redis; devices add up, updates within 1 s', { timeout: 30_000 }, async (t) => {
  const redisUrl = redisOr(t);
  if (!redisUrl) return;
  const common = { redisUrl, secret: `shared-secret-${randomId(16)}`, adminToken: `admin-${randomId(16)}` };
  const [a, b, c] = await Promise.all(
    ['a', 'b', 'c'].map((n) => startNode({ ...common, name: `presence-shared-${n.toUpperCase()}`, nodeId: `pres-${n}-${RUN}` })),
  );
  try {
    const tenant = `acme-p${RUN}`;
    const latencies = [];
    const watcher = await presenceUser(c, 'watcher', tenant);
    const sub = await ok(watcher, 'presence:subscribe', { user_ids: ['alice'] });
    assertPresence(sub.presences?.[0], { user_id: 'alice', status: 'offline', devices: 0 }, 'subscribe ack on C');

    let phone;
    let laptop;
    await t.test("alice's phone on A → watcher on C: online, 1 device", async () => {
      const t0 = Date.now();
      phone = await presenceUser(a, 'alice', tenant);
      const { presence, latency } = await updateOf(watcher, 'alice', is('online', 1), t0);
      assertPresence(presence, { user_id: 'alice', status: 'online', devices: 1 }, 'update on C');
      latencies.push(latency);
      t.diagnostic(`connect on A → update on C: ${latency} ms (includes the handshake)`);
    });

    await t.test("alice's laptop on B → 2 devices", async () => {
      const t0 = Date.now();
      laptop = await presenceUser(b, 'alice', tenant);
      const { presence, latency } = await updateOf(watcher, 'alice', is('online', 2), t0);
      assertPresence(presence, { user_id: 'alice', status: 'online', devices: 2 }, 'update on C');
      t.diagnostic(`connect on B → update on C: ${latency} ms (includes the handshake)`);
    });

    await t.test('set-status on B reaches C within 1 s; get-batch on C is fresh', async () => {
      const samples = [];
      for (let i = 0; i < 5; i++) {
        const message = `sample ${i}`;
        const t0 = Date.now();
        await ok(laptop, 'presence:set-status', { status: 'busy', message });
        const { presence, latency } = await updateOf(watcher, 'alice', (p) => p.status === 'busy' && p.message === message, t0);
        assertPresence(presence, { user_id: 'alice', status: 'busy', message, devices: 2 }, 'update on C');
        samples.push(latency);
        const [onC] = await batch(watcher, ['alice']);
        assertPresence(onC, { user_id: 'alice', status: 'busy', message, devices: 2 }, 'get-batch on C right after the update');
        // A's cache takes the update from the bus on its own time (C's arrival says nothing
        // of A's): fresh there within the same 1 s bound.
        let onA;
        for (const until = Date.now() + 1000; ;) {
          [onA] = await batch(phone, ['alice']);
          if (onA.message === message || Date.now() > until) break;
          await new Promise((r) => setTimeout(r, 20));
        }
        assertPresence(onA, { user_id: 'alice', status: 'busy', message, devices: 2 }, 'get-batch on A within 1 s');
      }
      latencies.push(...samples);
      const line = `set-status on B → presence:update on C (emit to receipt): ${stats(samples)}`;
      t.diagnostic(line);
      console.log(`# cross-node latency: ${line}`);

      const t0 = Date.now();
      await ok(laptop, 'presence:set-status', { status: 'online' });
      const { presence } = await updateOf(watcher, 'alice', is('online', 2), t0);
      assertPresence(presence, { user_id: 'alice', status: 'online', devices: 2 }, 'automatic again');
    });

    await t.test("the phone (A) goes → still online, 1 device", async () => {
      const t0 = Date.now();
      phone.disconnect();
      const { presence, latency } = await updateOf(watcher, 'alice', is('online', 1), t0);
      assertPresence(presence, { user_id: 'alice', status: 'online', devices: 1 }, 'update on C');
      latencies.push(latency);
      const offline = seen(watcher, 'presence:update', (d) => d.presence.user_id === 'alice' && d.presence.status === 'offline').filter((e) => e.at >= t0);
      assert.deepEqual(offline, [], 'no offline flicker while the laptop is connected');
      t.diagnostic(`disconnect on A → update on C: ${latency} ms`);
    });

    await t.test('the laptop (B) goes too → offline, 0 devices', async () => {
      const t0 = Date.now();
      laptop.disconnect();
      const { presence, latency } = await updateOf(watcher, 'alice', is('offline', 0), t0);
      assertPresence(presence, { user_id: 'alice', status: 'offline', devices: 0 }, 'update on C');
      assertNear(presence.last_seen, t0, 1500, 'last_seen after the last device left');
      const [onC] = await batch(watcher, ['alice']);
      assertPresence(onC, { user_id: 'alice', status: 'offline', devices: 0 }, 'get-batch on C');
      latencies.push(latency);
      t.diagnostic(`disconnect on B → update on C: ${latency} ms`);
    });
    t.diagnostic(`all cross-node update latencies: ${stats(latencies)}`);
  } finally {
    closeAll();
    await Promise.all([a, b, c].map((n) => n.stop()));
  }
});

// ---------------------------------------------------------------------------------------

// Regression guard: activity on a node that holds none of the user's /presence sockets is
// forwarded over the presence bus to the nodes that do (it once stayed node-local).
// PROTOCOL.md: "no activity on any connection for idle_timeout → away".
test(
  '3b. cross-node idle: activity on /chat via node A keeps a /presence socket on node B online',
  { timeout: 20_000 },
  async (t) => {
    const redisUrl = redisOr(t);
    if (!redisUrl) return;
    const common = { redisUrl, secret: `shared-secret-${randomId(16)}`, env: { SWITCHBOARD_IDLE_TIMEOUT: '1s' } };
    const [a, b] = await Promise.all(['a', 'b'].map((n) => startNode({ ...common, name: `presence-idle-${n.toUpperCase()}`, nodeId: `pres-idle-${n}-${RUN}` })));
    try {
      const tenant = `acme-pi${RUN}`;
      const bob = await presenceUser(b, 'bob', tenant);
      await ok(bob, 'presence:subscribe', { user_ids: ['alice'] });
      const chatOnA = await connectUser(a, 'alice', tenant);
      const t0 = Date.now();
      await presenceUser(b, 'alice', tenant);
      await updateOf(bob, 'alice', is('online', 1), t0);
      // alice keeps using /chat (on A) for twice the idle timeout.
      while (Date.now() - t0 < 2200) {
        await ok(chatOnA, 'unread:get', {});
        await sleep(250);
      }
      const away = seen(bob, 'presence:update', (d) => d.presence.user_id === 'alice' && d.presence.status === 'away');
      assert.deepEqual(
        away.map((e) => `${e.at - t0} ms: ${JSON.stringify(e.data.presence)}`),
        [],
        'alice was active on /chat (node A) every 250 ms, yet her presence went away',
      );
      const [p] = await batch(bob, ['alice']);
      assertPresence(p, { user_id: 'alice', status: 'online', devices: 1 }, 'get-batch after 2.2 s of /chat activity');
    } finally {
      closeAll();
      await Promise.all([a, b].map((n) => n.stop()));
    }
  },
);

// ---------------------------------------------------------------------------------------

// Regression guard: a read on node C that fills the cache between the store write (on B)
// and the bus delivery to C must not swallow the update for C's subscribers (the cache
// tracks what was delivered apart from what was read). SWITCHBOARD_PRESENCE_CACHE_TTL=0s
// makes every read a miss; 12 users change status 20 times each while one reader per
// user polls get-batch back to back on C.
// PROTOCOL.md: "`presence:update {presence}` to subscribers, within 1 s across nodes".
test(
  '3c. cross-node: reads racing the bus never swallow a presence:update',
  { timeout: 25_000 },
  async (t) => {
    const redisUrl = redisOr(t);
    if (!redisUrl) return;
    // Readers poll as fast as they can: lift the read rate limits on C.
    const config = writeConfig(
      `presence-race-${RUN}.yaml`,
      ['limits:', '  per_socket:', '    read: {rate: 100000, burst: 100000}', '  per_user:', '    read: {rate: 100000, burst: 100000}', ''].join('\n'),
    );
    const common = { redisUrl, secret: `shared-secret-${randomId(16)}`, env: { SWITCHBOARD_PRESENCE_CACHE_TTL: '0s' }, args: ['--config', config] };
    const [b, c] = await Promise.all(['b', 'c'].map((n) => startNode({ ...common, name: `presence-race-${n.toUpperCase()}`, nodeId: `pres-race-${n}-${RUN}` })));
    let polling = true;
    try {
      const tenant = `acme-pr${RUN}`;
      const users = Array.from({ length: 12 }, (_, i) => `racer${i}`);
      const watcher = await presenceUser(c, 'watcher', tenant);
      await ok(watcher, 'presence:subscribe', { user_ids: users });
      const racers = await Promise.all(users.map((u) => presenceUser(b, u, tenant)));
      // One reader per racer, each polling that racer's presence back to back.
      const readers = await Promise.all(users.map((u) => presenceUser(c, `reader-of-${u}`, tenant)));
      await sleep(300);
      const refused = [];
      let reads = 0;
      const polls = readers.map(async (r, i) => {
        while (polling) {
          const res = await ack(r, 'presence:get-batch', { user_ids: [users[i]] });
          reads++;
          if (!res.ok) refused.push(res.error?.code);
        }
      });
      // Every racer changes status 20 times (the per-socket burst), all racers at once.
      const sent = [];
      await Promise.all(
        racers.map(async (racer, who) => {
          for (let i = 0; i < 20; i++) {
            const message = `change ${i}`;
            await ok(racer, 'presence:set-status', { status: 'busy', message });
            sent.push({ user: users[who], message });
            await sleep(25);
          }
        }),
      );
      polling = false;
      await Promise.all(polls);
      await sleep(UPDATE_WITHIN_MS);
      const got = new Set(seen(watcher, 'presence:update').map((e) => `${e.data.presence.user_id}|${e.data.presence.message}`));
      const missed = sent.filter((s) => !got.has(`${s.user}|${s.message}`)).map((s) => `${s.user}: ${s.message}`);
      const last = new Map(sent.map((x) => [x.user, x.message]));
      const stale = [...last].filter(([u, m]) => !got.has(`${u}|${m}`)).map(([u]) => u);
      t.diagnostic(
        `${sent.length} changes on B, ${missed.length} updates never reached the subscriber on C ` +
          `(${stale.length} of them final: the subscriber is left stale) (${reads} reads on C, ${refused.length} refused)`,
      );
      assert.deepEqual(missed, [], 'every change must reach the subscriber on C (some were swallowed by a racing read)');
    } finally {
      polling = false;
      closeAll();
      await Promise.all([b, c].map((n) => n.stop()));
    }
  },
);

// ---------------------------------------------------------------------------------------

test('4. tenant wall: globex sees its own alice, never acme’s', { timeout: 15_000 }, async () => {
  const acmeBob = await presenceUser(node, 'bob', 'acme-wall');
  const globexBob = await presenceUser(node, 'bob', 'globex');
  for (const s of [acmeBob, globexBob]) {
    const data = await ok(s, 'presence:subscribe', { user_ids: ['alice'] });
    assertPresence(data.presences?.[0], { user_id: 'alice', status: 'offline', devices: 0 }, `${s.user}: subscribe ack`);
  }

  // acme's alice comes online and changes status: acme's bob sees it (the control),
  // globex's bob sees nothing.
  let t0 = Date.now();
  const acmeAlice = await presenceUser(node, 'alice', 'acme-wall');
  await updateOf(acmeBob, 'alice', is('online', 1), t0);
  await ok(acmeAlice, 'presence:set-status', { status: 'busy', message: 'acme secret' });
  await updateOf(acmeBob, 'alice', is('busy'), t0);
  await expectNone(globexBob, 'presence:update', () => true, 300);
  const [gp] = await batch(globexBob, ['alice']);
  assertPresence(gp, { user_id: 'alice', status: 'offline', devices: 0 }, "globex's get-batch of alice");

  // globex's own alice: one device (not acme's too), no acme message; acme's bob is not told.
  t0 = Date.now();
  const globexAlice = await presenceUser(node, 'alice', 'globex');
  const { presence } = await updateOf(globexBob, 'alice', is('online'), t0);
  assertPresence(presence, { user_id: 'alice', status: 'online', devices: 1 }, "globex's alice");
  await ok(globexAlice, 'presence:set-status', { status: 'away', message: 'globex lunch' });
  await updateOf(globexBob, 'alice', (p) => p.message === 'globex lunch', t0);
  await sleep(200);
  const leaked = seen(acmeBob, 'presence:update', (d) => d.presence.message === 'globex lunch' || d.presence.status === 'away');
  assert.deepEqual(leaked, [], "acme's bob must not receive globex's alice");
  const [ap] = await batch(acmeBob, ['alice']);
  assertPresence(ap, { user_id: 'alice', status: 'busy', message: 'acme secret', devices: 1 }, "acme's get-batch of alice");
  const [gp2] = await batch(globexBob, ['alice']);
  assertPresence(gp2, { user_id: 'alice', status: 'away', message: 'globex lunch', devices: 1 }, "globex's get-batch of alice");
  // Every update globex's bob ever got is about globex's alice.
  for (const e of seen(globexBob, 'presence:update')) assert.notEqual(e.data.presence.message, 'acme secret', `globex got ${JSON.stringify(e.data)}`);
});

// ---------------------------------------------------------------------------------------

test('5. bad input: every /presence event answers malformed payloads with an error ack', { timeout: 20_000 }, async (t) => {
  const tenant = 'acme-fuzz';
  const ids = (n) => Array.from({ length: n }, (_, i) => `u${i}`);
  const common = [
    ['a string', 'just a string'],
    ['a number', 42],
    ['an array', [1, 2, 3]],
    ['a boolean', true],
  ];
  // Oversized lists and messages may also be answered payload_too_large.
  const SIZE = ['bad_request', 'payload_too_large'];
  const BAD = ['bad_request'];
  const cases = {
    'presence:set-status': [
      ['{}', {}, BAD],
      ['an unknown status', { status: 'invisible' }, BAD],
      ['status in capitals', { status: 'BUSY' }, BAD],
      ['status a number', { status: 1 }, BAD],
      ['status null', { status: null }, BAD],
      ['status an array', { status: ['busy'] }, BAD],
      ['message a number', { status: 'busy', message: 5 }, BAD],
      ['message an object', { status: 'busy', message: { text: 'x' } }, BAD],
      ['a 201-character message', { status: 'busy', message: 'm'.repeat(201) }, SIZE],
      ['a 201-character message of emoji', { status: 'busy', message: '🙂'.repeat(201) }, SIZE],
      ['a binary attachment', Buffer.from('busy'), BAD],
    ],
    'presence:activity': [],
    'presence:subscribe': [
      ['{}', {}, BAD],
      ['user_ids a string', { user_ids: 'alice' }, BAD],
      ['user_ids null', { user_ids: null }, BAD],
      ['user_ids an object', { user_ids: { alice: true } }, BAD],
      ['user_ids of numbers', { user_ids: [1, 2] }, BAD],
      ['user_ids with a bad id', { user_ids: ['a:b'] }, BAD],
      ['501 ids', { user_ids: ids(501) }, SIZE],
      ['a binary attachment', Buffer.from('alice'), BAD],
    ],
    'presence:unsubscribe': [
      ['{}', {}, BAD],
      ['user_ids a string', { user_ids: 'alice' }, BAD],
      ['user_ids of numbers', { user_ids: [3] }, BAD],
      ['501 ids', { user_ids: ids(501) }, SIZE],
    ],
    'presence:get-batch': [
      ['{}', {}, BAD],
      ['user_ids a string', { user_ids: 'alice' }, BAD],
      ['user_ids of booleans', { user_ids: [true] }, BAD],
      ['user_ids with a bad id', { user_ids: ['two words'] }, BAD],
      ['1001 ids', { user_ids: ids(1001) }, SIZE],
    ],
  };

  const problems = [];
  let checked = 0;
  for (const [event, own] of Object.entries(cases)) {
    const list = [...common.map(([label, payload]) => [label, payload, BAD]), ...own];
    // Malformed requests count against the rate limits too; at most 8 per user.
    for (let chunk = 0; chunk * 8 < list.length; chunk++) {
      const user = `fuzz-${event.replace(/[^a-z]/g, '')}-${chunk}`;
      const sock = await presenceUser(node, user, tenant);
      for (const [label, payload, expected] of list.slice(chunk * 8, chunk * 8 + 8)) {
        checked++;
        let res;
        try {
          res = await ack(sock, event, payload, 3000);
        } catch (e) {
          problems.push(`${event} with ${label}: ${e.message}`);
          if (!sock.connected) {
            problems.push(`${event} with ${label}: the server dropped the connection`);
            await connectSocket(sock);
          }
          continue;
        }
        if (!res || res.ok !== false) {
          problems.push(`${event} with ${label}: expected ok:false, got ${JSON.stringify(res)?.slice(0, 200)}`);
        } else if (!ACK_CODES.includes(res.error?.code)) {
          problems.push(`${event} with ${label}: code ${JSON.stringify(res.error?.code)} is not a protocol code`);
        } else if (!expected.includes(res.error.code)) {
          problems.push(`${event} with ${label}: expected ${expected.join(' or ')}, got ${res.error.code} (${res.error.message})`);
        } else if (typeof res.error.message !== 'string' || !res.error.message) {
          problems.push(`${event} with ${label}: error.message should be a non-empty string`);
        }
      }
      // Still usable: connected, and well-formed requests work.
      if (!sock.connected) problems.push(`${event}: socket disconnected after malformed payloads`);
      else {
        const res = await ack(sock, 'presence:get-batch', { user_ids: ['alice'] }).catch((e) => ({ error: e.message }));
        if (!res?.ok) problems.push(`${event}: a valid get-batch afterwards failed: ${JSON.stringify(res)}`);
        const act = await ack(sock, 'presence:activity', {}).catch((e) => ({ error: e.message }));
        if (!act?.ok) problems.push(`${event}: a valid activity afterwards failed: ${JSON.stringify(act)}`);
      }
      sock.close();
    }
  }

  // The limits themselves are accepted: 500 ids, 1000 ids, a 200-character message.
  const edge = await presenceUser(node, 'fuzz-edge', tenant);
  const sub = await ack(edge, 'presence:subscribe', { user_ids: ids(500) });
  if (!sub.ok || sub.data.presences?.length !== 500) problems.push(`subscribe of 500 ids should succeed with 500 presences, got ${JSON.stringify(sub).slice(0, 200)}`);
  const unsub = await ack(edge, 'presence:unsubscribe', { user_ids: ids(500) });
  if (!unsub.ok) problems.push(`unsubscribe of 500 ids should succeed, got ${JSON.stringify(unsub).slice(0, 200)}`);
  const big = await ack(edge, 'presence:get-batch', { user_ids: ids(1000) });
  if (!big.ok || big.data.presences?.length !== 1000) problems.push(`get-batch of 1000 ids should succeed with 1000 presences, got ${JSON.stringify(big).slice(0, 200)}`);
  const msg = '🙂'.repeat(200);
  const st = await ack(edge, 'presence:set-status', { status: 'busy', message: msg });
  if (!st.ok || st.data.presence?.message !== msg) problems.push(`a 200-character message should be accepted, got ${JSON.stringify(st).slice(0, 200)}`);

  t.diagnostic(`${checked} malformed payloads over ${Object.keys(cases).length} events`);
  assert.deepEqual(problems, [], `malformed payloads:\n  ${problems.join('\n  ')}`);
});

// ---------------------------------------------------------------------------------------

test('6. authentication on /presence: refusals carry the protocol code and register nothing', { timeout: 15_000 }, async (t) => {
  const tenant = 'acme-auth';
  const secret = node.secret;
  const bob = await presenceUser(node, 'bob', tenant);
  await ok(bob, 'presence:subscribe', { user_ids: ['alice'] });
  const refusal = async (opts) => (await connectError(socketFor(node, { ...PRESENCE, ...opts }))).message;

  await t.test('token signed with another secret → unauthorized', async () => {
    assertStartsWith(await refusal({ token: sign(claimsFor('alice', tenant), `another-secret-${randomId(16)}`) }), 'unauthorized');
  });

  await t.test('garbage token → unauthorized', async () => {
    assertStartsWith(await refusal({ token: 'not-a-jwt' }), 'unauthorized');
  });

  await t.test('no token → unauthorized', async () => {
    assertStartsWith(await refusal({}), 'unauthorized');
  });

  await t.test('expired an hour ago → token_expired', async () => {
    const now = nowSecs();
    assertStartsWith(await refusal({ token: token(secret, 'alice', tenant, { exp: now - 3600, iat: now - 7200 }) }), 'token_expired');
  });

  await t.test('no tenant claim → tenant_required', async () => {
    assertStartsWith(await refusal({ token: token(secret, 'alice', tenant, { tenant: undefined }) }), 'tenant_required');
  });

  await t.test('refused connections never made alice online', async () => {
    await expectNone(bob, 'presence:update', (d) => d?.presence?.user_id === 'alice', 200);
    const [p] = await batch(bob, ['alice']);
    assertPresence(p, { user_id: 'alice', status: 'offline', devices: 0 }, 'get-batch after refusals');
  });
});
