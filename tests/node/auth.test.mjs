// Token lifetime on live connections with the official socket.io-client (PROTOCOL.md,
// Authentication, "Token lifetime"): on every namespace the server sends `auth:expiring`
// before `exp`, takes `auth:refresh {token}`, and at `exp` + leeway sends `auth:expired`
// and disconnects a socket that did not refresh. The node runs with a 2 s notice and a
// 1 s leeway (`--set`), so the whole file takes seconds. Also: the per-user connection
// cap (`too_many_connections`).
//
// Run: cargo build -p switchboard-dataplane, then cd tests/node && node --test auth.test.mjs

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import { closeAll, connectError, connectUser, disconnected, fails, ok, scenario, sleep, socketFor, waitFor } from './lib/client.mjs';
import { nowSecs, token } from './lib/jwt.mjs';
import { randomId, startNode, stopAll } from './lib/server.mjs';

const NAMESPACES = ['/chat', '/presence', '/webrtc', '/notifications'];

let node;

before(async () => {
  node = await startNode({
    name: 'token-lifetime',
    args: ['--set', 'jwt.expiry_notice=2s', '--set', 'jwt.leeway=1s'],
  });
});

after(async () => {
  closeAll();
  await stopAll();
});

scenario('every namespace: auth:expiring, auth:refresh, auth:expired and a disconnect', { timeout: 30_000 }, async () => {
  const tenant = `lifetime-${randomId()}`;
  const exp = nowSecs() + 3;
  const sid = `sid-${randomId()}`;
  const claims = { exp, sid };
  await Promise.all(
    NAMESPACES.map(async (namespace) => {
      const stays = await connectUser(node, 'alice', tenant, { namespace, claims });
      const goes = await connectUser(node, 'alice', tenant, { namespace, claims });
      for (const s of [stays, goes]) {
        const { data } = await waitFor(s, 'auth:expiring', () => true, 4000);
        assert.equal(data.expires_at, exp * 1000, `${namespace}: expires_at is the token's exp in ms`);
      }
      // The app gets a new token for the same user and session and hands it over.
      const fresh = token(node.secret, 'alice', tenant, { sid, exp: nowSecs() + 600 });
      const acked = await ok(stays, 'auth:refresh', { token: fresh });
      assert.equal(acked.expires_at, JSON.parse(Buffer.from(fresh.split('.')[1], 'base64url')).exp * 1000);
      stays.auth.token = fresh;

      const expired = await waitFor(goes, 'auth:expired', () => true, 4000);
      assert.deepEqual(expired.data, {});
      assert.equal(await disconnected(goes, 1000), 'io server disconnect', `${namespace}: closed by the server`);
      assert.ok(nowSecs() >= exp + 1, `${namespace}: closed before exp + leeway`);

      await sleep(500);
      assert.ok(stays.connected, `${namespace}: the refreshed socket stays`);
      assert.equal(stays.seen.filter((e) => e.event === 'auth:expired').length, 0);
    }),
  );
});

scenario('a refresh for another tenant or user is refused and the old expiry stays', { timeout: 30_000 }, async () => {
  const tenant = `refresh-${randomId()}`;
  const exp = nowSecs() + 3;
  const alice = await connectUser(node, 'alice', tenant, { claims: { exp } });
  const later = nowSecs() + 600;
  // Same user id in another tenant, another user in the same tenant, a bad signature.
  await fails(alice, 'auth:refresh', { token: token(node.secret, 'alice', `other-${randomId()}`, { exp: later }) }, 'unauthorized');
  await fails(alice, 'auth:refresh', { token: token(node.secret, 'mallory', tenant, { exp: later }) }, 'unauthorized');
  await fails(alice, 'auth:refresh', { token: token(`not-the-secret-${randomId(16)}`, 'alice', tenant, { exp: later }) }, 'unauthorized');
  await fails(alice, 'auth:refresh', {}, 'bad_request');
  const { data } = await waitFor(alice, 'auth:expiring', () => true, 4000);
  assert.equal(data.expires_at, exp * 1000, 'the old expiry stays');
  await waitFor(alice, 'auth:expired', () => true, 4000);
  assert.equal(await disconnected(alice, 1000), 'io server disconnect');
});

scenario('past limits.max_connections_per_user a handshake gets too_many_connections', { timeout: 30_000 }, async () => {
  const capped = await startNode({ name: 'capped', args: ['--set', 'limits.max_connections_per_user=2'] });
  const tenant = `cap-${randomId()}`;
  const first = await connectUser(capped, 'alice', tenant, { namespace: '/chat' });
  await connectUser(capped, 'alice', tenant, { namespace: '/presence' });
  const err = await connectError(socketFor(capped, { namespace: '/notifications', token: token(capped.secret, 'alice', tenant) }));
  assert.ok(err.message.startsWith('too_many_connections'), err.message);
  await connectUser(capped, 'bob', tenant, { namespace: '/notifications' });
  // Closing one frees its place.
  first.disconnect();
  await sleep(200);
  await connectUser(capped, 'alice', tenant, { namespace: '/notifications' });
});
