// The official socket.io-client used like an app would: one connection per user, auth
// in the handshake, acks through emitWithAck. Helpers record server events from the
// moment a socket exists, so a test never misses one that arrives before it waits.

import assert from 'node:assert/strict';
import { test as nodeTest } from 'node:test';
import { io } from 'socket.io-client';

import { token as mintToken } from './jwt.mjs';

/** The ack error codes of PROTOCOL.md. */
export const ACK_CODES = [
  'bad_request',
  'unauthorized',
  'forbidden',
  'not_found',
  'conflict',
  'busy',
  'rate_limited',
  'payload_too_large',
  'unavailable',
  'internal',
];

/** Server → client token lifetime events, on every namespace. */
const AUTH_EVENTS = ['auth:expiring', 'auth:expired'];

/** Server → client events of /chat that the recorder keeps. */
const CHAT_EVENTS = [
  'message:new',
  'receipt:delivered',
  'receipt:read',
  'typing:update',
  'typing:aggregated',
  'message:updated',
  'message:reactions',
  'room:deleted',
  'room:kicked',
  ...AUTH_EVENTS,
];

/** Server → client events of /presence that the recorder keeps. */
const PRESENCE_EVENTS = ['presence:update', ...AUTH_EVENTS];

/** The server events recorded per namespace (others: every event, through onAny). */
const EVENTS_OF = { '/chat': CHAT_EVENTS, '/presence': PRESENCE_EVENTS };

const open = new Set();

/**
 * A socket.io-client socket to `${node.url}${namespace}` (default `/chat`), not yet
 * connected (autoConnect off).
 */
export function socketFor(node, opts = {}) {
  const { token, transports = ['websocket', 'polling'], namespace = '/chat', ...rest } = opts;
  const socket = io(`${node.url}${namespace}`, {
    auth: token === undefined ? undefined : { token },
    transports,
    forceNew: true,
    reconnection: false,
    autoConnect: false,
    timeout: 5000,
    ...rest,
  });
  socket.namespace = namespace;
  record(socket, EVENTS_OF[namespace]);
  return socket;
}

/**
 * Keep the namespace's server events (every event when `events` is undefined) and the
 * disconnect reason in `socket.seen`, for waitFor/seen; closeAll closes the socket.
 */
export function record(socket, events) {
  open.add(socket);
  socket.seen = [];
  socket.waiters = new Set();
  const push = (event, data) => {
    const entry = { event, data, at: Date.now() };
    socket.seen.push(entry);
    for (const w of [...socket.waiters]) w(entry);
  };
  if (events) for (const ev of events) socket.on(ev, (data) => push(ev, data));
  else socket.onAny((ev, data) => push(ev, data));
  socket.on('disconnect', (reason) => push('disconnect', reason));
}

/** Connect and resolve with the socket, or reject with the connect_error. */
export function connectSocket(socket) {
  return new Promise((resolve, reject) => {
    const ok = () => {
      socket.off('connect_error', bad);
      resolve(socket);
    };
    const bad = (err) => {
      socket.off('connect', ok);
      reject(err);
    };
    socket.once('connect', ok);
    socket.once('connect_error', bad);
    socket.connect();
  });
}

/**
 * How long connectUser waits after `connect` before handing the socket over.
 *
 * Optional pause after `connect` (ms). 0 by default: the server registers its handlers
 * before it answers CONNECT, so an event emitted at once is answered (scenario 2b).
 */
export const CONNECT_SETTLE_MS = Number(process.env.SWITCHBOARD_TEST_CONNECT_SETTLE_MS ?? 0);

/**
 * Connect user `sub` of `tenant` to a node and resolve once connected.
 * opts: claims (overrides for the token), token (a ready token), settle (ms to wait
 * after connecting, see CONNECT_SETTLE_MS), namespace (default `/chat`), plus io() options.
 */
export async function connectUser(node, sub, tenant, opts = {}) {
  const { claims = {}, token, settle = CONNECT_SETTLE_MS, ...ioOpts } = opts;
  const tok = token ?? mintToken(node.secret, sub, tenant, claims);
  const socket = socketFor(node, { token: tok, ...ioOpts });
  socket.user = sub;
  socket.claims = claims;
  try {
    await connectSocket(socket);
  } catch (e) {
    throw new Error(`${sub}@${tenant} could not connect to ${node.url}${socket.namespace}: ${e.message}`);
  }
  if (settle > 0) await sleep(settle);
  return socket;
}

/** Resolve with the `connect_error` of a connection attempt (fail if it connects). */
export async function connectError(socket, ms = 5000) {
  const result = await Promise.race([
    connectSocket(socket).then(
      () => ({ connected: true }),
      (err) => ({ err }),
    ),
    sleep(ms).then(() => ({ timeout: true })),
  ]);
  socket.close();
  assert.ok(!result.connected, 'the connection was accepted but should have been refused');
  assert.ok(!result.timeout, `no connect_error within ${ms} ms`);
  return result.err;
}

/** Emit with an ack and return the ack body ({ok, data} or {ok:false, error}). */
export async function ack(socket, event, payload, ms = 5000) {
  try {
    return await socket.timeout(ms).emitWithAck(event, payload);
  } catch (e) {
    throw new Error(`${event} ${short(payload)}: no ack within ${ms} ms (${e.message}; connected=${socket.connected})`);
  }
}

/** Emit with an ack, assert ok:true, return `data`. */
export async function ok(socket, event, payload, ms) {
  const res = await ack(socket, event, payload, ms);
  assert.ok(res && res.ok === true, `${socket.user ?? '?'}: ${event} ${short(payload)} should succeed, got ${JSON.stringify(res)}`);
  return res.data;
}

/** Emit with an ack, assert ok:false with `code`, return the error. */
export async function fails(socket, event, payload, code) {
  const res = await ack(socket, event, payload);
  assert.ok(res && res.ok === false, `${socket.user ?? '?'}: ${event} ${short(payload)} should fail with ${code}, got ${JSON.stringify(res)}`);
  assert.equal(res.error?.code, code, `${event} ${short(payload)}: error code (message: ${res.error?.message})`);
  assert.equal(typeof res.error.message, 'string', `${event}: error.message should be a string`);
  return res.error;
}

/**
 * Wait for a recorded event (already seen since `since`, or arriving within `ms`) that
 * matches `pred`; resolve with its entry {event, data, at}.
 */
export function waitFor(socket, event, pred = () => true, ms = 3000, since = 0) {
  const match = (e) => e.event === event && e.at >= since && pred(e.data);
  const found = socket.seen.find(match);
  if (found) return Promise.resolve(found);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.waiters.delete(w);
      const got = socket.seen.filter((e) => e.event === event).map((e) => JSON.stringify(e.data));
      reject(new Error(`${socket.user ?? '?'}: no matching ${event} within ${ms} ms (got ${got.length ? got.join(', ') : 'none'})`));
    }, ms);
    const w = (e) => {
      if (match(e)) {
        clearTimeout(timer);
        socket.waiters.delete(w);
        resolve(e);
      }
    };
    socket.waiters.add(w);
  });
}

/** The recorded events named `event` matching `pred`. */
export const seen = (socket, event, pred = () => true) => socket.seen.filter((e) => e.event === event && pred(e.data));

/** Forget what was recorded so far. */
export function clearSeen(...sockets) {
  for (const s of sockets) s.seen.length = 0;
}

/** Wait `ms` and assert no `event` matching `pred` arrived meanwhile (or before). */
export async function expectNone(socket, event, pred = () => true, ms = 500) {
  await sleep(ms);
  const got = seen(socket, event, pred);
  assert.equal(got.length, 0, `${socket.user ?? '?'} should not receive ${event}, got ${got.map((e) => JSON.stringify(e.data)).join(', ')}`);
}

/** Resolve with the disconnect reason once the socket is disconnected. */
export function disconnected(socket, ms = 3000) {
  return waitFor(socket, 'disconnect', () => true, ms).then((e) => e.data);
}

/** Close every socket opened through this module. */
export function closeAll() {
  for (const s of open) s.close();
  open.clear();
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until it returns a truthy value or `ms` passes; return the last value. */
export async function eventually(fn, ms = 2000, every = 50) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last || Date.now() > deadline) return last;
    await sleep(every);
  }
}

function short(v) {
  let s;
  try {
    s = JSON.stringify(v);
  } catch {
    s = String(v);
  }
  if (s === undefined) s = String(v);
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

/**
 * A top-level scenario: its sockets are closed when it ends, pass or fail. (A top-level
 * afterEach hook would also run after every subtest and close sockets mid-scenario.)
 */
export function scenario(name, options, fn) {
  return nodeTest(name, options, async (t) => {
    try {
      await fn(t);
    } finally {
      closeAll();
    }
  });
}
