// End to end: two headless Chromium pages connect a WebRTC data channel relay-only through
// the real coturn from tests/env, with the TURN credentials Switchboard issued and every
// SDP and ICE candidate exchanged only through Switchboard's /webrtc namespace: each page
// hands its signaling to this test, which sends it with its own socket.io-client
// (official, v4.8.x) and feeds what Switchboard relays back into the page.
//
// Needs SWITCHBOARD_TEST_TURN_URL/_STUN_URL/_TURN_SECRET (`tests/env/envctl up coturn`)
// and SWITCHBOARD_TEST_CHROMIUM (`tests/env/envctl up node`); skipped without them, or
// failed when CI=true.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import { chromium } from 'playwright-core';

import { closeAll, connectUser, ok, scenario, waitFor } from './lib/client.mjs';
import { randomId, services, startNode, stopAll } from './lib/server.mjs';

const NEED = ['SWITCHBOARD_TEST_TURN_URL', 'SWITCHBOARD_TEST_TURN_SECRET', 'SWITCHBOARD_TEST_CHROMIUM'];
const WHY = 'the media test needs coturn and Chromium';
const E = process.env;

let node;
let browser;

before(async () => {
  if (!services(null, NEED, WHY)) return;
  node = await startNode({
    name: 'webrtc-media',
    env: {
      SWITCHBOARD_STUN_URLS: E.SWITCHBOARD_TEST_STUN_URL,
      SWITCHBOARD_TURN_URLS: E.SWITCHBOARD_TEST_TURN_URL,
      SWITCHBOARD_TURN_SECRET: E.SWITCHBOARD_TEST_TURN_SECRET,
      SWITCHBOARD_TURN_TTL: '10m',
    },
  });
  browser = await chromium.launch({
    executablePath: E.SWITCHBOARD_TEST_CHROMIUM,
    headless: true,
    args: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--no-sandbox'],
  });
});

after(async () => {
  closeAll();
  if (browser) await browser.close();
  await stopAll();
});

/**
 * A page with an RTCPeerConnection (relay only) whose outgoing signaling goes to
 * `socket` as /webrtc events of `callId` to `peer`, and whose incoming signaling comes
 * from what Switchboard relays to `socket`.
 */
async function peerPage(socket, callId, peer, iceServers) {
  const page = await (await browser.newContext()).newPage();
  page.on('console', (m) => {
    if (E.SWITCHBOARD_TEST_VERBOSE) console.log(`[${socket.user}] ${m.text()}`);
  });
  await page.setContent('<!doctype html><title>switchboard peer</title>');
  const sent = [];
  await page.exposeFunction('signal', async (kind, payload) => {
    const base = { call_id: callId, to_user_id: peer };
    if (kind === 'candidate') sent.push(await ok(socket, 'webrtc:ice-candidate', { ...base, candidate: payload }));
    else sent.push(await ok(socket, `webrtc:${kind}`, { ...base, sdp: payload }));
  });
  await page.evaluate((servers) => {
    const pc = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: 'relay' });
    window.pc = pc;
    window.received = [];
    window.candidates = [];
    pc.onicecandidate = (e) => {
      if (e.candidate) {
        window.candidates.push(e.candidate.candidate);
        window.signal('candidate', e.candidate.toJSON());
      }
    };
    const onChannel = (ch) => {
      window.channel = ch;
      ch.onmessage = (e) => window.received.push(e.data);
    };
    pc.ondatachannel = (e) => onChannel(e.channel);
    window.onChannel = onChannel;
    // Relayed events may overtake each other: candidates wait for the remote description.
    const pending = [];
    window.remoteCandidate = (c) => (pc.remoteDescription ? pc.addIceCandidate(c) : pending.push(c));
    window.setRemote = async (desc) => {
      await pc.setRemoteDescription(desc);
      for (const c of pending.splice(0)) await pc.addIceCandidate(c);
    };
  }, iceServers);
  // What Switchboard relays to this user goes into the page.
  socket.on('webrtc:offer', (d) => d.call_id === callId && page.evaluate(async (sdp) => {
    await window.setRemote({ type: 'offer', sdp });
    const answer = await window.pc.createAnswer();
    await window.pc.setLocalDescription(answer);
    await window.signal('answer', answer.sdp);
  }, d.sdp));
  socket.on('webrtc:answer', (d) => d.call_id === callId && page.evaluate((sdp) => window.setRemote({ type: 'answer', sdp }), d.sdp));
  socket.on('webrtc:ice-candidate', (d) => d.call_id === callId && page.evaluate((c) => window.remoteCandidate(c), d.candidate));
  return { page, sent };
}

scenario('two Chromium peers connect relay-only through coturn with Switchboard-issued credentials and signaling', { timeout: 60_000 }, async (t) => {
  if (!services(t, NEED, WHY)) return;
  const tenant = `media-${randomId(3)}`;
  const alice = await connectUser(node, 'alice', tenant, { namespace: '/webrtc' });
  const bob = await connectUser(node, 'bob', tenant, { namespace: '/webrtc' });
  const ice = await ok(alice, 'webrtc:get-ice-servers', {});
  const turn = ice.ice_servers.find((s) => s.username);
  assert.ok(turn, `no TURN entry in ${JSON.stringify(ice)}`);
  assert.match(turn.username, /^\d+:alice$/);
  assert.equal(ice.ttl, 600);
  const bobIce = await ok(bob, 'webrtc:get-ice-servers', {});

  const { call } = await ok(alice, 'call:initiate', { callee_id: 'bob', media_type: 'audio' });
  await waitFor(bob, 'call:incoming', (d) => d.call.id === call.id);
  await ok(bob, 'call:answer', { call_id: call.id });

  const a = await peerPage(alice, call.id, 'bob', ice.ice_servers);
  const b = await peerPage(bob, call.id, 'alice', bobIce.ice_servers);
  await a.page.evaluate(async () => {
    window.onChannel(window.pc.createDataChannel('chat'));
    const offer = await window.pc.createOffer();
    await window.pc.setLocalDescription(offer);
    await window.signal('offer', offer.sdp);
  });
  await a.page.waitForFunction(() => window.channel && window.channel.readyState === 'open', null, { timeout: 20_000 });
  await a.page.evaluate(() => window.channel.send('hello through the relay'));
  await b.page.waitForFunction(() => window.received.includes('hello through the relay'), null, { timeout: 10_000 });

  // Every candidate gathered was a relay candidate, and the pair in use is relay on both ends.
  for (const p of [a, b]) {
    const cands = await p.page.evaluate(() => window.candidates);
    assert.ok(cands.length > 0, 'no candidates gathered');
    assert.ok(cands.every((c) => / typ relay /.test(c)), `non-relay candidate: ${cands.join(' | ')}`);
    // The selected pair may still show `in-progress` for a moment after the channel opened
    // (its checks settle in the stats shortly after): read it again for up to 5 s.
    let pair;
    for (const until = Date.now() + 5000; ;) {
      pair = await p.page.evaluate(async () => {
        const stats = await window.pc.getStats();
        let transport;
        stats.forEach((s) => {
          if (s.type === 'transport') transport = s;
        });
        const sel = transport && stats.get(transport.selectedCandidatePairId);
        return sel && { local: stats.get(sel.localCandidateId)?.candidateType, remote: stats.get(sel.remoteCandidateId)?.candidateType, state: sel.state };
      });
      if (pair?.state === 'succeeded' || Date.now() > until) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(pair, { local: 'relay', remote: 'relay', state: 'succeeded' });
  }
  assert.ok(a.sent.length >= 2 && b.sent.length >= 2, 'signaling went through Switchboard');
  await ok(alice, 'call:hangup', { call_id: call.id });
});
