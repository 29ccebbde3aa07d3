// Start and stop switchboard nodes as child processes of the test, on free loopback
// ports. Every child is remembered by its PID and stopped by `stopAll()` (call it from
// an `after` hook); a last-resort `exit` handler kills whatever is left, so a crashed
// test run does not leave servers behind.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = process.env.SWITCHBOARD_BIN || join(REPO, 'target/debug/switchboard');

/** Where node logs go: the test environment's log dir when there is one. */
export const LOG_DIR = process.env.SWITCHBOARD_TEST_STATE
  ? join(process.env.SWITCHBOARD_TEST_STATE, 'logs', 'node-tests')
  : join(tmpdir(), `switchboard-node-tests-${process.pid}`);

const children = new Set();

function killChildren() {
  for (const node of children) {
    try {
      process.kill(node.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
process.on('exit', killChildren);
// Interrupted (Ctrl-C, or the runner cancelling this file): no `exit` event would run.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    killChildren();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  });
}

/** A TCP port nothing listens on right now. */
export function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

/** A fresh random string, e.g. for secrets and per-run ids. */
export const randomId = (bytes = 6) => randomBytes(bytes).toString('hex');

/** Write a config file for `--config` and return its path. */
export function writeConfig(name, text) {
  mkdirSync(LOG_DIR, { recursive: true });
  const path = join(LOG_DIR, name);
  writeFileSync(path, text);
  return path;
}

/**
 * Start `switchboard serve` and wait until GET /healthz answers.
 *
 * options: name (for the log file), secret, adminToken, redisUrl (shared mode),
 * nodeId, args (extra CLI arguments such as `--set k=v`), env (extra variables).
 * Nodes drain for 500 ms when stopped (SIGTERM), not the default 10 s, so `stop()`
 * returns quickly; `--set server.drain_window=…` in `args` overrides it.
 * Returns { name, port, url, pid, secret, adminToken, logFile, output(), stop() }.
 */
export async function startNode(options = {}) {
  const name = options.name ?? `node-${randomId(3)}`;
  const secret = options.secret ?? `test-secret-${randomId(16)}`;
  const adminToken = options.adminToken ?? `admin-${randomId(16)}`;
  const port = await freePort();
  const env = {
    SWITCHBOARD_JWT_SECRET: secret,
    SWITCHBOARD_ADMIN_TOKEN: adminToken,
    SWITCHBOARD_DRAIN_WINDOW: '500ms',
    ...(options.redisUrl ? { SWITCHBOARD_REDIS_URL: options.redisUrl } : {}),
    ...(options.nodeId ? { SWITCHBOARD_NODE_ID: options.nodeId } : {}),
    ...(options.env ?? {}),
  };
  const args = ['serve', '--listen', `127.0.0.1:${port}`, ...(options.args ?? [])];
  const node = await startProcess({ name, bin: BIN, args, env, port, healthPath: '/healthz' });
  return Object.assign(node, { secret, adminToken });
}

/**
 * Start `bin args` (a switchboard program, or any server the tests need) with its output
 * in LOG_DIR/NAME-PORT.log, and wait until GET http://127.0.0.1:PORT{healthPath} answers
 * 2xx (within `timeoutMs`). No SWITCHBOARD_* variable of the caller leaks in (a stray
 * SWITCHBOARD_REDIS_URL would silently turn an embedded node into a shared one); `env`
 * adds variables. `stopAll()` stops it with the nodes.
 * Returns { name, port, url, pid, logFile, output(), stop(), whenExited, child }.
 */
export async function startProcess({ name, bin, args, env = {}, port, healthPath, timeoutMs = 20_000 }) {
  const childEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SWITCHBOARD_')));
  Object.assign(childEnv, { RUST_LOG: process.env.RUST_LOG ?? 'info', ...env });

  mkdirSync(LOG_DIR, { recursive: true });
  const logFile = join(LOG_DIR, `${name}-${port}.log`);
  const log = createWriteStream(logFile);
  let tail = '';
  const child = spawn(bin, args, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  const keep = (chunk) => {
    log.write(chunk);
    tail = (tail + chunk.toString()).slice(-4000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);

  const node = {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    pid: child.pid,
    logFile,
    exited: null,
    output: () => tail,
    stop: () => stopNode(node),
    child,
  };
  const exited = new Promise((res) => {
    child.on('exit', (code, signal) => {
      node.exited = { code, signal };
      children.delete(node);
      log.end();
      res(node.exited);
    });
  });
  node.whenExited = exited;
  const spawnError = new Promise((_, rej) => child.on('error', (e) => rej(new Error(`cannot start ${bin}: ${e.message} (build it with: cargo build --workspace, or set SWITCHBOARD_BIN)`))));
  spawnError.catch(() => {});
  children.add(node);

  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (node.exited) {
      throw new Error(`${name}: ${bin} exited (${JSON.stringify(node.exited)}) before answering ${healthPath}; output:\n${tail}`);
    }
    if (Date.now() > deadline) {
      await stopNode(node);
      throw new Error(`${name}: ${healthPath} did not answer within ${timeoutMs / 1000} s; output:\n${tail}`);
    }
    try {
      const res = await Promise.race([fetch(`${node.url}${healthPath}`, { signal: AbortSignal.timeout(1000) }), spawnError]);
      if (res.ok) return node;
    } catch (e) {
      if (e.message?.startsWith('cannot start')) throw e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** SIGTERM, then SIGKILL if the node has not exited within 3 s. */
export async function stopNode(node) {
  if (node.exited) return node.exited;
  try {
    process.kill(node.pid, 'SIGTERM');
  } catch {
    return node.whenExited;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(node.pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }, 3000);
  const result = await node.whenExited;
  clearTimeout(timer);
  return result;
}

/** Stop every node this process started. */
export async function stopAll() {
  await Promise.all([...children].map(stopNode));
}

/** POST /admin/v1/revocations; returns { status, body }. */
export async function revoke(node, body, adminToken = node.adminToken) {
  const res = await fetch(`${node.url}/admin/v1/revocations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(adminToken ? { authorization: `Bearer ${adminToken}` } : {}) },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, body: json };
}

/**
 * The test environment's endpoints `names` (written by `tests/env/envctl up`), or null when
 * one is missing. The one rule of every suite: under CI=true a missing endpoint fails (a
 * CI run never passes by skipping); elsewhere `t`, when given, is skipped saying `why` and
 * the command that starts the services.
 */
export function services(t, names, why) {
  const missing = names.filter((n) => !process.env[n]);
  if (!missing.length) return names.map((n) => process.env[n]);
  const text = `${missing.join(' and ')} not set: ${why}; run \`tests/env/envctl up\` then \`source tests/.state/env\``;
  if (process.env.CI === 'true') assert.fail(text);
  t?.skip(text);
  return null;
}
