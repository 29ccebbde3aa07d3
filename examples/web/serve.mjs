// `npm start`: serve the built app (dist/) on its own origin, next to a Switchboard node.
//
//   npm start                         starts a local node too (target/release or
//                                     target/debug `switchboard serve`, or SWITCHBOARD_BIN)
//                                     on 127.0.0.1:3000 with a fresh dev JWT secret and CORS
//                                     for the app's origin, and serves the app on :5173
//   SWITCHBOARD_URL=http://host:3000 SWITCHBOARD_JWT_SECRET=... npm start
//                                     serves the app for a node that is already running
//
// Besides the files it answers GET /config.json (where the node is) and, when it knows
// the node's JWT secret, POST /dev/token {sub, name?, tenant}: an HS256 token for the
// sign-in form. That endpoint is for development only: anyone who can reach it can be
// anyone. A real app gets its tokens from its own identity provider.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.map': 'application/json' };
// The protocol's id rules (dataplane/PROTOCOL.md, "Ids").
const USER_ID = /^[A-Za-z0-9\-_.@+]{1,128}$/;
const TENANT = /^[A-Za-z0-9\-_.]{1,64}$/;

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** An HS256 JWT with the claims Switchboard reads, valid for `ttlSecs`. */
export function devToken(secret, { sub, name, tenant }, ttlSecs = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub, tenant, name: name || sub, iat: now, exp: now + ttlSecs, jti: randomUUID(), sid: randomUUID() };
  const head = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

function send(res, status, body, type = 'application/json') {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
}

async function readJson(req) {
  let raw = '';
  for await (const chunk of req) {
    raw += chunk;
    if (raw.length > 4096) throw new Error('body too large');
  }
  return JSON.parse(raw || '{}');
}

/**
 * Serve `root` (the built app) on host:port. `nodeUrl` is where the app connects;
 * `jwtSecret` enables POST /dev/token; `iceTransportPolicy` ('all' or 'relay') is handed
 * to the app's calls. Resolves with { url, port, close() }.
 */
export function startAppServer({ root = join(HERE, 'dist'), host = '127.0.0.1', port = 5173, nodeUrl, jwtSecret, iceTransportPolicy = 'all' }) {
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    try {
      if (req.method === 'GET' && path === '/config.json') {
        return send(res, 200, { nodeUrl, devTokens: Boolean(jwtSecret), iceTransportPolicy });
      }
      if (req.method === 'POST' && path === '/dev/token') {
        if (!jwtSecret) return send(res, 404, { error: 'dev tokens are off: this server does not know the node\'s JWT secret' });
        const { sub, name, tenant } = await readJson(req);
        if (!USER_ID.test(sub ?? '')) return send(res, 400, { error: 'user id: 1-128 of A-Z a-z 0-9 - _ . @ +' });
        if (!TENANT.test(tenant ?? '')) return send(res, 400, { error: 'tenant: 1-64 of A-Z a-z 0-9 - _ .' });
        if (name !== undefined && (typeof name !== 'string' || name.length > 64)) return send(res, 400, { error: 'name: at most 64 characters' });
        return send(res, 200, { token: devToken(jwtSecret, { sub, name, tenant }) });
      }
      if (req.method !== 'GET') return send(res, 405, { error: 'method not allowed' });
      const file = join(root, path === '/' ? 'index.html' : path.slice(1));
      if (!file.startsWith(root) || !TYPES[extname(file)] || !existsSync(file)) return send(res, 404, { error: 'not found' });
      return send(res, 200, readFileSync(file), TYPES[extname(file)]);
    } catch (e) {
      return send(res, 400, { error: String(e.message ?? e) });
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const bound = server.address().port;
      resolve({ url: `http://${host}:${bound}`, port: bound, close: () => new Promise((r) => server.close(r)) });
    });
  });
}

/** The switchboard binary to start: SWITCHBOARD_BIN, else a release build, else a debug one. */
function nodeBinary() {
  const candidates = [process.env.SWITCHBOARD_BIN, join(HERE, '../../target/release/switchboard'), join(HERE, '../../target/debug/switchboard')];
  const bin = candidates.find((p) => p && existsSync(p));
  if (!bin) {
    console.error('no switchboard binary: run `cargo build --release -p switchboard-dataplane` at the repository root, or set SWITCHBOARD_URL');
    process.exit(1);
  }
  return bin;
}

async function main() {
  if (!existsSync(join(HERE, 'dist/index.html'))) {
    console.error('dist/ is empty: run `npm run build` first');
    process.exit(1);
  }
  const port = Number(process.env.PORT ?? 5173);
  const origins = [`http://127.0.0.1:${port}`, `http://localhost:${port}`];
  let nodeUrl = process.env.SWITCHBOARD_URL;
  let secret = process.env.SWITCHBOARD_JWT_SECRET;
  let child;
  if (!nodeUrl) {
    const nodePort = Number(process.env.SWITCHBOARD_NODE_PORT ?? 3000);
    secret ||= randomBytes(32).toString('hex');
    nodeUrl = `http://127.0.0.1:${nodePort}`;
    child = spawn(nodeBinary(), ['serve', '--listen', `127.0.0.1:${nodePort}`], {
      stdio: 'inherit',
      env: { ...process.env, SWITCHBOARD_JWT_SECRET: secret, SWITCHBOARD_CORS_ALLOWED_ORIGINS: origins.join(',') },
    });
    child.on('exit', (code) => {
      console.error(`the node exited (${code})`);
      process.exit(1);
    });
    for (const sig of ['SIGINT', 'SIGTERM']) {
      process.once(sig, () => {
        child.removeAllListeners('exit');
        child.kill('SIGTERM');
        process.exit(0);
      });
    }
  }
  const app = await startAppServer({ port, nodeUrl, jwtSecret: secret, iceTransportPolicy: process.env.ICE_TRANSPORT_POLICY ?? 'all' });
  console.log(`app  ${app.url}  (also http://localhost:${app.port})`);
  console.log(`node ${nodeUrl}${child ? ' (started here; stops with this server)' : ''}`);
  if (!secret) console.log('no SWITCHBOARD_JWT_SECRET: sign in by pasting a token (`switchboard token --sub alice --tenant demo`)');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
