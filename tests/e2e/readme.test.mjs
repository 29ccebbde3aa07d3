// README.md "Run it on Kubernetes", run as written: its shell block, line by line, from the
// repository root with `kubectl` and `helm` on PATH, against the test environment. Then a
// user's first messages through the Service it made, and a clean removal.
//
// The commands carry no placement, so for this test the real node takes any pod (its
// taint is lifted) and the kwok nodes take none (cordoned); both are restored after.
// Runs after cluster.test.mjs (files run in order, one at a time), which it must not
// overlap: the chart installed here watches every namespace.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';

import { closeAll, connectUser, ok, waitFor } from '../node/lib/client.mjs';
import { HELM, KUBECTL, envVar, getJson, isReady, kubectl, until } from './lib/kube.mjs';

const repo = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const TAINT = 'switchboard.dev/real-node=true:NoSchedule';
const home = mkdtempSync(join(tmpdir(), 'sb-readme-'));
const NODE = () => envVar('SWITCHBOARD_TEST_NODE_NAME');
let kwokNodes = [];
let touchedNodes = false;

/** The first ```sh block under "## Run it on Kubernetes", one command per line. */
function readmeCommands() {
  const text = readFileSync(join(repo, 'README.md'), 'utf8');
  const section = text.split(/^## /m).find((s) => s.startsWith('Run it on Kubernetes'));
  assert.ok(section, 'README.md has a "Run it on Kubernetes" section');
  const block = section.match(/```sh\n([\s\S]*?)```/);
  assert.ok(block, 'the section has a sh block');
  return block[1].split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

/** The user's shell: kubectl and helm on PATH, helm's state in a fresh home. */
function shell(line) {
  const bin = join(home, 'bin');
  return execFileSync('bash', ['-euo', 'pipefail', '-c', line], {
    cwd: repo,
    encoding: 'utf8',
    env: {
      ...process.env,
      PATH: `${bin}${delimiter}${process.env.PATH}`,
      HELM_CACHE_HOME: join(home, 'cache'), HELM_CONFIG_HOME: join(home, 'config'), HELM_DATA_HOME: join(home, 'data'),
    },
    timeout: 180000,
  });
}

before(async () => {
  execFileSync('mkdir', ['-p', join(home, 'bin')]);
  symlinkSync(KUBECTL(), join(home, 'bin', 'kubectl'));
  symlinkSync(HELM(), join(home, 'bin', 'helm'));
  // What the README creates must not exist yet: never clobber someone's cluster.
  const clash = await kubectl('get', 'namespace/switchboard', 'rtc/chat', 'secret/chat-jwt', '-n', 'default', '--ignore-not-found', '-o', 'name').catch((e) => e.message);
  assert.equal(clash.trim(), '', `the README's objects already exist: ${clash}`);
  kwokNodes = (await getJson('nodes')).items.map((n) => n.metadata.name).filter((n) => n !== NODE());
  touchedNodes = true;
  for (const n of kwokNodes) await kubectl('cordon', n);
  await kubectl('taint', 'node', NODE(), `${TAINT}-`);
});

after(async () => {
  closeAll();
  const quiet = (p) => p.catch(() => {});
  await quiet(kubectl('delete', 'rtc', 'chat', '-n', 'default', '--ignore-not-found', '--wait=true', '--timeout=120s'));
  await quiet(kubectl('delete', 'secret', 'chat-jwt', '-n', 'default', '--ignore-not-found'));
  try {
    shell('helm uninstall switchboard --namespace switchboard --wait');
  } catch {
    // not installed
  }
  await quiet(kubectl('delete', 'namespace', 'switchboard', '--ignore-not-found', '--wait=true', '--timeout=120s'));
  if (touchedNodes) {
    await quiet(kubectl('taint', 'node', NODE(), TAINT, '--overwrite'));
    for (const n of kwokNodes) await quiet(kubectl('uncordon', n));
  }
  rmSync(home, { recursive: true, force: true });
});

test('README "Run it on Kubernetes" works as written: helm install, the secret, the sample, Ready', async () => {
  const commands = readmeCommands();
  assert.ok(commands.some((c) => c.startsWith('helm install')), commands.join('\n'));
  const started = Date.now();
  let out = '';
  for (const c of commands) out = shell(c);
  // The last command is `kubectl get realtimeclusters`; the cluster then becomes Ready.
  assert.match(out.split('\n')[0], /NAME\s+READY\s+NODES\s+REDIS\s+AGE/, out);
  await until('the sample cluster is Ready', async () => {
    const rc = await getJson('rtc', '-n', 'default', 'chat');
    return (rc.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
  }, 240000);
  console.log(`# README: first command -> Ready: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const table = shell('kubectl get realtimeclusters');
  assert.match(table, /chat\s+True\s+2\/2/, table);
  for (const p of (await getJson('pods', '-n', 'default', '-l', 'app.kubernetes.io/instance=chat')).items) {
    assert.equal(p.spec.nodeName, NODE(), `${p.metadata.name} runs on the real node`);
    assert.ok(isReady(p), `${p.metadata.name} is Ready`);
  }
  for (const p of (await getJson('pods', '-n', 'switchboard')).items) {
    assert.equal(p.spec.nodeName, NODE(), `operator ${p.metadata.name} runs on the real node`);
  }
});

test("the sample's Service carries a user's first messages (official client, the Secret's key)", async () => {
  const secret = Buffer.from((await getJson('secret', '-n', 'default', 'chat-jwt')).data.secret, 'base64').toString();
  const svc = await getJson('svc', '-n', 'default', 'chat-socket');
  const target = { url: `http://${svc.spec.clusterIP}:${svc.spec.ports[0].port}`, secret };
  await until('the Service answers through kube-proxy', async () => {
    const res = await fetch(`${target.url}/healthz`, { signal: AbortSignal.timeout(2000) }).catch(() => null);
    return res?.status === 200;
  }, 60000, 200);
  const alice = await connectUser(target, 'alice', 'readme', { transports: ['websocket'] });
  const bob = await connectUser(target, 'bob', 'readme', { transports: ['websocket'] });
  const { room } = await ok(alice, 'room:create', { name: 'first', visibility: 'private', members: ['bob'] });
  await ok(bob, 'room:join', { room_id: room.id });
  const { message } = await ok(alice, 'message:send', { room_id: room.id, body: 'it works', client_msg_id: 'r1' });
  const got = await waitFor(bob, 'message:new', (d) => d.message.id === message.id, 5000);
  assert.equal(got.data.message.body, 'it works');
  closeAll();
});
