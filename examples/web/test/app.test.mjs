// The example app end to end, in Debian's Chromium driven by Playwright: two browser
// contexts (alice and bob) sign in with dev tokens on a page served from another origin
// than the node's, and go through rooms, messages, typing, read receipts, presence, the
// notifications inbox and a 1:1 video call (fake camera and microphone) relayed only
// through the real coturn. Once over WebSocket, once with long-polling forced. A third
// context, bob of another tenant, must see none of it. Screenshots go to screenshots/.
//
// Needs the built app (`npm run build`), target/debug/switchboard (or SWITCHBOARD_BIN),
// coturn and Chromium from tests/env (`tests/env/envctl up coturn node`, then
// `source tests/.state/env`); skipped without them, failed when CI=true.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { freePort, randomId, services, startNode, stopAll } from '../../../tests/node/lib/server.mjs';
import { startAppServer } from '../serve.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const SHOTS = join(HERE, '../screenshots');
const NEED = ['SWITCHBOARD_TEST_TURN_URL', 'SWITCHBOARD_TEST_STUN_URL', 'SWITCHBOARD_TEST_TURN_SECRET', 'SWITCHBOARD_TEST_CHROMIUM'];
const WHY = 'the example app test needs coturn and Chromium';
const E = process.env;
const SERVICE_TOKEN = `example-service-${randomId(16)}`;

let node;
let app;
let browser;

before(async () => {
  if (!services(null, NEED, WHY)) return;
  assert.ok(existsSync(join(HERE, '../dist/app.js')), 'dist/ is empty: run `npm run build` first');
  mkdirSync(SHOTS, { recursive: true });
  // The app gets its own origin: the node must allow it (CORS for long-polling, and the
  // WebSocket origin check).
  const appPort = await freePort();
  node = await startNode({
    name: 'example-web',
    env: {
      SWITCHBOARD_CORS_ALLOWED_ORIGINS: `http://127.0.0.1:${appPort}`,
      SWITCHBOARD_SERVICE_TOKEN: SERVICE_TOKEN,
      SWITCHBOARD_STUN_URLS: E.SWITCHBOARD_TEST_STUN_URL,
      SWITCHBOARD_TURN_URLS: E.SWITCHBOARD_TEST_TURN_URL,
      SWITCHBOARD_TURN_SECRET: E.SWITCHBOARD_TEST_TURN_SECRET,
    },
  });
  app = await startAppServer({ port: appPort, nodeUrl: node.url, jwtSecret: node.secret, iceTransportPolicy: 'relay' });
  browser = await chromium.launch({
    executablePath: E.SWITCHBOARD_TEST_CHROMIUM,
    headless: true,
    // Fake camera and microphone; and loopback allowed for WebRTC: the test's coturn
    // listens on 127.0.0.1, and a page with a real origin (unlike about:blank) gathers no
    // relay candidate through a loopback TURN server without this flag (Chromium 156).
    args: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--no-sandbox', '--autoplay-policy=no-user-gesture-required',
      '--allow-loopback-in-peer-connection'],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (app) await app.close();
  await stopAll();
});

/** Wait until `selector`'s text contains `text` (or matches it, for a RegExp). */
async function seeText(page, selector, text, timeout = 10_000) {
  const [source, flags] = text instanceof RegExp ? [text.source, text.flags] : [null, null];
  try {
    await page.waitForFunction(
      ({ selector, text, source, flags }) => {
        const t = document.querySelector(selector)?.textContent ?? '';
        return source ? new RegExp(source, flags).test(t) : t.includes(text);
      },
      { selector, text: String(text), source, flags },
      { timeout },
    );
  } catch (e) {
    const now = await page.evaluate((s) => document.querySelector(s)?.textContent, selector);
    const error = await page.evaluate(() => document.querySelector('#error')?.textContent);
    throw new Error(`${selector}: waited for ${text}, shows ${JSON.stringify(now)} (page error: ${JSON.stringify(error)}): ${e.message}`);
  }
}

/** A new browser context on the app, signed in through the dev sign-in form. */
async function signIn(sub, name, tenant, transport) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
    if (E.SWITCHBOARD_TEST_VERBOSE) console.log(`[${sub}] ${m.text()}`);
  });
  await page.goto(`${app.url}/?transport=${transport}`);
  await page.fill('#signin-dev [name=sub]', sub);
  await page.fill('#signin-dev [name=name]', name);
  await page.fill('#signin-dev [name=tenant]', tenant);
  await page.click('#signin-dev button[type=submit]');
  await seeText(page, '#whoami', `Signed in as ${name} (${sub} @ ${tenant})`);
  await seeText(page, '#connection', `connected (${transport})`);
  return { page, context, errors, sub };
}

const shot = (who, transport, step) => who.page.screenshot({ path: join(SHOTS, `${transport}-${step}-${who.sub}.png`) });

/** What the page's call shows: the remote video's state and the selected ICE pair. */
function callFacts(page) {
  return page.evaluate(async () => {
    const v = document.querySelector('#remote-video');
    const pc = window.switchboardExample.call?.pc;
    let pair = null;
    if (pc) {
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) {
          const sel = stats.get(s.selectedCandidatePairId);
          pair = sel && { local: stats.get(sel.localCandidateId)?.candidateType, remote: stats.get(sel.remoteCandidateId)?.candidateType, state: sel.state };
        }
      });
    }
    return { readyState: v.readyState, paused: v.paused, width: v.videoWidth, time: v.currentTime, pair };
  });
}

/** How far a page's call got, for a failure message. */
function callDiag(page) {
  return page.evaluate(() => {
    const c = window.switchboardExample.call;
    const pc = c?.pc;
    return c && {
      id: c.id, role: c.role, pending: c.pending.length,
      pc: pc && { signaling: pc.signalingState, ice: pc.iceConnectionState, gathering: pc.iceGatheringState, connection: pc.connectionState,
        local: Boolean(pc.localDescription), remote: Boolean(pc.remoteDescription) },
    };
  });
}

for (const transport of ['websocket', 'polling']) {
  test(`the example app over ${transport}: rooms, messages, typing, receipts, presence, inbox, a relay-only video call`, { timeout: 120_000 }, async (t) => {
    if (!services(t, NEED, WHY)) return;
    const tenant = `example-${randomId(3)}`;
    const alice = await signIn('alice', 'Alice', tenant, transport);
    const bob = await signIn('bob', 'Bob', tenant, transport);
    // Same user id in another tenant: must see nothing of any of this.
    const stranger = await signIn('bob', 'Other Bob', `${tenant}-other`, transport);
    // The transport asked for is the one in use, and the page is on another origin.
    for (const who of [alice, bob]) {
      const facts = await who.page.evaluate(() => ({ name: window.switchboardExample.client.manager.engine.transport.name, origin: location.origin }));
      assert.equal(facts.name, transport);
      assert.notEqual(facts.origin, node.url);
    }

    // Rooms and messages: alice creates a room with bob in it and writes.
    await alice.page.fill('#room-create [name=name]', 'Launch');
    await alice.page.fill('#room-create [name=members]', 'bob');
    await alice.page.click('#room-create button[type=submit]');
    await seeText(alice.page, '#room-title', 'Launch');
    await seeText(alice.page, '#members', 'bob');
    await alice.page.fill('#composer [name=body]', 'hello bob');
    await alice.page.click('#composer button[type=submit]');
    await seeText(alice.page, '#messages', 'hello bob');
    await seeText(alice.page, '#messages li:last-child .receipt', 'Sent');
    // Bob's list learns the room from the message, unread.
    await seeText(bob.page, '#rooms li[data-room] .name', 'Launch');
    await seeText(bob.page, '#rooms li[data-room] .unread', '1');
    await shot(bob, transport, '1-unread');

    // Presence: bob is online in alice's member list; his manual status reaches her.
    await seeText(alice.page, '#members li[data-user=bob] .presence', 'online');
    await bob.page.selectOption('#status', 'busy');
    await seeText(alice.page, '#members li[data-user=bob] .presence', 'busy');
    await bob.page.selectOption('#status', 'online');
    await seeText(alice.page, '#members li[data-user=bob] .presence', 'online');

    // Read receipts: bob opens the room, alice's message shows it was read.
    await bob.page.click('#rooms li[data-room]');
    await seeText(bob.page, '#messages', 'alicehello bob');
    await seeText(bob.page, '#rooms li[data-room] .unread', '0');
    await seeText(alice.page, '#messages li:last-child .receipt', 'Read by bob');

    // Typing: what bob types shows on alice's page, then his message.
    await bob.page.click('#composer [name=body]');
    await bob.page.keyboard.type('hi al', { delay: 30 });
    await seeText(alice.page, '#typing', 'Bob is typing...');
    await shot(alice, transport, '2-typing');
    await bob.page.keyboard.type('ice');
    await bob.page.click('#composer button[type=submit]');
    await seeText(alice.page, '#messages', 'bobhi alice');
    await seeText(alice.page, '#typing', /^$/);

    // The notifications inbox: the app's backend notifies bob through the service API.
    const posted = await fetch(`${node.url}/api/v1/notifications`, {
      method: 'POST',
      headers: { authorization: `Bearer ${SERVICE_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ id: randomUUID(), tenant, user_ids: ['bob'], type: 'system', title: 'Welcome to Launch', body: 'Alice added you to a room.' }),
    });
    assert.equal(posted.status, 202, await posted.text());
    await seeText(bob.page, '#inbox', 'Welcome to Launch');
    await seeText(bob.page, '#inbox-unread', '1');
    await shot(bob, transport, '3-inbox');
    await bob.page.click('#inbox-read');
    await seeText(bob.page, '#inbox-unread', '0');
    await bob.page.reload();
    // After a reload the inbox comes from notification:list, read.
    await bob.page.fill('#signin-dev [name=sub]', 'bob');
    await bob.page.fill('#signin-dev [name=name]', 'Bob');
    await bob.page.fill('#signin-dev [name=tenant]', tenant);
    await bob.page.click('#signin-dev button[type=submit]');
    await seeText(bob.page, '#inbox li.read .title', 'Welcome to Launch');
    await seeText(bob.page, '#inbox-unread', '0');
    await seeText(bob.page, '#rooms li[data-room] .name', 'Launch');
    await bob.page.click('#rooms li[data-room]');
    await seeText(bob.page, '#messages', 'hi alice');

    // A 1:1 video call, relay-only through coturn, signaled through Switchboard.
    await seeText(alice.page, '#members li[data-user=bob] .presence', 'online');
    await alice.page.click('#members li[data-user=bob] button.call');
    await seeText(alice.page, '#call-state', 'Calling bob');
    await seeText(bob.page, '#incoming-text', 'alice is calling (video)');
    await shot(bob, transport, '4-incoming');
    await bob.page.click('#accept');
    try {
      await seeText(alice.page, '#call-state', 'In call with bob', 30_000);
      await seeText(bob.page, '#call-state', 'In call with alice', 30_000);
    } catch (e) {
      throw new Error(`${e.message}; alice: ${JSON.stringify(await callDiag(alice.page))}; bob: ${JSON.stringify(await callDiag(bob.page))}`);
    }
    for (const who of [alice, bob]) {
      // The remote video plays: frames decoded, a size, and time moving on.
      await who.page.waitForFunction(() => {
        const v = document.querySelector('#remote-video');
        return v.readyState >= 2 && !v.paused && v.videoWidth > 0 && v.currentTime > 0.5;
      }, null, { timeout: 20_000 });
      let facts;
      for (const until = Date.now() + 5000; ;) {
        facts = await callFacts(who.page);
        if (facts.pair?.state === 'succeeded' || Date.now() > until) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.deepEqual(facts.pair, { local: 'relay', remote: 'relay', state: 'succeeded' }, `${who.sub}'s media goes through the TURN relay`);
      const before = facts.time;
      await new Promise((r) => setTimeout(r, 1000));
      assert.ok((await callFacts(who.page)).time > before, `${who.sub}'s remote video advances`);
    }
    await shot(alice, transport, '5-call');
    await shot(bob, transport, '5-call');
    await alice.page.click('#hangup');
    await seeText(alice.page, '#call-state', 'Call ended (you hung up)');
    await seeText(bob.page, '#call-state', 'Call ended (hangup)');

    // The other tenant's bob saw nothing: no room, no inbox entry, no call.
    await seeText(stranger.page, '#inbox-unread', '0');
    assert.equal(await stranger.page.locator('#rooms li').count(), 0, 'no room of the other tenant');
    assert.equal(await stranger.page.locator('#inbox li').count(), 0, 'no notification of the other tenant');
    assert.equal(await stranger.page.isVisible('#incoming'), false, 'no call of the other tenant');

    for (const who of [alice, bob, stranger]) {
      assert.deepEqual(who.errors, [], `${who.sub}'s page logged no error`);
      assert.equal(await who.page.textContent('#error'), '', `${who.sub}'s page shows no error`);
      await who.context.close();
    }
  });
}
