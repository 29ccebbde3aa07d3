// A minimal TURN client (RFC 5766 / 8656 requests, RFC 5389 long-term credentials), enough
// to ask a real coturn what a credential may do: allocate a relay over UDP or TCP, and
// ask for a permission towards a peer address. It answers with the STUN error code (0 on
// success), so a test can tell "refused by policy" (403), "unsupported transport" (442)
// and "quota reached" (486) apart.

import { createHash, createHmac, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';

const MAGIC = 0x2112a442;
const ALLOCATE = 0x0003;
const CREATE_PERMISSION = 0x0008;
const ATTR = {
  USERNAME: 0x0006,
  MESSAGE_INTEGRITY: 0x0008,
  ERROR_CODE: 0x0009,
  XOR_PEER_ADDRESS: 0x0012,
  REALM: 0x0014,
  NONCE: 0x0015,
  REQUESTED_TRANSPORT: 0x0019,
};
/** IANA protocol numbers REQUESTED-TRANSPORT carries. */
export const UDP = 17;
export const TCP = 6;

function attr(type, value) {
  const pad = (4 - (value.length % 4)) % 4;
  const head = Buffer.alloc(4);
  head.writeUInt16BE(type, 0);
  head.writeUInt16BE(value.length, 2);
  return Buffer.concat([head, value, Buffer.alloc(pad)]);
}

/** A request of `method` with `attrs`; MESSAGE-INTEGRITY last when `key` is given. */
function encode(method, attrs, key) {
  const id = randomBytes(12);
  let body = Buffer.concat(attrs);
  const header = (length) => {
    const h = Buffer.alloc(20);
    h.writeUInt16BE(method, 0);
    h.writeUInt16BE(length, 2);
    h.writeUInt32BE(MAGIC, 4);
    id.copy(h, 8);
    return h;
  };
  if (key) {
    // The HMAC covers the header with the length already counting the integrity attribute.
    const mac = createHmac('sha1', key).update(Buffer.concat([header(body.length + 24), body])).digest();
    body = Buffer.concat([body, attr(ATTR.MESSAGE_INTEGRITY, mac)]);
  }
  return { id, bytes: Buffer.concat([header(body.length), body]) };
}

/** {type, id, attrs: Map<type, Buffer>} of one STUN message. */
function decode(buf) {
  const attrs = new Map();
  const length = buf.readUInt16BE(2);
  let at = 20;
  while (at + 4 <= 20 + length) {
    const type = buf.readUInt16BE(at);
    const len = buf.readUInt16BE(at + 2);
    attrs.set(type, buf.subarray(at + 4, at + 4 + len));
    at += 4 + len + ((4 - (len % 4)) % 4);
  }
  return { type: buf.readUInt16BE(0), id: buf.subarray(8, 20), attrs };
}

/** The error code of a response (0 for a success response). */
function errorCode(msg) {
  const e = msg.attrs.get(ATTR.ERROR_CODE);
  if (!e) return (msg.type & 0x0110) === 0x0100 ? 0 : -1;
  return (e[2] & 0x7) * 100 + e[3];
}

/** XOR-PEER-ADDRESS for an IPv4 `ip` (port 9, discard). */
function xorPeer(ip) {
  const v = Buffer.alloc(8);
  v.writeUInt8(0x01, 1);
  v.writeUInt16BE(9 ^ (MAGIC >>> 16), 2);
  const addr = ip.split('.').reduce((n, o) => (n << 8) + Number(o), 0) >>> 0;
  v.writeUInt32BE((addr ^ MAGIC) >>> 0, 4);
  return v;
}

/** A control connection to the TURN server over UDP or TCP: send a request, await its answer. */
async function channel(host, port, transport) {
  const waiting = new Map();
  const deliver = (buf) => {
    const msg = decode(buf);
    const hex = msg.id.toString('hex');
    waiting.get(hex)?.(msg);
    waiting.delete(hex);
  };
  let send;
  let close;
  if (transport === 'udp') {
    const sock = dgram.createSocket('udp4');
    sock.on('message', deliver);
    await new Promise((r) => sock.bind(0, r));
    send = (bytes) => sock.send(bytes, port, host);
    close = () => sock.close();
  } else {
    const sock = net.connect(port, host);
    await new Promise((r, j) => sock.once('connect', r).once('error', j));
    let pending = Buffer.alloc(0);
    sock.on('data', (d) => {
      pending = Buffer.concat([pending, d]);
      while (pending.length >= 20 && pending.length >= 20 + pending.readUInt16BE(2)) {
        const n = 20 + pending.readUInt16BE(2);
        deliver(pending.subarray(0, n));
        pending = pending.subarray(n);
      }
    });
    send = (bytes) => sock.write(bytes);
    close = () => sock.destroy();
  }
  const request = ({ id, bytes }) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no TURN answer from ${host}:${port}/${transport}`)), 3000);
      waiting.set(id.toString('hex'), (msg) => {
        clearTimeout(timer);
        resolve(msg);
      });
      send(bytes);
    });
  return { request, close };
}

/**
 * Allocate a relay on the TURN server at host:port with REST credentials
 * {username, credential}, over the `control` transport ('udp' or 'tcp'), asking for a
 * relay of `relay` (UDP or TCP). Returns {code, permit(ip) → code, close()}.
 */
export async function allocate({ host, port = 3478, username, credential, control = 'udp', relay = UDP }) {
  const ch = await channel(host, port, control);
  const transport = attr(ATTR.REQUESTED_TRANSPORT, Buffer.from([relay, 0, 0, 0]));
  const challenge = await ch.request(encode(ALLOCATE, [transport]));
  if (errorCode(challenge) !== 401) {
    ch.close();
    throw new Error(`expected a 401 challenge, got ${errorCode(challenge)}`);
  }
  const realm = challenge.attrs.get(ATTR.REALM);
  const nonce = challenge.attrs.get(ATTR.NONCE);
  const key = createHash('md5').update(`${username}:${realm.toString()}:${credential}`).digest();
  const auth = [attr(ATTR.USERNAME, Buffer.from(username)), attr(ATTR.REALM, realm), attr(ATTR.NONCE, nonce)];
  const answer = await ch.request(encode(ALLOCATE, [transport, ...auth], key));
  return {
    code: errorCode(answer),
    reason: answer.attrs.get(ATTR.ERROR_CODE)?.subarray(4).toString() ?? '',
    permit: async (ip) => errorCode(await ch.request(encode(CREATE_PERMISSION, [attr(ATTR.XOR_PEER_ADDRESS, xorPeer(ip)), ...auth], key))),
    close: ch.close,
  };
}
