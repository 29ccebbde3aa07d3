// One Socket.IO connection (a Manager) for the four namespaces, a typed method per
// request event, typed server events, catch-up after a reconnect and token refresh.
//
//   app ──▶ client.chat.messageSend(...) ──▶ request() ──emitWithAck──▶ server
//   server ──message:new──▶ Rooms.deliver() (in order, once) ──▶ on('/chat', 'message:new')
//   reconnect ──▶ Rooms.catchUp(): message:history after the last delivered seq, per room

import { Manager, type ManagerOptions, type Socket } from 'socket.io-client';

import { SwitchboardError, connectError } from './errors.js';
import {
  METHODS,
  NAMESPACES,
  SERVER_EVENTS,
  type Message,
  type Namespace,
  type Requests,
  type ServerEvents,
} from './generated/protocol.js';

export interface ClientOptions {
  /** The node's base URL, e.g. `https://rt.example.com` (path `/socket.io/`). */
  url: string;
  /** The JWT for the handshake. */
  token: string;
  /** Supplies a new token: called on `auth:expiring`, and `refreshBeforeMs` before the
   * current token's `exp` when the server has not asked by then. Without it, tokens
   * are not refreshed. */
  refreshToken?: () => string | Promise<string>;
  /** Each request's time limit for its ack (default 10 s). */
  timeoutMs?: number;
  /** Refresh this long before `exp` if no `auth:expiring` came first (default 30 s). */
  refreshBeforeMs?: number;
  /** The namespaces to open (default all four). */
  namespaces?: readonly Namespace[];
  /** Fetch what was missed in each joined room after a reconnect (default true). */
  catchUp?: boolean;
  /** Background failures (a refresh or a catch-up that failed). */
  onError?: (error: unknown) => void;
  /** Passed to socket.io-client's Manager (transports, reconnection delays, ...). */
  manager?: Partial<ManagerOptions>;
}

export interface RequestOptions {
  timeoutMs?: number;
}

type Methods = typeof METHODS;
type EventOf<NS extends Namespace, M extends keyof Methods[NS]> = Methods[NS][M] & keyof Requests[NS];
type ReqOf<NS extends Namespace, E extends keyof Requests[NS]> = Requests[NS][E] extends [infer R, unknown] ? R : never;
type AckOf<NS extends Namespace, E extends keyof Requests[NS]> = Requests[NS][E] extends [unknown, infer A] ? A : never;

/** A typed async function per request event of a namespace (`roomCreate`, ...). */
export type NamespaceApi<NS extends Namespace> = {
  [M in keyof Methods[NS]]: (
    payload: ReqOf<NS, EventOf<NS, M>>,
    options?: RequestOptions,
  ) => Promise<AckOf<NS, EventOf<NS, M>>>;
};

type Handler = (payload: never) => void;

interface Envelope {
  ok?: boolean;
  data?: unknown;
  error?: { code?: string; message?: string };
}

/** The most messages asked for in one catch-up page (the server's `limit` bound). */
const CATCH_UP_PAGE = 100;

// === impl SwitchboardClient ===

export class SwitchboardClient {
  /** The one connection every namespace socket shares. */
  readonly manager: Manager;
  readonly sockets: Partial<Record<Namespace, Socket>> = {};
  readonly chat: NamespaceApi<'/chat'>;
  readonly presence: NamespaceApi<'/presence'>;
  readonly webrtc: NamespaceApi<'/webrtc'>;
  readonly notifications: NamespaceApi<'/notifications'>;

  private token: string;
  private readonly opts: ClientOptions;
  private readonly handlers = new Map<string, Set<Handler>>();
  private readonly rooms: Rooms;
  private readonly connectedOnce = new Set<Namespace>();
  private refreshing: Promise<void> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private closed = false;

  constructor(opts: ClientOptions) {
    this.opts = opts;
    this.token = opts.token;
    this.manager = new Manager(opts.url, {
      autoConnect: false,
      transports: ['websocket', 'polling'],
      ...opts.manager,
    });
    this.rooms = new Rooms(this);
    for (const ns of opts.namespaces ?? NAMESPACES) {
      // `auth` as a function: every (re)connect sends the current token.
      const socket = this.manager.socket(ns, { auth: (cb) => cb({ token: this.token }) });
      this.sockets[ns] = socket;
      socket.on('connect', () => this.connected(ns));
      socket.on('auth:expiring', (p: { expires_at?: number }) => {
        // Sent for the token a socket holds; one that was refreshed already is ignored.
        if (!p?.expires_at || p.expires_at >= expiryMs(this.token)) void this.refresh();
      });
      for (const event of SERVER_EVENTS[ns]) {
        if (ns === '/chat' && event === 'message:new') {
          socket.on(event, (p: { message: Message }) => this.rooms.live(p.message));
        } else {
          socket.on(event, (p: unknown) => {
            if (ns === '/chat' && (event === 'room:deleted' || event === 'room:kicked')) {
              this.rooms.forget((p as { room_id: string }).room_id);
            }
            this.emitLocal(ns, event, p);
          });
        }
      }
    }
    this.chat = this.api('/chat');
    this.presence = this.api('/presence');
    this.webrtc = this.api('/webrtc');
    this.notifications = this.api('/notifications');
    this.schedule();
  }

  /** Open every namespace; resolves once all are connected, or rejects with the
   * `SwitchboardError` of a refused handshake. */
  connect(): Promise<void> {
    const all = Object.entries(this.sockets).map(
      ([, socket]) =>
        new Promise<void>((resolve, reject) => {
          if (socket.connected) return resolve();
          const ok = () => {
            socket.off('connect_error', fail);
            resolve();
          };
          const fail = (err: Error) => {
            socket.off('connect', ok);
            reject(connectError(err));
          };
          socket.once('connect', ok);
          socket.once('connect_error', fail);
          socket.connect();
        }),
    );
    return Promise.all(all).then(() => undefined);
  }

  /** Close the connection and stop refreshing. */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const socket of Object.values(this.sockets)) socket.disconnect();
  }

  /** Listen to a server event; returns the function that stops listening. For
   * `message:new`, every message is delivered once and in order per room, including
   * those fetched after a reconnect. */
  on<NS extends Namespace, E extends keyof ServerEvents[NS] & string>(
    ns: NS,
    event: E,
    handler: (payload: ServerEvents[NS][E]) => void,
  ): () => void {
    const key = `${ns} ${event}`;
    let set = this.handlers.get(key);
    if (!set) this.handlers.set(key, (set = new Set()));
    set.add(handler as Handler);
    return () => set.delete(handler as Handler);
  }

  /** Send a request event and wait for its ack: the ack's `data`, or a
   * `SwitchboardError` with the protocol's code (`timeout` when no ack came in time). */
  async request<NS extends Namespace, E extends keyof Requests[NS] & string>(
    ns: NS,
    event: E,
    payload: ReqOf<NS, E>,
    options: RequestOptions = {},
  ): Promise<AckOf<NS, E>> {
    const socket = this.sockets[ns];
    if (!socket) throw new SwitchboardError('bad_request', `namespace ${ns} is not open on this client`, event);
    const timeoutMs = options.timeoutMs ?? this.opts.timeoutMs ?? 10_000;
    let reply: Envelope;
    try {
      reply = (await socket.timeout(timeoutMs).emitWithAck(event, payload ?? {})) as Envelope;
    } catch {
      throw new SwitchboardError('timeout', `no ack within ${timeoutMs} ms`, event);
    }
    if (reply?.ok === true) {
      const data = reply.data as AckOf<NS, E>;
      if (ns === '/chat') this.rooms.observe(event, payload as Record<string, unknown>, data as Record<string, unknown>);
      return data;
    }
    const code = (reply?.error?.code ?? 'internal') as SwitchboardError['code'];
    throw new SwitchboardError(code, reply?.error?.message ?? 'malformed ack', event);
  }

  /** Ask `refreshToken` for a new token and hand it to every open namespace socket
   * (`auth:refresh`); the next reconnect's handshake uses it too. Concurrent calls share
   * one refresh. */
  refresh(): Promise<void> {
    const supply = this.opts.refreshToken;
    if (!supply || this.closed) return Promise.resolve();
    if (this.refreshing) return this.refreshing;
    this.refreshing = (async () => {
      try {
        const token = await supply();
        this.token = token;
        const sends = Object.entries(this.sockets)
          .filter(([, s]) => s.connected)
          .map(([ns]) => this.request(ns as Namespace, 'auth:refresh' as never, { token } as never));
        await Promise.all(sends);
      } catch (e) {
        this.opts.onError?.(e);
      } finally {
        this.refreshing = null;
        this.schedule();
      }
    })();
    return this.refreshing;
  }

  /** The token the next handshake sends. */
  currentToken(): string {
    return this.token;
  }

  /** The last seq delivered in order per tracked room (what a catch-up starts from). */
  lastSeqs(): Map<string, number> {
    return this.rooms.watermarks();
  }

  /** @internal Deliver a server event to the app's handlers. */
  emitLocal(ns: Namespace, event: string, payload: unknown): void {
    for (const h of this.handlers.get(`${ns} ${event}`) ?? []) {
      try {
        (h as (p: unknown) => void)(payload);
      } catch (e) {
        this.opts.onError?.(e);
      }
    }
  }

  /** @internal */
  reportError(e: unknown): void {
    this.opts.onError?.(e);
  }

  private connected(ns: Namespace): void {
    const again = this.connectedOnce.has(ns);
    this.connectedOnce.add(ns);
    if (ns !== '/chat' || this.opts.catchUp === false) return;
    const work = again ? this.rooms.catchUp() : this.rooms.baseline();
    work.catch((e) => this.opts.onError?.(e));
  }

  /** Refresh `refreshBeforeMs` before `exp`, unless the server asks first. */
  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!this.opts.refreshToken || this.closed) return;
    const exp = expiryMs(this.token);
    if (!Number.isFinite(exp)) return;
    const wait = Math.max(0, exp - (this.opts.refreshBeforeMs ?? 30_000) - Date.now());
    this.timer = setTimeout(() => void this.refresh(), wait);
    (this.timer as { unref?: () => void }).unref?.();
  }

  private api<NS extends Namespace>(ns: NS): NamespaceApi<NS> {
    const out: Record<string, unknown> = {};
    for (const [method, event] of Object.entries(METHODS[ns])) {
      out[method] = (payload: never, options?: RequestOptions) =>
        this.request(ns, event as keyof Requests[NS] & string, payload, options);
    }
    return out as NamespaceApi<NS>;
  }
}

// === impl Rooms ===

/** Per room: the highest seq up to which every message was delivered (or was the
 * user's own), and the seqs above it already delivered. A message is delivered at most
 * once; a catch-up fetches from the watermark. */
class Rooms {
  private readonly marks = new Map<string, { upTo: number; above: Set<number> }>();
  /** Rooms being caught up: live messages wait here until the fetched ones are out. */
  private readonly held = new Map<string, Message[]>();

  constructor(private readonly client: SwitchboardClient) {}

  watermarks(): Map<string, number> {
    return new Map([...this.marks].map(([room, m]) => [room, m.upTo]));
  }

  forget(room: string): void {
    this.marks.delete(room);
    this.held.delete(room);
  }

  /** A live `message:new`. */
  live(m: Message): void {
    const held = this.held.get(m.room_id);
    if (held) {
      held.push(m);
      return;
    }
    if (!this.marks.has(m.room_id)) this.marks.set(m.room_id, { upTo: m.seq - 1, above: new Set() });
    this.deliver(m);
  }

  /** Deliver unless already delivered; move the watermark over what is contiguous. */
  private deliver(m: Message): void {
    if (!this.mark(m.room_id, m.seq)) return;
    this.client.emitLocal('/chat', 'message:new', { message: m });
  }

  /** Record `seq` as seen; false when it was already. */
  private mark(room: string, seq: number): boolean {
    const mk = this.marks.get(room);
    if (!mk) return true;
    if (seq <= mk.upTo || mk.above.has(seq)) return false;
    mk.above.add(seq);
    while (mk.above.delete(mk.upTo + 1)) mk.upTo += 1;
    return true;
  }

  /** What a successful /chat request tells about rooms and seqs. */
  observe(event: string, req: Record<string, unknown>, data: Record<string, unknown>): void {
    switch (event) {
      case 'message:send': {
        // Our own message is not echoed to this socket: it counts as delivered.
        const m = data.message as Message;
        if (this.marks.has(m.room_id)) this.mark(m.room_id, m.seq);
        else this.marks.set(m.room_id, { upTo: m.seq, above: new Set() });
        break;
      }
      case 'room:create':
        this.marks.set((data.room as { id: string }).id, { upTo: 0, above: new Set() });
        break;
      case 'room:join': {
        const room = (data.room as { id: string }).id;
        if (!this.marks.has(room)) void this.start(room);
        break;
      }
      case 'room:leave':
      case 'room:delete':
        this.forget(req.room_id as string);
        break;
      default:
    }
  }

  /** Track a room from its current last message on. */
  private async start(room: string): Promise<void> {
    try {
      const { messages } = await this.client.request('/chat', 'message:history', { room_id: room, limit: 1 });
      if (!this.marks.has(room)) this.marks.set(room, { upTo: messages.at(-1)?.seq ?? 0, above: new Set() });
    } catch (e) {
      this.client.reportError(e);
    }
  }

  /** First connect: track every room the user is in, from its current last seq. */
  async baseline(): Promise<void> {
    let cursor: string | undefined;
    for (;;) {
      const page = await this.client.request('/chat', 'sync:get', cursor === undefined ? { limit: 100 } : { cursor, limit: 100 });
      for (const r of page.rooms) {
        if (!this.marks.has(r.room_id)) this.marks.set(r.room_id, { upTo: r.last_seq, above: new Set() });
      }
      if (!page.more) return;
      cursor = page.cursor;
    }
  }

  /** After a reconnect: each tracked room's messages after its watermark, in order, then
   * whatever arrived live meanwhile, never one twice. */
  async catchUp(): Promise<void> {
    const rooms = [...this.marks.keys()];
    for (const room of rooms) this.held.set(room, []);
    await Promise.all(
      rooms.map(async (room) => {
        try {
          for (;;) {
            const after = this.marks.get(room)?.upTo;
            if (after === undefined) return;
            const { messages } = await this.client.request('/chat', 'message:history', {
              room_id: room,
              after_seq: after,
              limit: CATCH_UP_PAGE,
            });
            for (const m of messages) this.deliver(m);
            if (messages.length < CATCH_UP_PAGE) return;
          }
        } catch (e) {
          if (e instanceof SwitchboardError && (e.code === 'forbidden' || e.code === 'not_found')) {
            this.forget(room); // left, kicked or deleted while away
          } else {
            this.client.reportError(e);
          }
        } finally {
          const held = this.held.get(room) ?? [];
          this.held.delete(room);
          held.sort((a, b) => a.seq - b.seq);
          for (const m of held) if (this.marks.has(room)) this.deliver(m);
        }
      }),
    );
  }
}

/** A JWT's `exp` in ms (NaN when it cannot be read). */
function expiryMs(token: string): number {
  try {
    const part = token.split('.')[1] ?? '';
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const claims = JSON.parse(atob(b64)) as { exp?: number };
    return typeof claims.exp === 'number' ? claims.exp * 1000 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}
