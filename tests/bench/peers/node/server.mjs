// Benchmark peer: the Node.js Socket.IO stack Switchboard replaces.
//
// Serves a subset of Switchboard's /chat contract (/work/shared/PROTOCOL.md) with the
// same payloads and ack envelope, so one load generator can drive both servers:
//
//   handshake auth.token (or Authorization: Bearer), HS256 JWT  -> identity {tenant, sub}
//   room:join    {room_id}                          -> ack {room}
//   message:send {room_id, body, client_msg_id?}    -> ack {message, duplicate:false},
//                                                     message:new {message} to the others
//
// Environment:
//   PORT              listen port (default 3000; 0 = any free port, printed on ready)
//   HOST              listen address (default 127.0.0.1)
//   BENCH_JWT_SECRET  HS256 secret (required)
//   REDIS_URL         when set: @socket.io/redis-adapter + messages stored in Redis
//
// Prints `listening <port>` on stdout once it accepts connections.

import crypto from "node:crypto";
import http from "node:http";
import process from "node:process";

import { Server } from "socket.io";

const PORT = Number.parseInt(process.env.PORT ?? "3000", 10);
const HOST = process.env.HOST || "127.0.0.1";
const SECRET = process.env.BENCH_JWT_SECRET ?? "";
const REDIS_URL = process.env.REDIS_URL ?? "";

// Switchboard's defaults: limits.max_payload_bytes, chat.max_message_bytes,
// chat.history_max_len, jwt.leeway.
const MAX_PAYLOAD_BYTES = 64 * 1024;
const MAX_BODY_BYTES = 4096;
const HISTORY_MAX_LEN = 10000;
const JWT_LEEWAY_SECS = 30;

if (!SECRET) {
  console.error("BENCH_JWT_SECRET is not set");
  process.exit(2);
}
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) {
  console.error(`PORT must be 0-65535, got ${JSON.stringify(process.env.PORT)}`);
  process.exit(2);
}

// ---------------------------------------------------------------- identifiers

const TENANT_RE = /^[A-Za-z0-9._-]{1,64}$/;
const ID_RE = /^[A-Za-z0-9._@+-]{1,128}$/;

/** Socket.IO room of a chat room, the same name Switchboard uses. */
const chatRoom = (tenant, roomId) => `t:${tenant}:r:${roomId}`;

// ---------------------------------------------------------------- authentication

class AuthError extends Error {}

/** Verify an HS256 JWT; returns {tenant, userId} or throws AuthError whose message
 * starts with the protocol's code (unauthorized / token_expired / tenant_required). */
function verifyToken(token) {
  if (typeof token !== "string" || token.length === 0) {
    throw new AuthError("unauthorized: no token (handshake auth.token or Authorization: Bearer)");
  }
  const parts = token.split(".");
  if (parts.length !== 3) throw new AuthError("unauthorized: malformed token");
  const [h, p, s] = parts;
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(h, "base64url").toString("utf8"));
    claims = JSON.parse(Buffer.from(p, "base64url").toString("utf8"));
  } catch {
    throw new AuthError("unauthorized: malformed token");
  }
  if (header === null || typeof header !== "object" || claims === null || typeof claims !== "object") {
    throw new AuthError("unauthorized: malformed token");
  }
  if (header.alg !== "HS256") throw new AuthError("unauthorized: algorithm not accepted");
  const want = crypto.createHmac("sha256", SECRET).update(`${h}.${p}`).digest();
  const got = Buffer.from(s, "base64url");
  if (got.length !== want.length || !crypto.timingSafeEqual(got, want)) {
    throw new AuthError("unauthorized: bad signature");
  }
  const now = Date.now() / 1000;
  if (typeof claims.exp !== "number") throw new AuthError("unauthorized: missing claim exp");
  if (claims.exp + JWT_LEEWAY_SECS <= now) {
    throw new AuthError("token_expired: the token's exp is in the past");
  }
  if (typeof claims.nbf === "number" && claims.nbf - JWT_LEEWAY_SECS > now) {
    throw new AuthError("unauthorized: token not valid yet (nbf)");
  }
  if (typeof claims.sub !== "string") throw new AuthError("unauthorized: missing claim sub");
  if (typeof claims.tenant !== "string" || claims.tenant === "") {
    throw new AuthError("tenant_required: the token has no tenant claim");
  }
  if (!TENANT_RE.test(claims.tenant)) {
    throw new AuthError("unauthorized: tenant claim has characters outside A-Z a-z 0-9 - _ .");
  }
  if (!ID_RE.test(claims.sub)) {
    throw new AuthError("unauthorized: sub claim has characters outside A-Z a-z 0-9 - _ . @ +");
  }
  return { tenant: claims.tenant, userId: claims.sub };
}

function handshakeToken(handshake) {
  const t = handshake.auth?.token;
  if (typeof t === "string" && t !== "") return t;
  const h = handshake.headers?.authorization;
  if (typeof h === "string" && h.startsWith("Bearer ")) return h.slice(7).trim();
  return undefined;
}

// ---------------------------------------------------------------- acks

const ok = (data) => ({ ok: true, data });
const fail = (code, message) => ({ ok: false, error: { code, message } });

class AckError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// ---------------------------------------------------------------- message stores
//
// Switchboard stores every message before it acks (memory on one node, Redis with
// several). The peer does the equivalent cheap step; see README.md ("Fairness").

/** One node: a seq counter and the last HISTORY_MAX_LEN messages per room, in memory. */
class MemoryStore {
  constructor() {
    this.rooms = new Map(); // "tenant\0room" -> {seq, log: [], next}
  }

  async append(tenant, msg) {
    const key = `${tenant}\0${msg.room_id}`;
    let r = this.rooms.get(key);
    if (r === undefined) {
      r = { seq: 0, log: [], next: 0 };
      this.rooms.set(key, r);
    }
    r.seq += 1;
    const message = withSeq(msg, r.seq);
    // Bounded: grows to HISTORY_MAX_LEN, then overwrites the oldest slot.
    if (r.log.length < HISTORY_MAX_LEN) {
      r.log.push(message);
    } else {
      r.log[r.next] = message;
      r.next = (r.next + 1) % HISTORY_MAX_LEN;
    }
    return message;
  }

  async close() {}
}

// KEYS[1] seq counter, KEYS[2] stream. ARGV[1] JSON before the seq, ARGV[2] JSON after
// it, ARGV[3] max length. One round trip: INCR, then XADD the message with its seq.
const APPEND_LUA = `
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[1] .. seq .. ARGV[2])
return seq
`;

/** Several nodes: per-room seq via Redis INCR, the message XADDed to a per-room stream
 * trimmed with MAXLEN ~ HISTORY_MAX_LEN, both in one script call. */
class RedisStore {
  constructor(client) {
    this.client = client;
    this.sha = null;
  }

  async init() {
    this.sha = await this.client.scriptLoad(APPEND_LUA);
  }

  async append(tenant, msg) {
    const base = `bench:peer:{${tenant}}:room:${msg.room_id}`;
    const keys = [`${base}:seq`, `${base}:log`];
    // The JSON around the seq; ids and room ids cannot hold quotes, so plain concatenation.
    const { id, room_id, seq: _ignored, ...rest } = msg;
    const before = `{"id":${JSON.stringify(id)},"room_id":${JSON.stringify(room_id)},"seq":`;
    const after = `,${JSON.stringify(rest).slice(1)}`;
    const args = [before, after, String(HISTORY_MAX_LEN)];
    let seq;
    try {
      seq = await this.client.evalSha(this.sha, { keys, arguments: args });
    } catch (e) {
      if (!String(e?.message).startsWith("NOSCRIPT")) throw e;
      seq = await this.client.eval(APPEND_LUA, { keys, arguments: args });
    }
    return withSeq(msg, Number(seq));
  }
}

/** The message with its seq, fields in contract order. */
function withSeq(msg, seq) {
  const m = { id: msg.id, room_id: msg.room_id, seq, sender_id: msg.sender_id, body: msg.body, ts: msg.ts };
  if (msg.client_msg_id !== undefined) m.client_msg_id = msg.client_msg_id;
  return m;
}

// ---------------------------------------------------------------- rooms (implicit, public)

const rooms = new Map(); // "tenant\0room" -> room

function roomFor(tenant, roomId, userId) {
  const key = `${tenant}\0${roomId}`;
  let room = rooms.get(key);
  if (room === undefined) {
    room = { id: roomId, name: roomId, visibility: "public", owner_id: userId, created_at: Date.now() };
    rooms.set(key, room);
  }
  return room;
}

// ---------------------------------------------------------------- handlers

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function checkRoomId(id) {
  if (typeof id !== "string") throw new AckError("bad_request", "room_id must be a string");
  if (!ID_RE.test(id)) {
    throw new AckError("bad_request", "room_id must be 1-128 characters of A-Z a-z 0-9 - _ . @ +");
  }
}

function roomJoin(socket, req) {
  if (!isObject(req)) throw new AckError("bad_request", "expected an object {room_id}");
  checkRoomId(req.room_id);
  const { tenant, userId } = socket.data;
  const room = roomFor(tenant, req.room_id, userId);
  socket.join(chatRoom(tenant, room.id));
  socket.data.joined.add(room.id);
  return { room };
}

async function messageSend(store, socket, req) {
  if (!isObject(req)) throw new AckError("bad_request", "expected an object {room_id, body, client_msg_id?}");
  const { room_id: roomId, body, client_msg_id: cmid } = req;
  if (typeof roomId !== "string") throw new AckError("bad_request", "room_id must be a string");
  if (typeof body !== "string") throw new AckError("bad_request", "body must be a string");
  if (cmid !== undefined && cmid !== null && typeof cmid !== "string") {
    throw new AckError("bad_request", "client_msg_id must be a string");
  }
  if (body.trim() === "") throw new AckError("bad_request", "body must not be empty");
  const size = Buffer.byteLength(body, "utf8");
  if (size > MAX_BODY_BYTES) {
    throw new AckError(
      "payload_too_large",
      `body is ${size} bytes; the limit is ${MAX_BODY_BYTES} (chat.max_message_bytes)`,
    );
  }
  if (typeof cmid === "string") {
    const n = Buffer.byteLength(cmid, "utf8");
    if (n === 0 || n > 128) throw new AckError("bad_request", "client_msg_id must be 1-128 bytes");
  }
  checkRoomId(roomId);
  if (!socket.data.joined.has(roomId)) {
    throw new AckError("forbidden", "you are not a member of this room");
  }
  const { tenant, userId } = socket.data;
  const draft = {
    id: crypto.randomUUID(),
    room_id: roomId,
    seq: 0,
    sender_id: userId,
    body,
    ts: Date.now(),
  };
  if (typeof cmid === "string") draft.client_msg_id = cmid;
  let message;
  try {
    message = await store.append(tenant, draft);
  } catch (e) {
    console.error(`store append failed: ${e?.message ?? e}`);
    throw new AckError("unavailable", "message store unavailable, retry later");
  }
  socket.to(chatRoom(tenant, roomId)).emit("message:new", { message });
  return { message, duplicate: false };
}

/** Wrap a handler: split off the ack, turn errors into the ack envelope. */
function handle(socket, fn) {
  return async (...args) => {
    const ack = typeof args[args.length - 1] === "function" ? args.pop() : () => {};
    let reply;
    try {
      reply = ok(await fn(args[0]));
    } catch (e) {
      if (e instanceof AckError) {
        reply = fail(e.code, e.message);
      } else {
        console.error(`handler error: ${e?.stack ?? e}`);
        reply = fail("internal", "internal error");
      }
    }
    if (socket.connected) ack(reply);
  };
}

// ---------------------------------------------------------------- server

async function main() {
  const httpServer = http.createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (path === "/healthz" && (req.method === "GET" || req.method === "HEAD")) {
      res.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
      res.end(req.method === "HEAD" ? undefined : "ok\n");
      return;
    }
    res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
    res.end("not found\n");
  });

  const io = new Server(httpServer, {
    maxHttpBufferSize: MAX_PAYLOAD_BYTES,
    serveClient: false,
  });

  const redisClients = [];
  let store;
  if (REDIS_URL) {
    const { createClient } = await import("redis");
    const { createAdapter } = await import("@socket.io/redis-adapter");
    const onError = (name) => (e) => console.error(`redis ${name}: ${e?.message ?? e}`);
    const pub = createClient({ url: REDIS_URL });
    const sub = pub.duplicate();
    const data = pub.duplicate();
    pub.on("error", onError("pub"));
    sub.on("error", onError("sub"));
    data.on("error", onError("data"));
    await Promise.all([pub.connect(), sub.connect(), data.connect()]);
    redisClients.push(pub, sub, data);
    io.adapter(createAdapter(pub, sub));
    store = new RedisStore(data);
    await store.init();
  } else {
    store = new MemoryStore();
  }

  const chat = io.of("/chat");
  chat.use((socket, next) => {
    try {
      const id = verifyToken(handshakeToken(socket.handshake));
      socket.data.tenant = id.tenant;
      socket.data.userId = id.userId;
      socket.data.joined = new Set();
      next();
    } catch (e) {
      next(new Error(e instanceof AuthError ? e.message : "unauthorized: malformed token"));
    }
  });
  chat.on("connection", (socket) => {
    socket.on("room:join", handle(socket, (req) => roomJoin(socket, req)));
    socket.on("message:send", handle(socket, (req) => messageSend(store, socket, req)));
  });

  await new Promise((resolve, reject) => {
    httpServer.once("error", reject);
    httpServer.listen(PORT, HOST, () => {
      httpServer.off("error", reject);
      resolve();
    });
  });
  console.log(`listening ${httpServer.address().port}`);

  let stopping = false;
  const stop = async (signal) => {
    if (stopping) return;
    stopping = true;
    console.error(`${signal}: shutting down`);
    const force = setTimeout(() => process.exit(0), 3000);
    force.unref();
    await new Promise((resolve) => io.close(() => resolve()));
    await Promise.allSettled(redisClients.map((c) => c.close()));
    process.exit(0);
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

main().catch((e) => {
  console.error(`startup failed: ${e?.stack ?? e}`);
  process.exit(1);
});
