// kubectl, helm and crictl as a user runs them, against the test environment's real node
// (tests/env: `envctl up`, then `source tests/.state/env`).

import { execFile, execFileSync, spawn } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** An environment variable written by `envctl up`; a clear error when it is missing. */
export function envVar(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run tests/env/envctl up and source tests/.state/env`);
  return v;
}

export const KUBECTL = () => envVar('SWITCHBOARD_TEST_KUBECTL');
export const HELM = () => envVar('SWITCHBOARD_TEST_HELM');

/** kubectl ARGS; resolves with stdout, rejects with stderr in the message. */
export async function kubectl(...args) {
  try {
    const { stdout } = await run(KUBECTL(), args, { maxBuffer: 64 << 20 });
    return stdout;
  } catch (e) {
    throw new Error(`kubectl ${args.join(' ')}: ${e.stderr || e.message}`);
  }
}

/** kubectl apply -f - with `yaml` on stdin. */
export function apply(yaml, ...args) {
  return new Promise((resolve, reject) => {
    const p = spawn(KUBECTL(), ['apply', ...args, '-f', '-']);
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`kubectl apply: ${out}`))));
    p.stdin.end(yaml);
  });
}

/** kubectl get … -o json, parsed. */
export async function getJson(...args) {
  return JSON.parse(await kubectl('get', ...args, '-o', 'json'));
}

/** helm ARGS with its state under `home`. */
export async function helm(home, ...args) {
  try {
    const { stdout } = await run(HELM(), args, {
      env: { ...process.env, HELM_CACHE_HOME: `${home}/cache`, HELM_CONFIG_HOME: `${home}/config`, HELM_DATA_HOME: `${home}/data` },
      maxBuffer: 16 << 20,
    });
    return stdout;
  } catch (e) {
    throw new Error(`helm ${args.join(' ')}: ${e.stderr || e.message}`);
  }
}

/** crictl ARGS against the node's containerd (CONTAINER_RUNTIME_ENDPOINT is exported). */
export function crictl(...args) {
  return execFileSync(envVar('SWITCHBOARD_TEST_CRICTL'), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until it returns a truthy value; throw with `what` after `ms`. */
export async function until(what, fn, ms = 60000, every = 500) {
  const deadline = Date.now() + ms;
  let last;
  let error;
  for (;;) {
    try {
      last = await fn();
      error = undefined;
      if (last) return last;
    } catch (e) {
      error = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${ms} ms${error ? ` (last error: ${error.message})` : ''}`);
    }
    await sleep(every);
  }
}

/** The pods of `ns` matching `selector`, parsed. */
export async function pods(ns, selector) {
  return (await getJson('pods', '-n', ns, '-l', selector)).items;
}

/** A pod is Ready (its Ready condition is True) and not being deleted. */
export const isReady = (pod) =>
  !pod.metadata.deletionTimestamp && (pod.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');

/**
 * `kubectl port-forward` to `target` (svc/NAME or pod/NAME) port `port` in `ns`;
 * resolves with {localPort, stop()} once it listens.
 */
export function portForward(ns, target, port) {
  return new Promise((resolve, reject) => {
    const p = spawn(KUBECTL(), ['port-forward', '-n', ns, '--address', '127.0.0.1', target, `:${port}`]);
    let out = '';
    const timer = setTimeout(() => {
      p.kill();
      reject(new Error(`port-forward ${target}: no listener within 20 s: ${out}`));
    }, 20000);
    p.stdout.on('data', (d) => {
      out += d;
      const m = /Forwarding from 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ localPort: Number(m[1]), stop: () => p.kill() });
      }
    });
    p.stderr.on('data', (d) => (out += d));
    p.on('close', (code) => {
      clearTimeout(timer);
      reject(new Error(`port-forward ${target} exited (${code}): ${out}`));
    });
  });
}
