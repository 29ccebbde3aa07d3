// Operators' observability, end to end (issue 16). A real Prometheus (tests/env component
// `prometheus`) scrapes two socket nodes, a notification worker and the operator that this
// file starts, while the official client runs chat, presence, a call and notifications
// through them. Then:
// - every PromQL expression of the Grafana dashboard returns data (no empty panel, no
//   misspelled metric or label), with the dashboard's variables filled in;
// - Prometheus loads the chart's alert rules and evaluates each without error, and every
//   series selector of every rule matches scraped series;
// - the dashboard passes Grafana's dashboard schema, and `promtool check rules` and
//   `promtool test rules` (tests/observability/rules.test.yaml) pass.
// The scrape configuration labels each target as a Prometheus Operator ServiceMonitor
// would (namespace, pod, service, job), so the queries are checked as they run in a cluster.
//
// Needs: SWITCHBOARD_TEST_PROMETHEUS, SWITCHBOARD_TEST_PROMTOOL and
// SWITCHBOARD_TEST_DASHBOARD_CHECK (tests/env/envctl up prometheus), Redis, Kafka, the API
// server with kwok (KUBECONFIG, SWITCHBOARD_TEST_KUBECTL) and the debug builds of
// switchboard, switchboard-operator and switchboard-fake-fcm (cargo build --workspace).
// Skipped without them, failed when CI=true.
//
// Run: cargo build --workspace, then cd tests/node && node --test observability.test.mjs

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';

import { closeAll, connectUser, fails, ok, waitFor } from './lib/client.mjs';
import { BIN, freePort, LOG_DIR, randomId, REPO, services, startNode, startProcess, stopAll } from './lib/server.mjs';

const RUN = randomId(4);
const TENANT = `obs-${RUN}`;
/** The Kubernetes namespace of the RealtimeCluster, and the `namespace` label of every target. */
const NAMESPACE = `sb-obs-${RUN}`;
const SERVICE = `service-${randomId(16)}`;
const SCRAPE_INTERVAL = '2s';
const DASHBOARD = join(REPO, 'charts/switchboard/dashboards/switchboard.json');
const RULES = join(REPO, 'charts/switchboard/rules/switchboard.rules.yaml');
const RULE_TESTS = join(REPO, 'tests/observability/rules.test.yaml');
const BIN_DIR = dirname(BIN);

const env = process.env;
const NEEDS = [
  'SWITCHBOARD_TEST_PROMETHEUS',
  'SWITCHBOARD_TEST_PROMTOOL',
  'SWITCHBOARD_TEST_DASHBOARD_CHECK',
  'SWITCHBOARD_TEST_REDIS_URL',
  'SWITCHBOARD_TEST_KAFKA_BROKERS',
  'SWITCHBOARD_TEST_KUBECTL',
  'KUBECONFIG',
];
const WHY = 'Prometheus, promtool and the dashboard check (component prometheus) watch nodes on Redis and Kafka and the operator on the API server';

/** Skip (by hand) or fail (CI) when the environment lacks what this file needs. */
const need = (t) => services(t, NEEDS, WHY) !== null;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const kubectl = (args, input) => run(env.SWITCHBOARD_TEST_KUBECTL, args, input);

/** Run a program to completion; reject with its output when it fails. */
function run(bin, args, input) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${bin} ${args.join(' ')} exited ${code}:\n${out}`))));
    child.stdin.end(input ?? '');
  });
}

// === the system under observation ===

let tmp;
let nodes;
let worker;
let operator;
let prometheus;
let fcm;
let k8sReady = false;

/** switchboard-fake-fcm as a program: resolves with its base URL and service-account file. */
async function startFakeFcm() {
  const account = join(tmp, 'fcm-account.json');
  const child = spawn(join(BIN_DIR, 'switchboard-fake-fcm'), ['--listen', '127.0.0.1:0', '--account', account], { stdio: ['ignore', 'pipe', 'pipe'] });
  const line = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (c) => {
      out += c;
      if (out.includes('\n')) resolve(out.split('\n')[0]);
    });
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`switchboard-fake-fcm exited ${code} (cargo build --workspace)`)));
  });
  // Not one of server.mjs's children (it answers HTTP/2 only, no health URL for fetch):
  // killed here if this process ends without `after`.
  process.on('exit', () => child.kill('SIGKILL'));
  return { child, ...JSON.parse(line) };
}

/** The RealtimeCluster the operator reconciles (kwok plays its pods). */
const CLUSTER = `apiVersion: switchboard.dev/v1alpha1
kind: RealtimeCluster
metadata:
  name: chat
  namespace: ${NAMESPACE}
spec:
  auth:
    jwt:
      algorithm: HS256
      secretRef: {name: chat-jwt, key: secret}
  turn:
    urls: ["turn:turn.example.com:3478"]
`;

async function setUpKubernetes() {
  await kubectl(['create', 'namespace', NAMESPACE]);
  // The CRD as the chart ships it, unless one is installed already (leave an installed
  // CRD alone: another test's operator may be watching it).
  const crdName = 'realtimeclusters.switchboard.dev';
  const have = await kubectl(['get', 'crd', crdName, '--ignore-not-found', '-o', 'name']);
  if (!have.trim()) {
    await kubectl(['apply', '--server-side', '--field-manager=switchboard-tests', '-f', join(REPO, 'charts/switchboard/crds/realtimeclusters.yaml')]);
  }
  await kubectl(['wait', '--for=condition=established', '--timeout=60s', `crd/${crdName}`]);
  await kubectl(['-n', NAMESPACE, 'create', 'secret', 'generic', 'chat-jwt', `--from-literal=secret=${randomId(16)}`]);
  await kubectl(['apply', '-f', '-'], CLUSTER);
  k8sReady = true;
}

/** A scrape job labelled the way a Prometheus Operator ServiceMonitor labels its targets. */
const job = (name, service, targets) => ({
  job_name: name,
  scrape_interval: SCRAPE_INTERVAL,
  static_configs: targets.map(([pod, port]) => ({
    targets: [`127.0.0.1:${port}`],
    labels: { namespace: NAMESPACE, pod, service },
  })),
});

async function startPrometheus() {
  const port = await freePort();
  const config = join(tmp, 'prometheus.yml');
  // JSON is YAML.
  writeFileSync(
    config,
    JSON.stringify({
      global: { scrape_interval: SCRAPE_INTERVAL, evaluation_interval: SCRAPE_INTERVAL },
      rule_files: [RULES],
      scrape_configs: [
        job('switchboard-socket', 'chat', nodes.map((n, i) => [`chat-socket-${i}`, n.port])),
        job('switchboard-worker', 'chat-worker', [['chat-worker-0', worker.port]]),
        job('switchboard-operator', 'switchboard-operator-metrics', [['switchboard-operator-0', operator.port]]),
      ],
    }),
  );
  return startProcess({
    name: 'prometheus',
    bin: env.SWITCHBOARD_TEST_PROMETHEUS,
    args: [`--config.file=${config}`, `--storage.tsdb.path=${join(tmp, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    port,
    healthPath: '/-/ready',
    timeoutMs: 60_000,
  });
}

before(async () => {
  if (!services(null, NEEDS, WHY)) return;
  mkdirSync(LOG_DIR, { recursive: true });
  tmp = mkdtempSync(join(tmpdir(), `switchboard-obs-${RUN}-`));
  fcm = await startFakeFcm();
  const redisUrl = env.SWITCHBOARD_TEST_REDIS_URL;
  const kafka = {
    SWITCHBOARD_KAFKA_BROKERS: env.SWITCHBOARD_TEST_KAFKA_BROKERS,
    SWITCHBOARD_KAFKA_TOPIC: `obs-notif-${RUN}`,
    SWITCHBOARD_KAFKA_DLQ_TOPIC: `obs-notif-dlq-${RUN}`,
  };
  const secret = `obs-secret-${randomId(12)}`;
  const common = { redisUrl, secret, env: { ...kafka, SWITCHBOARD_SERVICE_TOKEN: SERVICE } };
  nodes = [await startNode({ ...common, name: 'obs-a', nodeId: `obs-a-${RUN}` }), await startNode({ ...common, name: 'obs-b', nodeId: `obs-b-${RUN}` })];
  // The first notification creates the topic (the broker auto-creates it), so the worker
  // finds it when it subscribes. Nobody has devices yet: nothing is delivered.
  assert.equal((await notify(nodes[0], `obs-${RUN}-first`, 'nobody')).status, 202);

  const workerPort = await freePort();
  worker = await startProcess({
    name: 'obs-worker',
    bin: BIN,
    // Two attempts: a push that keeps failing is counted `failed` within a second or two.
    args: ['worker', '--set', 'notifications.fcm.max_attempts=2'],
    env: {
      ...kafka,
      SWITCHBOARD_KAFKA_GROUP: `obs-workers-${RUN}`,
      SWITCHBOARD_REDIS_URL: redisUrl,
      SWITCHBOARD_LISTEN: `127.0.0.1:${workerPort}`,
      SWITCHBOARD_FCM_SERVICE_ACCOUNT_FILE: fcm.account,
      SWITCHBOARD_FCM_BASE_URL: fcm.base_url,
    },
    port: workerPort,
    healthPath: '/readyz',
  });

  await setUpKubernetes();
  const operatorPort = await freePort();
  operator = await startProcess({
    name: 'obs-operator',
    bin: join(BIN_DIR, 'switchboard-operator'),
    // Its own namespace and Lease: it leads at once and touches no other test's clusters.
    args: ['run', '--listen', `127.0.0.1:${operatorPort}`, '--watch-namespace', NAMESPACE, '--lease-namespace', NAMESPACE, '--lease-name', `obs-${RUN}`, '--identity', `obs-operator-${RUN}`],
    env: { KUBECONFIG: env.KUBECONFIG },
    port: operatorPort,
    healthPath: '/readyz',
  });

  prometheus = await startPrometheus();
});

after(async () => {
  closeAll();
  await stopAll();
  if (fcm) fcm.child.kill('SIGTERM');
  if (k8sReady) await kubectl(['delete', 'namespace', NAMESPACE, '--wait=false']).catch(() => {});
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** POST /api/v1/notifications through `node` for `user`. */
function notify(node, id, user) {
  return fetch(`${node.url}/api/v1/notifications`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${SERVICE}` },
    body: JSON.stringify({ id, tenant: TENANT, user_ids: [user], type: 'mention', priority: 'high', title: 'Observed', body: id }),
  });
}

// === Prometheus's HTTP API ===

async function api(path, params = {}) {
  const res = await fetch(`${prometheus.url}/api/v1/${path}?${new URLSearchParams(params)}`);
  const body = await res.json();
  assert.equal(body.status, 'success', `${path} ${JSON.stringify(params)}: ${JSON.stringify(body)}`);
  return body.data;
}

/** The result of an instant query (an error fails the test: the expression is broken). */
async function query(expr) {
  const data = await api('query', { query: expr });
  return data.result;
}

/** Every vector selector of a PromQL expression, as selector strings, via /api/v1/parse_query. */
async function selectors(expr) {
  const ast = await api('parse_query', { query: expr });
  const out = [];
  const walk = (node) => {
    if (!node || typeof node !== 'object') return;
    if (node.type === 'vectorSelector') {
      const m = node.matchers.map((x) => `${x.name}${x.type}${JSON.stringify(x.value)}`);
      out.push(`{${m.join(', ')}}`);
      return;
    }
    for (const v of Object.values(node)) {
      if (Array.isArray(v)) v.forEach(walk);
      else walk(v);
    }
  };
  walk(ast);
  return out;
}

/** The dashboard's queries with its variables filled in as Grafana would. */
function dashboardQueries() {
  const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8'));
  const out = [];
  const fill = (expr) => expr.replaceAll('$__rate_interval', '1m').replaceAll('$namespace', NAMESPACE);
  for (const p of dash.panels) {
    for (const t of p.targets ?? []) out.push({ panel: p.title, legend: t.legendFormat, expr: fill(t.expr) });
  }
  return { dash, queries: out };
}

/** The alert rules as Prometheus loaded them. */
async function loadedRules() {
  const data = await api('rules', { type: 'alert' });
  return data.groups.flatMap((g) => g.rules.map((r) => ({ group: g.name, ...r })));
}

// === traffic ===

/** Chat, presence, a call and notifications across both nodes, as apps would. */
async function traffic() {
  const [a, b] = nodes;
  const room = `room-${RUN}`;
  const alice = await connectUser(a, 'alice', TENANT);
  const bob = await connectUser(b, 'bob', TENANT);
  await ok(alice, 'room:create', { room_id: room, visibility: 'public' });
  await ok(bob, 'room:join', { room_id: room });
  for (let i = 0; i < 5; i++) {
    const { message } = await ok(alice, 'message:send', { room_id: room, body: `hello ${i}` });
    await waitFor(bob, 'message:new', (d) => d.message.seq === message.seq);
    await ok(bob, 'message:delivered', { room_id: room, up_to_seq: message.seq });
  }
  // An error code for the errors panel and the error-rate rule.
  await fails(alice, 'message:send', { room_id: room }, 'bad_request');

  // Presence across nodes: bob (node B) watches alice (node A).
  const alicePresence = await connectUser(a, 'alice', TENANT, { namespace: '/presence' });
  const bobPresence = await connectUser(b, 'bob', TENANT, { namespace: '/presence' });
  await ok(bobPresence, 'presence:subscribe', { user_ids: ['alice'] });
  await ok(alicePresence, 'presence:set-status', { status: 'busy', message: 'observing' });
  await waitFor(bobPresence, 'presence:update', (d) => d.presence.user_id === 'alice' && d.presence.status === 'busy');

  // A call with a poor quality report, then hung up.
  const aliceCall = await connectUser(a, 'alice', TENANT, { namespace: '/webrtc' });
  const bobCall = await connectUser(b, 'bob', TENANT, { namespace: '/webrtc' });
  const { call } = await ok(aliceCall, 'call:initiate', { callee_id: 'bob', media_type: 'audio' });
  await waitFor(bobCall, 'call:incoming', (d) => d.call.id === call.id);
  await ok(bobCall, 'call:answer', { call_id: call.id });
  const { issues } = await ok(bobCall, 'call:report-quality', { call_id: call.id, latency_ms: 900, packet_loss_percentage: 12, jitter_ms: 200, bitrate_kbps: 10 });
  assert.ok(issues.length > 0, 'a poor report has issues');
  // Live long enough for a liveness tick to count it.
  await sleep(4000);
  await ok(aliceCall, 'call:hangup', { call_id: call.id });

  // Notifications: one device that takes pushes, one whose pushes always fail.
  const bobNotes = await connectUser(b, 'bob', TENANT, { namespace: '/notifications' });
  await ok(bobNotes, 'notification:register-device', { platform: 'fcm', token: `ok-${RUN}` });
  await ok(bobNotes, 'notification:register-device', { platform: 'fcm', token: `internal-${RUN}` });
  for (let i = 0; i < 3; i++) {
    const id = `obs-${RUN}-${i}`;
    const res = await notify(a, id, 'bob');
    assert.equal(res.status, 202, await res.text());
    await waitFor(bobNotes, 'notification', (d) => d.id === id, 30_000);
  }
}

// === the tests ===

test('the dashboard passes the Grafana dashboard schema', async (t) => {
  if (!need(t)) return;
  const out = await run(env.SWITCHBOARD_TEST_DASHBOARD_CHECK, [DASHBOARD]);
  assert.match(out, /ok \(\d+ panels\)/);
  // The check is not a formality: a misspelled field fails it.
  const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8'));
  dash.panels[1].gridpos = dash.panels[1].gridPos;
  delete dash.panels[1].gridPos;
  const broken = join(tmp, 'broken-dashboard.json');
  writeFileSync(broken, JSON.stringify(dash));
  await assert.rejects(run(env.SWITCHBOARD_TEST_DASHBOARD_CHECK, [broken]), /unexpected field 'gridpos'/);
});

test('promtool checks the rules and runs their unit tests', async (t) => {
  if (!need(t)) return;
  const checked = await run(env.SWITCHBOARD_TEST_PROMTOOL, ['check', 'rules', RULES]);
  assert.match(checked, /SUCCESS: 9 rules found/);
  const tested = await run(env.SWITCHBOARD_TEST_PROMTOOL, ['test', 'rules', RULE_TESTS]);
  assert.match(tested, /SUCCESS/);
  // Every alert of the rule file has firing and quiet cases in the unit tests, and a
  // runbook section that its runbook_url points at.
  const tests = readFileSync(RULE_TESTS, 'utf8');
  const rules = readFileSync(RULES, 'utf8');
  const runbook = readFileSync(join(REPO, 'docs/runbook.md'), 'utf8');
  const names = [...rules.matchAll(/- alert: (\w+)/g)].map((m) => m[1]);
  assert.equal(names.length, 9);
  for (const name of names) {
    const cases = [...tests.matchAll(new RegExp(`alertname: ${name}\\n\\s+exp_alerts:(.*)`, 'g'))].map((m) => m[1].trim());
    assert.ok(cases.includes('[]'), `${name}: no case where it stays quiet`);
    assert.ok(cases.includes(''), `${name}: no case where it fires`);
    assert.match(runbook, new RegExp(`^## ${name}$`, 'm'), `docs/runbook.md has no section for ${name}`);
    assert.ok(rules.includes(`docs/runbook.md#${name.toLowerCase()}"`), `${name}: runbook_url is not docs/runbook.md#${name.toLowerCase()}`);
  }
});

test('a real Prometheus scraping two nodes, a worker and the operator under traffic: every dashboard query and rule selector returns data', async (t) => {
  if (!need(t)) return;
  await traffic();

  const { dash, queries } = dashboardQueries();
  const rules = await loadedRules();
  assert.equal(rules.length, 9, `Prometheus loaded ${rules.length} alert rules`);
  const ruleSelectors = [];
  for (const r of rules) for (const s of await selectors(r.query)) ruleSelectors.push({ rule: r.name, selector: s });

  // Poll until every query has data: the worker's lag comes with librdkafka's statistics
  // (every 10 s), the call gauge with a liveness tick, counters need two scrapes for rate().
  const deadline = Date.now() + 90_000;
  let empty;
  for (;;) {
    empty = [];
    for (const q of queries) if ((await query(q.expr)).length === 0) empty.push(`panel "${q.panel}" (${q.legend}): ${q.expr}`);
    for (const s of ruleSelectors) if ((await query(s.selector)).length === 0) empty.push(`rule ${s.rule}: ${s.selector}`);
    if (empty.length === 0 || Date.now() > deadline) break;
    await sleep(2000);
  }
  assert.deepEqual(empty, [], `queries without data after traffic:\n${empty.join('\n')}`);

  // Every target was scraped, and Prometheus evaluates every rule without error.
  const targets = (await api('targets')).activeTargets;
  assert.deepEqual(
    targets.filter((x) => x.health !== 'up').map((x) => `${x.labels.pod}: ${x.lastError}`),
    [],
  );
  assert.equal(targets.length, 4);
  const evaluated = await loadedRules();
  assert.deepEqual(
    evaluated.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.lastError}`),
    [],
  );

  // The dashboard's namespace variable lists the namespace the targets are in.
  const variable = dash.templating.list.find((v) => v.name === 'namespace');
  const [, metric, label] = /label_values\((\w+), (\w+)\)/.exec(variable.query.query);
  const values = await api(`label/${label}/values`, { 'match[]': metric });
  assert.ok(values.includes(NAMESPACE), `label_values(${metric}, ${label}) = ${values}`);

  // A few values that must be right, not just present.
  const one = async (expr) => Number((await query(expr))[0]?.value[1]);
  assert.equal(await one(`sum(switchboard_operator_leader{namespace="${NAMESPACE}"})`), 1, 'one operator leads');
  assert.equal(await one(`count(switchboard_connections{namespace="${NAMESPACE}", socketio_namespace="/chat"} > 0)`), 2, 'both nodes hold /chat connections');
  assert.ok((await one(`sum(switchboard_notification_deliveries_total{namespace="${NAMESPACE}", provider="fcm", outcome="failed"})`)) >= 3, 'every push to the failing device counted failed');
  const age = await one(`time() - max(switchboard_operator_turn_secret_rotated_timestamp_seconds{realtimecluster_namespace="${NAMESPACE}"})`);
  assert.ok(age >= 0 && age < 600, `the TURN secret is fresh (age ${age} s)`);
});
