// Test helpers: the repository's node-test helpers (start/stop nodes, tokens), the built
// SDK, the TCP front that stands in for a load balancer, and waiting for conditions.

export { startNode, stopAll, stopNode, services, randomId, freePort } from '../../../tests/node/lib/server.mjs';
export { token, sign, claimsFor, nowSecs } from '../../../tests/node/lib/jwt.mjs';
export { tcpProxy as front } from '../../../tests/node/lib/proxy.mjs';
export { SwitchboardClient, SwitchboardError, METHODS, NAMESPACES } from '../dist/index.js';

import { SwitchboardClient } from '../dist/index.js';

const clients = new Set();

/** A connected SDK client for `node` (or any base URL); closed by `closeAll()`. */
export async function client(target, tokenValue, opts = {}) {
  const url = typeof target === 'string' ? target : target.url;
  const c = new SwitchboardClient({
    url,
    token: tokenValue,
    timeoutMs: 5000,
    ...opts,
    manager: { reconnectionDelay: 100, reconnectionDelayMax: 300, ...(opts.manager ?? {}) },
  });
  clients.add(c);
  if (opts.connect !== false) await c.connect();
  return c;
}

export function closeAll() {
  for (const c of clients) c.close();
  clients.clear();
}

/** Wait until `cond()` is truthy (polling every 20 ms), or fail after `ms`. */
export async function until(cond, ms = 5000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Record every payload of `event` on `ns`. */
export function record(c, ns, event) {
  const got = [];
  c.on(ns, event, (p) => got.push(p));
  return got;
}

