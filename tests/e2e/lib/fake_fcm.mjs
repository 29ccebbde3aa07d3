// The FCM HTTP v1 + OAuth2 stand-in (tests/fakes, `switchboard-fake-fcm`) as a process
// on the pod bridge, where the notification worker's pod reaches it. These machines
// cannot reach Google; the stand-in answers as FCM documents and checks the worker's
// signed OAuth grant and request shape (see tests/fakes/src/fcm.rs).

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = resolve(fileURLToPath(new URL('../../..', import.meta.url)));

/**
 * Start it listening on `host` (any free port); the service-account JSON goes to
 * `account`. Resolves to {baseUrl, account, seen(), stop()}.
 */
export async function startFakeFcm(host, account) {
  const bin = process.env.SWITCHBOARD_FAKE_FCM_BIN ?? join(repo, 'target/debug/switchboard-fake-fcm');
  const child = spawn(bin, ['--listen', `${host}:0`, '--account', account], { stdio: ['ignore', 'pipe', 'inherit'] });
  const first = await new Promise((ok, fail) => {
    const lines = createInterface({ input: child.stdout });
    lines.once('line', (l) => ok(JSON.parse(l)));
    child.once('error', fail);
    child.once('exit', (code) => fail(new Error(`${bin} exited with ${code} before listening`)));
  });
  return {
    baseUrl: first.base_url,
    account,
    /** What it saw: {sends: [{id, token, status}], refused: [...], issued: n}. */
    async seen() {
      const res = await fetch(`${first.base_url}/seen`, { signal: AbortSignal.timeout(3000) });
      return res.json();
    },
    stop() {
      child.kill('SIGTERM');
    },
  };
}
