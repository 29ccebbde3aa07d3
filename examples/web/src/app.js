// The Switchboard example app: everything it does with the server goes through
// @switchboard-rt/client (one connection for /chat, /presence, /webrtc and /notifications).
//
//   sign-in ──▶ SwitchboardClient.connect() ──▶ sync:get (rooms) + notification:list (inbox)
//   room    ──▶ message:history, room:members, presence:subscribe, receipt:read
//   events  ──▶ message:new, receipt:read, typing:aggregated, presence:update, notification,
//               call:* and webrtc:* (the call's signaling)
//
// URL parameters: ?transport=polling|websocket forces one Engine.IO transport;
// ?ice=relay makes calls relay-only (TURN), as the server's config.json may also say.

import { SwitchboardClient, SwitchboardError } from '@switchboard-rt/client';

const $ = (selector) => document.querySelector(selector);
const params = new URLSearchParams(location.search);

const state = {
  config: null,
  client: null,
  me: null, // the token's claims: sub, name, tenant
  rooms: new Map(), // room_id -> { id, name, unread, lastSeq }
  current: null, // the open room's id
  readBy: new Map(), // room_id -> Map(user_id -> up_to_seq), from live receipt:read events
  presences: new Map(), // user_id -> presence
  watched: new Set(), // user ids this client is subscribed to on /presence
  inbox: [], // in-app notifications, newest first
  typing: { sentAt: 0, stopTimer: null },
  call: null, // { id, peer, role, local, pc, ready, pending }
  incoming: null, // the ringing call offered to us
};

// For the example's own test and for poking around in the devtools console.
window.switchboardExample = {
  get client() {
    return state.client;
  },
  get call() {
    return state.call;
  },
};

// === helpers ===

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function showError(e) {
  const text = e instanceof SwitchboardError ? `${e.event}: ${e.code} (${e.message})` : String(e?.message ?? e);
  $('#error').textContent = text;
  console.error(e);
}

/** Run an async UI action; its failure is shown, never thrown into the void. */
const act = (fn) => (...args) => Promise.resolve().then(() => fn(...args)).catch(showError);

/** The claims of a JWT (base64url JSON, UTF-8), for showing who is signed in. */
function claimsOf(token) {
  const part = (token.split('.')[1] ?? '').replace(/-/g, '+').replace(/_/g, '/');
  const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

const list = (text) => text.split(',').map((s) => s.trim()).filter(Boolean);

// === sign-in ===

async function devToken(sub, name, tenant) {
  const res = await fetch('dev/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sub, name, tenant }) });
  const body = await res.json();
  if (!res.ok) throw new Error(body.error ?? `dev token: HTTP ${res.status}`);
  return body.token;
}

async function signIn(token, refreshToken) {
  $('#signin-error').textContent = '';
  const transport = params.get('transport');
  const client = new SwitchboardClient({
    url: state.config.nodeUrl,
    token,
    refreshToken,
    onError: showError,
    manager: transport ? { transports: [transport] } : {},
  });
  try {
    await client.connect();
  } catch (e) {
    client.close();
    throw e;
  }
  state.client = client;
  state.me = claimsOf(token);
  watchConnection(client);
  listen(client);
  $('#whoami').textContent = `Signed in as ${state.me.name ?? state.me.sub} (${state.me.sub} @ ${state.me.tenant})`;
  $('#signin').hidden = true;
  $('#session').hidden = false;
  $('#app').hidden = false;
  await Promise.all([loadRooms(), loadInbox()]);
}

function watchConnection(client) {
  const badge = $('#connection');
  const show = () => {
    const engine = client.manager.engine;
    badge.textContent = engine && engine.readyState === 'open' ? `connected (${engine.transport.name})` : 'reconnecting';
  };
  client.manager.on('open', () => {
    show();
    client.manager.engine.on('upgrade', show);
  });
  client.manager.on('close', show);
  show();
}

$('#signin-dev').addEventListener('submit', act(async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const [sub, name, tenant] = ['sub', 'name', 'tenant'].map((k) => String(f.get(k)).trim());
  const token = await devToken(sub, name || undefined, tenant).catch((err) => {
    $('#signin-error').textContent = err.message;
    throw err;
  });
  await signIn(token, () => devToken(sub, name || undefined, tenant)).catch((err) => {
    $('#signin-error').textContent = err instanceof SwitchboardError ? `${err.code}: ${err.message}` : String(err.message ?? err);
    throw err;
  });
}));

$('#signin-token').addEventListener('submit', act(async (e) => {
  e.preventDefault();
  const token = String(new FormData(e.target).get('token')).trim();
  await signIn(token).catch((err) => {
    $('#signin-error').textContent = err instanceof SwitchboardError ? `${err.code}: ${err.message}` : String(err.message ?? err);
    throw err;
  });
}));

$('#signout').addEventListener('click', () => {
  endCall('Signed out');
  state.client?.close();
  location.reload();
});

// === rooms and messages ===

/** Every room the user is in (sync:get from the beginning), with unread counts. */
async function loadRooms() {
  let cursor;
  for (;;) {
    const page = await state.client.chat.syncGet(cursor ? { cursor } : {});
    for (const r of page.rooms) await knowRoom(r.room_id, { unread: r.unread, lastSeq: r.last_seq });
    cursor = page.cursor;
    if (!page.more) break;
  }
  renderRooms();
}

/** Add a room to the list. sync:get names no rooms: `room:join` by a member changes
 * nothing and answers the room, so it is how a room someone added us to gets its name. */
async function knowRoom(id, extra = {}, room = null) {
  let r = state.rooms.get(id);
  if (!r) {
    room ??= (await state.client.chat.roomJoin({ room_id: id })).room;
    r = { id, name: room.name || id, owner: room.owner_id, unread: 0, lastSeq: 0 };
    state.rooms.set(id, r);
  }
  Object.assign(r, extra);
  return r;
}

function renderRooms() {
  const ul = $('#rooms');
  ul.replaceChildren(
    ...[...state.rooms.values()].map((r) =>
      el('li', { dataset: { room: r.id }, class: r.id === state.current ? 'selected' : '', onclick: act(() => openRoom(r.id)) },
        el('span', { class: 'name' }, r.name),
        el('span', { class: 'badge unread', title: 'unread' }, String(r.unread))),
    ),
  );
}

async function openRoom(id) {
  const room = state.rooms.get(id);
  state.current = id;
  $('#room-title').textContent = room.name;
  $('#room-id').textContent = `id ${id}`;
  $('#composer').hidden = false;
  $('#room-invite').hidden = room.owner !== state.me.sub;
  $('#typing').textContent = '';
  renderRooms();
  const [{ messages }, { members }] = await Promise.all([
    state.client.chat.messageHistory({ room_id: id, limit: 50 }),
    state.client.chat.roomMembers({ room_id: id }),
  ]);
  if (state.current !== id) return;
  $('#messages').replaceChildren(...messages.map(messageItem));
  await showMembers(members.map((m) => m.user_id));
  await markRead(id, messages.at(-1)?.seq ?? 0);
}

function messageItem(m) {
  const li = el('li', { dataset: { seq: String(m.seq), sender: m.sender_id } },
    el('span', { class: 'sender' }, m.sender_id),
    el('span', { class: 'body' }, m.deleted ? '(deleted)' : m.body ?? ''));
  if (m.sender_id === state.me.sub) li.append(el('span', { class: 'receipt' }, receiptText(m.room_id, m.seq)));
  return li;
}

/** "Read by bob, carol" for our own message `seq`, from the receipts seen live. */
function receiptText(roomId, seq) {
  const readers = [...(state.readBy.get(roomId) ?? new Map())].filter(([, upTo]) => upTo >= seq).map(([u]) => u);
  return readers.length ? `Read by ${readers.sort().join(', ')}` : 'Sent';
}

function renderReceipts() {
  for (const li of document.querySelectorAll('#messages li')) {
    const r = li.querySelector('.receipt');
    if (r) r.textContent = receiptText(state.current, Number(li.dataset.seq));
  }
}

async function markRead(roomId, seq) {
  if (!seq) return;
  const { unread } = await state.client.chat.receiptRead({ room_id: roomId, up_to_seq: seq });
  const r = state.rooms.get(roomId);
  if (r) r.unread = unread;
  renderRooms();
}

function appendMessage(m) {
  const ol = $('#messages');
  if (ol.querySelector(`li[data-seq="${m.seq}"]`)) return;
  ol.append(messageItem(m));
  ol.scrollTop = ol.scrollHeight;
}

$('#room-create').addEventListener('submit', act(async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const { room } = await state.client.chat.roomCreate({ name: String(f.get('name')), visibility: 'private', members: list(String(f.get('members'))) });
  e.target.reset();
  await knowRoom(room.id, {}, room);
  await openRoom(room.id);
}));

$('#room-join').addEventListener('submit', act(async (e) => {
  e.preventDefault();
  const id = String(new FormData(e.target).get('room_id')).trim();
  const { room } = await state.client.chat.roomJoin({ room_id: id });
  e.target.reset();
  await knowRoom(room.id, {}, room);
  await openRoom(room.id);
}));

$('#room-invite').addEventListener('submit', act(async (e) => {
  e.preventDefault();
  const ids = list(String(new FormData(e.target).get('user_ids')));
  const res = await state.client.chat.roomInvite({ room_id: state.current, user_ids: ids });
  e.target.reset();
  if (res.skipped?.length) showError(new Error(`not added: ${res.skipped.join(', ')}`));
  const { members } = await state.client.chat.roomMembers({ room_id: state.current });
  await showMembers(members.map((m) => m.user_id));
}));

$('#composer').addEventListener('submit', act(async (e) => {
  e.preventDefault();
  const input = e.target.elements.body;
  const body = input.value;
  if (!body.trim()) return;
  const roomId = state.current;
  // The client_msg_id makes a retry of this very send a duplicate, never a second message.
  const { message } = await state.client.chat.messageSend({ room_id: roomId, body, client_msg_id: crypto.randomUUID() });
  input.value = '';
  state.typing.sentAt = 0; // sending ends our typing indicator on the server
  clearTimeout(state.typing.stopTimer);
  if (state.current === roomId) appendMessage(message);
}));

// Typing: start at the first keystroke, refresh every 3 s while typing (the server expires
// an indicator after 5 s without one), stop after 4 s without a keystroke.
$('#composer').elements.body.addEventListener('input', act(async () => {
  const roomId = state.current;
  clearTimeout(state.typing.stopTimer);
  state.typing.stopTimer = setTimeout(act(async () => {
    state.typing.sentAt = 0;
    await state.client.chat.typingStop({ room_id: roomId });
  }), 4000);
  if (Date.now() - state.typing.sentAt > 3000) {
    state.typing.sentAt = Date.now();
    await state.client.chat.typingStart({ room_id: roomId });
  }
}));

// === presence ===

async function showMembers(userIds) {
  const others = userIds.filter((u) => u !== state.me.sub);
  const fresh = others.filter((u) => !state.watched.has(u));
  if (fresh.length) {
    const { presences } = await state.client.presence.presenceSubscribe({ user_ids: fresh });
    for (const p of presences) state.presences.set(p.user_id, p);
    fresh.forEach((u) => state.watched.add(u));
  }
  $('#members').replaceChildren(
    ...userIds.map((u) => {
      const li = el('li', { dataset: { user: u } }, el('span', { class: 'name' }, u === state.me.sub ? `${u} (you)` : u));
      if (u !== state.me.sub) {
        li.append(el('span', { class: 'presence' }), el('button', { type: 'button', class: 'call', onclick: act(() => startCall(u)) }, 'Video call'));
      }
      return li;
    }),
  );
  renderPresences();
}

function renderPresences() {
  for (const li of document.querySelectorAll('#members li[data-user]')) {
    const badge = li.querySelector('.presence');
    if (!badge) continue;
    const p = state.presences.get(li.dataset.user);
    const status = p?.status ?? 'offline';
    badge.className = `presence ${status}`;
    badge.textContent = p?.message ? `${status}: ${p.message}` : status;
  }
}

$('#status').addEventListener('change', act(async (e) => {
  await state.client.presence.presenceSetStatus({ status: e.target.value });
}));

// === notifications inbox ===

async function loadInbox() {
  const { notifications } = await state.client.notifications.notificationList({ limit: 20 });
  state.inbox = notifications;
  renderInbox();
}

function renderInbox() {
  $('#inbox').replaceChildren(
    ...state.inbox.map((n) =>
      el('li', { dataset: { id: n.id }, class: n.read ? 'read' : 'unread', onclick: act(() => markNotificationsRead([n.id])) },
        el('div', { class: 'title' }, n.title),
        el('div', { class: 'muted' }, n.body ?? ''))),
  );
  $('#inbox-unread').textContent = String(state.inbox.filter((n) => !n.read).length);
}

async function markNotificationsRead(ids) {
  if (!ids.length) return;
  await state.client.notifications.notificationMarkRead({ ids });
  for (const n of state.inbox) if (ids.includes(n.id)) n.read = true;
  renderInbox();
}

$('#inbox-read').addEventListener('click', act(() => markNotificationsRead(state.inbox.filter((n) => !n.read).map((n) => n.id))));

// === calls (1:1 video, signaling through /webrtc) ===

function setCallState(text) {
  $('#call-state').textContent = text;
}

async function media() {
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  $('#local-video').srcObject = stream;
  return stream;
}

/** The peer connection of `call`, with the TURN credentials Switchboard issues. */
async function connectPeer(call) {
  const { ice_servers } = await state.client.webrtc.webrtcGetIceServers({});
  const policy = params.get('ice') === 'relay' ? 'relay' : state.config.iceTransportPolicy ?? 'all';
  const pc = new RTCPeerConnection({ iceServers: ice_servers, iceTransportPolicy: policy });
  for (const track of call.local.getTracks()) pc.addTrack(track, call.local);
  pc.onicecandidate = (e) => {
    if (e.candidate) {
      state.client.webrtc.webrtcIceCandidate({ call_id: call.id, to_user_id: call.peer, candidate: e.candidate.toJSON() }).catch(showError);
    }
  };
  pc.ontrack = (e) => {
    $('#remote-video').srcObject = e.streams[0];
  };
  pc.onconnectionstatechange = () => {
    console.debug(`call ${call.id}: ${pc.connectionState} (ice ${pc.iceConnectionState})`);
    if (state.call !== call) return;
    if (pc.connectionState === 'connected') setCallState(`In call with ${call.peer}`);
    if (pc.connectionState === 'failed') setCallState(`Media connection to ${call.peer} failed`);
  };
  call.pc = pc;
  return pc;
}

/** Candidates may overtake the description they belong after: hold them until it is set. */
async function setRemote(call, description) {
  await call.pc.setRemoteDescription(description);
  for (const c of call.pending.splice(0)) await call.pc.addIceCandidate(c);
}

async function startCall(peer) {
  if (state.call) throw new Error('already in a call');
  const local = await media();
  const { call: c } = await state.client.webrtc.callInitiate({ callee_id: peer, media_type: 'video' });
  // The peer connection is made when the callee answers (call:answered).
  state.call = { id: c.id, peer, role: 'caller', local, pc: null, pending: [], ready: Promise.resolve() };
  setCallState(`Calling ${peer}…`);
  $('#hangup').hidden = false;
}

function endCall(text) {
  const call = state.call;
  state.call = null;
  state.incoming = null;
  $('#incoming').hidden = true;
  $('#hangup').hidden = true;
  if (call) {
    call.pc?.close();
    for (const t of call.local?.getTracks() ?? []) t.stop();
    $('#remote-video').srcObject = null;
    $('#local-video').srcObject = null;
  }
  setCallState(text);
}

$('#accept').addEventListener('click', act(async () => {
  const c = state.incoming;
  if (!c) return;
  state.incoming = null;
  $('#incoming').hidden = true;
  const local = await media();
  const call = { id: c.id, peer: c.initiator_id, role: 'callee', local, pc: null, pending: [] };
  state.call = call;
  // The offer may arrive as soon as the answer is acked: it waits for the peer connection.
  call.ready = connectPeer(call);
  await call.ready;
  await state.client.webrtc.callAnswer({ call_id: c.id });
  setCallState(`Connecting to ${call.peer}…`);
  $('#hangup').hidden = false;
}));

$('#decline').addEventListener('click', act(async () => {
  const c = state.incoming;
  state.incoming = null;
  $('#incoming').hidden = true;
  if (c) await state.client.webrtc.callReject({ call_id: c.id });
}));

$('#hangup').addEventListener('click', act(async () => {
  const call = state.call;
  if (!call) return;
  endCall('Call ended (you hung up)');
  await state.client.webrtc.callHangup({ call_id: call.id });
}));

// === server events ===

function listen(sb) {
  sb.on('/chat', 'message:new', act(async ({ message: m }) => {
    const room = await knowRoom(m.room_id);
    room.lastSeq = Math.max(room.lastSeq, m.seq);
    if (m.room_id === state.current) {
      appendMessage(m);
      await markRead(m.room_id, m.seq);
    } else {
      room.unread += 1;
      renderRooms();
    }
  }));
  sb.on('/chat', 'receipt:read', ({ room_id, user_id, up_to_seq }) => {
    if (user_id === state.me.sub) return;
    if (!state.readBy.has(room_id)) state.readBy.set(room_id, new Map());
    state.readBy.get(room_id).set(user_id, up_to_seq);
    if (room_id === state.current) renderReceipts();
  });
  sb.on('/chat', 'typing:aggregated', ({ room_id, user_ids, display_text }) => {
    if (room_id !== state.current) return;
    const others = user_ids.filter((u) => u !== state.me.sub);
    // The server's text names every typer, us included; without us it is the one to show.
    $('#typing').textContent = others.length === 0 ? '' : user_ids.includes(state.me.sub) ? `${others.join(', ')} typing...` : display_text;
  });
  sb.on('/chat', 'room:deleted', ({ room_id }) => dropRoom(room_id, 'deleted'));
  sb.on('/chat', 'room:kicked', ({ room_id }) => dropRoom(room_id, 'removed from it'));

  sb.on('/presence', 'presence:update', ({ presence }) => {
    state.presences.set(presence.user_id, presence);
    renderPresences();
  });

  sb.on('/notifications', 'notification', (n) => {
    if (state.inbox.some((x) => x.id === n.id)) return;
    state.inbox.unshift({ ...n, read: false });
    renderInbox();
  });

  sb.on('/webrtc', 'call:incoming', ({ call }) => {
    state.incoming = call;
    $('#incoming-text').textContent = `${call.initiator_id} is calling (${call.media_type})`;
    $('#incoming').hidden = false;
  });
  sb.on('/webrtc', 'call:answered', act(async ({ call: c }) => {
    const call = state.call;
    if (!call || call.id !== c.id || call.role !== 'caller') return;
    setCallState(`Connecting to ${call.peer}…`);
    call.ready = connectPeer(call);
    const pc = await call.ready;
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await sb.webrtc.webrtcOffer({ call_id: call.id, to_user_id: call.peer, sdp: offer.sdp });
  }));
  sb.on('/webrtc', 'webrtc:offer', act(async ({ call_id, from_user_id, sdp }) => {
    const call = state.call;
    if (!call || call.id !== call_id) return;
    await call.ready;
    await setRemote(call, { type: 'offer', sdp });
    const answer = await call.pc.createAnswer();
    await call.pc.setLocalDescription(answer);
    await sb.webrtc.webrtcAnswer({ call_id, to_user_id: from_user_id, sdp: answer.sdp });
  }));
  sb.on('/webrtc', 'webrtc:answer', act(async ({ call_id, sdp }) => {
    const call = state.call;
    if (!call || call.id !== call_id) return;
    await call.ready;
    await setRemote(call, { type: 'answer', sdp });
  }));
  sb.on('/webrtc', 'webrtc:ice-candidate', act(async ({ call_id, candidate }) => {
    const call = state.call;
    if (!call || call.id !== call_id) return;
    await call.ready;
    if (call.pc?.remoteDescription) await call.pc.addIceCandidate(candidate);
    else call.pending.push(candidate);
  }));
  sb.on('/webrtc', 'call:rejected', ({ call: c }) => {
    if (state.call?.id === c.id) endCall(`${state.call.peer} declined`);
  });
  sb.on('/webrtc', 'call:ended', ({ call: c, reason }) => {
    if (state.incoming?.id === c.id) {
      state.incoming = null;
      $('#incoming').hidden = true;
    }
    if (state.call?.id === c.id) endCall(`Call ended (${reason})`);
  });
}

function dropRoom(roomId, why) {
  state.rooms.delete(roomId);
  if (state.current === roomId) {
    state.current = null;
    $('#room-title').textContent = `Room ${why}`;
    $('#messages').replaceChildren();
    $('#members').replaceChildren();
    $('#composer').hidden = true;
  }
  renderRooms();
}

// === start ===

state.config = await (await fetch('config.json')).json();
if (!state.config.devTokens) $('#signin-dev').hidden = true;
