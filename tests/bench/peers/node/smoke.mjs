// Smoke test of the Node.js benchmark peer (server.mjs).
//
//   node tests/bench/peers/node/smoke.mjs
//
// One node: /healthz, handshake rejections, join + send + message:new with seq 1 then 2,
// the error acks, the polling transport. Two nodes (when SWITCHBOARD_TEST_REDIS_URL is
// set, or tests/.state/env has it): a message sent on node A reaches a client on node B,
// seqs are shared, the stream holds the messages. Every peer started here is stopped by
// its PID before exiting. Needs `install.sh` to have run (socket.io-client is a
// devDependency of the peer package).

import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

import { io } from "socket.io-client";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../../../..");
const SECRET = crypto.randomBytes(24).toString("hex");
const TIMEOUT_MS = 5000;

const children = new Set();
let failures = 0;
let passes = 0;

function check(cond, what) {
  if (cond) {
    passes += 1;
    console.log(`ok   ${what}`);
  } else {
    failures += 1;
    console.log(`FAIL ${what}`);
  }
}

// ---------------------------------------------------------------- helpers

function jwt(claims, secret = SECRET) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = `${enc({ alg: "HS256", typ: "JWT" })}.${enc(claims)}`;
  const sig = crypto.createHmac("sha256", secret).update(head).digest("base64url");
  return `${head}.${sig}`;
}

const hourFromNow = () => Math.floor(Date.now() / 1000) + 3600;

function withTimeout(promise, what, ms = TIMEOUT_MS) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

/** Start a peer on a free port; resolves {port, child} on `listening <port>`. */
function startPeer(name, extraEnv = {}) {
  const env = { ...process.env, PORT: "0", HOST: "127.0.0.1", BENCH_JWT_SECRET: SECRET, ...extraEnv };
  if (!extraEnv.REDIS_URL) delete env.REDIS_URL;
  const child = spawn(process.execPath, [path.join(HERE, "server.mjs")], {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  child.on("exit", () => children.delete(child));
  child.stderr.on("data", (d) => process.stderr.write(`[${name}] ${d}`));
  return withTimeout(
    new Promise((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (d) => {
        out += d;
        const m = /^listening (\d+)$/m.exec(out);
        if (m) resolve({ port: Number(m[1]), child, pid: child.pid });
      });
      child.once("exit", (code) => reject(new Error(`${name} exited with ${code} before listening`)));
    }),
    `${name} to listen`,
  );
}

async function stopPeer(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  process.kill(child.pid, "SIGTERM");
  try {
    await withTimeout(exited, `pid ${child.pid} to exit`);
  } catch {
    process.kill(child.pid, "SIGKILL");
    await exited;
  }
}

/** Connect to /chat; resolves the socket, or rejects with the connect_error. */
function connect(port, token, opts = {}) {
  const socket = io(`http://127.0.0.1:${port}/chat`, {
    auth: token === undefined ? undefined : { token },
    transports: ["websocket"],
    reconnection: false,
    forceNew: true,
    timeout: TIMEOUT_MS,
    ...opts,
  });
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", () => resolve(socket));
      socket.once("connect_error", (e) => {
        socket.close();
        reject(e);
      });
    }),
    "connect",
  );
}

async function connectError(port, token) {
  try {
    const s = await connect(port, token);
    s.close();
    return "(connected)";
  } catch (e) {
    return e.message;
  }
}

const request = (socket, event, data) =>
  withTimeout(socket.timeout(TIMEOUT_MS).emitWithAck(event, data), `${event} ack`);

const nextEvent = (socket, event) =>
  withTimeout(new Promise((resolve) => socket.once(event, resolve)), `${event} event`);

/** Resolves true if `event` arrives within ms, false otherwise. */
function arrives(socket, event, ms = 300) {
  return new Promise((resolve) => {
    const on = () => {
      clearTimeout(t);
      resolve(true);
    };
    const t = setTimeout(() => {
      socket.off(event, on);
      resolve(false);
    }, ms);
    socket.once(event, on);
  });
}

function redisUrl() {
  if (process.env.SWITCHBOARD_TEST_REDIS_URL) return process.env.SWITCHBOARD_TEST_REDIS_URL;
  try {
    const env = fs.readFileSync(path.join(REPO, "tests/.state/env"), "utf8");
    const m = /^export SWITCHBOARD_TEST_REDIS_URL=(\S+)$/m.exec(env);
    if (m) return m[1].replace(/^['"]|['"]$/g, "");
  } catch {
    // no state file
  }
  return "";
}

// ---------------------------------------------------------------- single node

async function singleNode() {
  console.log("# single node (memory store)");
  const peer = await startPeer("single");
  const sockets = [];
  try {
    const health = await fetch(`http://127.0.0.1:${peer.port}/healthz`);
    check(health.status === 200 && (await health.text()).trim() === "ok", "GET /healthz -> 200 ok");

    const now = hourFromNow();
    const badSig = await connectError(peer.port, jwt({ sub: "alice", tenant: "t1", exp: now }, "wrong-secret"));
    check(badSig.startsWith("unauthorized"), `bad signature -> connect_error "${badSig}"`);
    const noToken = await connectError(peer.port, undefined);
    check(noToken.startsWith("unauthorized"), `no token -> connect_error "${noToken}"`);
    const garbage = await connectError(peer.port, "not-a-jwt");
    check(garbage.startsWith("unauthorized"), `garbage token -> connect_error "${garbage}"`);
    const expired = await connectError(peer.port, jwt({ sub: "alice", tenant: "t1", exp: 1000 }));
    check(expired.startsWith("token_expired"), `expired token -> connect_error "${expired}"`);
    const noTenant = await connectError(peer.port, jwt({ sub: "alice", exp: now }));
    check(noTenant.startsWith("tenant_required"), `no tenant -> connect_error "${noTenant}"`);
    const noSub = await connectError(peer.port, jwt({ tenant: "t1", exp: now }));
    check(noSub.startsWith("unauthorized"), `no sub -> connect_error "${noSub}"`);

    const alice = await connect(peer.port, jwt({ sub: "alice", tenant: "t1", exp: now }));
    const bob = await connect(peer.port, jwt({ sub: "bob", tenant: "t1", exp: now }));
    const eve = await connect(peer.port, jwt({ sub: "bob", tenant: "t2", exp: now })); // other tenant
    sockets.push(alice, bob, eve);
    check(true, "valid tokens connect (websocket)");

    const j1 = await request(alice, "room:join", { room_id: "r1" });
    const room = j1?.data?.room;
    check(
      j1?.ok === true && room?.id === "r1" && room.visibility === "public" && room.owner_id === "alice" &&
        typeof room.name === "string" && typeof room.created_at === "number",
      `room:join ack ${JSON.stringify(j1)}`,
    );
    const j2 = await request(bob, "room:join", { room_id: "r1" });
    check(j2?.ok === true && j2.data.room.owner_id === "alice", "second join sees the same room");
    await request(eve, "room:join", { room_id: "r1" });

    const got = nextEvent(bob, "message:new");
    const aliceEcho = arrives(alice, "message:new");
    const eveLeak = arrives(eve, "message:new");
    const a1 = await request(alice, "message:send", { room_id: "r1", body: "hello", client_msg_id: "c1" });
    const m1 = a1?.data?.message;
    check(
      a1?.ok === true && m1?.seq === 1 && m1.room_id === "r1" && m1.sender_id === "alice" &&
        m1.body === "hello" && m1.client_msg_id === "c1" && typeof m1.id === "string" &&
        typeof m1.ts === "number",
      `first message:send ack has seq 1: ${JSON.stringify(a1)}`,
    );
    const n1 = await got;
    check(n1?.message?.id === m1?.id && n1.message.seq === 1, "bob receives message:new {message}");
    check(!(await aliceEcho), "the sender gets no message:new echo");
    check(!(await eveLeak), "another tenant's same-named room gets nothing");

    const got2 = nextEvent(bob, "message:new");
    const a2 = await request(alice, "message:send", { room_id: "r1", body: "again" });
    check(a2?.ok === true && a2.data.message.seq === 2 && !("client_msg_id" in a2.data.message),
      "second ack has seq 2 (no client_msg_id field when none was sent)");
    check((await got2).message.seq === 2, "bob receives seq 2");

    const a3 = await request(bob, "message:send", { room_id: "r1", body: "from bob" });
    check(a3?.ok === true && a3.data.message.seq === 3 && a3.data.message.sender_id === "bob", "bob's send gets seq 3");

    const e1 = await request(alice, "message:send", { room_id: "r2", body: "x" });
    check(e1?.ok === false && e1.error.code === "forbidden", `send to an unjoined room -> ${e1?.error?.code}`);
    const e2 = await request(alice, "message:send", { room_id: "r1", body: "   " });
    check(e2?.ok === false && e2.error.code === "bad_request", `blank body -> ${e2?.error?.code}`);
    const e3 = await request(alice, "message:send", { room_id: "r1", body: "é".repeat(2049) });
    check(e3?.ok === false && e3.error.code === "payload_too_large", `4098-byte body -> ${e3?.error?.code}`);
    const e4 = await request(alice, "message:send", { room_id: "r1", body: "a".repeat(4096) });
    check(e4?.ok === true && e4.data.message.seq === 4, "4096-byte body is accepted");
    const e5 = await request(alice, "message:send", "nonsense");
    check(e5?.ok === false && e5.error.code === "bad_request", `non-object payload -> ${e5?.error?.code}`);
    const e6 = await request(alice, "room:join", { room_id: "bad:id" });
    check(e6?.ok === false && e6.error.code === "bad_request", `bad room_id -> ${e6?.error?.code}`);
    const e7 = await request(alice, "message:send", { room_id: "r1", body: 42 });
    check(e7?.ok === false && e7.error.code === "bad_request", `non-string body -> ${e7?.error?.code}`);

    const poll = await connect(peer.port, jwt({ sub: "carol", tenant: "t1", exp: now }), {
      transports: ["polling"],
    });
    sockets.push(poll);
    check(poll.io.engine.transport.name === "polling", "polling transport connects");
    await request(poll, "room:join", { room_id: "r1" });
    const got3 = nextEvent(poll, "message:new");
    const a5 = await request(alice, "message:send", { room_id: "r1", body: "to poller" });
    check(a5.data.message.seq === 5 && (await got3).message.seq === 5, "polling client receives message:new");
  } finally {
    for (const s of sockets) s.close();
    await stopPeer(peer.child);
    check(peer.child.exitCode !== null || peer.child.signalCode !== null, `single-node peer pid ${peer.pid} stopped`);
  }
}

// ---------------------------------------------------------------- two nodes (Redis)

async function twoNodes(url) {
  console.log(`# two nodes (redis adapter, ${url})`);
  const peers = [];
  const sockets = [];
  let redis;
  try {
    peers.push(await startPeer("node-a", { REDIS_URL: url }));
    peers.push(await startPeer("node-b", { REDIS_URL: url }));
    const [a, b] = peers;
    const now = hourFromNow();
    const tenant = "smoke";
    const roomId = `r-${crypto.randomUUID()}`;
    const onA = await connect(a.port, jwt({ sub: "alice", tenant, exp: now }));
    const onB = await connect(b.port, jwt({ sub: "bob", tenant, exp: now }), { transports: ["polling"] });
    sockets.push(onA, onB);
    await request(onA, "room:join", { room_id: roomId });
    await request(onB, "room:join", { room_id: roomId });

    const atB = nextEvent(onB, "message:new");
    const s1 = await request(onA, "message:send", { room_id: roomId, body: "across nodes" });
    check(s1?.ok === true && s1.data.message.seq === 1, `send on node A acks seq 1: ${JSON.stringify(s1)}`);
    const n1 = await atB;
    check(n1?.message?.id === s1?.data?.message?.id, "client on node B receives message:new from node A");

    const atA = nextEvent(onA, "message:new");
    const s2 = await request(onB, "message:send", { room_id: roomId, body: "and back" });
    check(s2?.ok === true && s2.data.message.seq === 2, "send on node B gets seq 2 (seq shared via Redis INCR)");
    check((await atA).message.seq === 2, "client on node A receives node B's message");

    const { createClient } = await import("redis");
    redis = createClient({ url });
    redis.on("error", () => {});
    await redis.connect();
    const key = `bench:peer:{${tenant}}:room:${roomId}`;
    const len = await redis.xLen(`${key}:log`);
    const entries = await redis.xRange(`${key}:log`, "-", "+");
    const stored = entries.map((e) => JSON.parse(e.message.m));
    check(len === 2 && stored[0].seq === 1 && stored[1].seq === 2 && stored[1].body === "and back",
      `stream ${key}:log holds both messages`);
    await redis.del([`${key}:log`, `${key}:seq`]);
  } finally {
    for (const s of sockets) s.close();
    if (redis) await redis.close().catch(() => {});
    for (const p of peers) {
      await stopPeer(p.child);
      check(p.child.exitCode !== null || p.child.signalCode !== null, `redis peer pid ${p.pid} stopped`);
    }
  }
}

// ---------------------------------------------------------------- main

async function main() {
  try {
    await singleNode();
    const url = redisUrl();
    if (url) {
      await twoNodes(url);
    } else {
      console.log("SKIP two nodes: SWITCHBOARD_TEST_REDIS_URL is not set (tests/env/envctl up redis)");
    }
  } catch (e) {
    failures += 1;
    console.log(`FAIL ${e?.stack ?? e}`);
  } finally {
    for (const c of [...children]) await stopPeer(c);
  }
  console.log(`\n${passes} passed, ${failures} failed`);
  process.exit(failures === 0 ? 0 : 1);
}

main();
