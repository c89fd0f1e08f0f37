// The call controls as another participant sees them, and the client's recovery paths: mute and
// camera-off indicators, a screen share as its own tile, a host's controls in the people panel
// (mute, remove, lock), a dropped WebSocket that resumes, and a page without camera or microphone
// that joins receive-only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, openRoom, eventually, stats, randomRoom, diagnose, mintToken } from './helpers.mjs';

/** Ada's tile on Bob's page: its classes say mic-off / video-off. */
const adaTile = (page) => page.locator('.tile-remote', { hasText: 'Ada' });

/** Bob's counters for Ada. */
const fromAda = async (page) => (await stats(page)).find((r) => r.name === 'Ada');

test('mute, camera off and a screen share show on the other page', { timeout: 90_000 }, async () => {
  const browser = await launch();
  const pages = [];
  try {
    const room = randomRoom('controls');
    const ada = await openRoom(browser, room, 'Ada');
    const bob = await openRoom(browser, room, 'Bob');
    pages.push(ada, bob);
    await eventually(async () => (await fromAda(bob))?.framesDecoded > 5, 30_000, 'Bob to decode Ada');

    // Keyboard shortcuts m and v: Bob sees the indicators, Ada's own buttons turn red.
    await ada.keyboard.press('m');
    await ada.keyboard.press('v');
    await eventually(async () => {
      const cls = (await adaTile(bob).getAttribute('class')) || '';
      return cls.includes('mic-off') && cls.includes('video-off');
    }, 10_000, "Bob to show Ada's mic-off and camera-off indicators");
    assert.match((await ada.locator('#mic-btn').getAttribute('class')) || '', /\boff\b/, 'mic button shows off');
    assert.match((await ada.locator('#cam-btn').getAttribute('class')) || '', /\boff\b/, 'camera button shows off');

    // Back on: the indicators go and frames flow again.
    await ada.click('#cam-btn');
    await ada.click('#mic-btn');
    await eventually(async () => {
      const cls = (await adaTile(bob).getAttribute('class')) || '';
      return !cls.includes('mic-off') && !cls.includes('video-off');
    }, 10_000, "Bob to drop Ada's indicators");
    const before = (await fromAda(bob)).framesDecoded;
    await eventually(async () => (await fromAda(bob)).framesDecoded > before + 10, 15_000,
      "Bob to decode Ada's camera again");

    // Screen share (fake capture): a separate tile on both pages, with decoded frames on Bob's.
    await ada.keyboard.press('s');
    await eventually(async () => (await bob.locator('#screens .tile').count()) === 1, 15_000, "Bob's screen tile");
    assert.equal(await ada.locator('#screens .tile').count(), 1, 'Ada sees her own screen tile');
    assert.match(await bob.locator('#screens .tile-name').textContent(), /Ada is presenting/);
    await eventually(async () => (await fromAda(bob)).screenFramesDecoded > 5, 15_000, "Bob to decode Ada's screen");
    await ada.keyboard.press('s');
    await eventually(async () => (await bob.locator('#screens .tile').count()) === 0, 15_000,
      "Bob to drop Ada's screen tile");
  } catch (e) {
    await diagnose(pages);
    throw e;
  } finally {
    await browser.close();
  }
});

test('a host mutes a participant, removes them and locks the room from the people panel', { timeout: 90_000 }, async () => {
  const browser = await launch();
  const pages = [];
  try {
    const room = randomRoom('host');
    // A host token, minted as another backend would, handed over in the link.
    const token = await mintToken({ identity: 'hana', name: 'Hana', role: 'host', room });
    const hana = await openRoom(browser, room, 'Hana', { hash: `#token=${token}` });
    const ada = await openRoom(browser, room, 'Ada');
    pages.push(hana, ada);
    await eventually(async () => (await fromAda(hana))?.framesDecoded > 5, 30_000, 'Hana to decode Ada');
    assert.equal(await ada.locator('[data-host]').count(), 0, 'a participant sees no host controls');

    // Mute: Ada's page is told and shows her microphone off; Hana sees the indicator.
    await hana.click('#people-btn');
    const adaRow = hana.locator('#people-list li.person', { hasText: 'Ada' });
    await adaRow.locator('[data-host="mute-mic"]').click();
    await eventually(async () => /\boff\b/.test((await ada.locator('#mic-btn').getAttribute('class')) || ''), 10_000,
      "Ada's mic button to show off after the host's mute");
    await eventually(async () => ((await adaTile(hana).getAttribute('class')) || '').includes('mic-off'), 10_000,
      "Hana to see Ada's microphone off");

    // Lock: a newcomer is refused with room_locked.
    await hana.locator('[data-host="lock"]').click();
    await eventually(() => hana.evaluate(() => window.confab.locked), 10_000, 'the room to be locked');
    assert.match(await hana.locator('[data-host="lock"]').textContent(), /Unlock room/);
    const bo = await openRoom(browser, room, 'Bo');
    pages.push(bo);
    await eventually(() => bo.evaluate(() => window.confab?.state === 'failed'), 20_000, 'Bo to be refused');
    assert.match(await bo.evaluate(() => window.confab.reason), /lock/i);

    // Remove: Ada's page ends, saying why; her tile leaves Hana's page.
    await adaRow.locator('[data-host="remove"]').click();
    await eventually(() => ada.evaluate(() => window.confab?.state === 'failed'), 20_000, "Ada's page to end");
    assert.match(await ada.evaluate(() => window.confab.reason), /remov/i);
    await eventually(async () => (await hana.locator('.tile-remote').count()) === 0, 15_000, "Ada's tile to leave Hana's page");
  } catch (e) {
    await diagnose(pages);
    throw e;
  } finally {
    await browser.close();
  }
});

test('a viewer link joins view-only: it sees and chats, publishes nothing, and stays past the connect timeout', { timeout: 90_000 }, async () => {
  const browser = await launch();
  const pages = [];
  try {
    const room = randomRoom('viewer');
    const token = await mintToken({ identity: 'vera', name: 'Vera', role: 'viewer', room });
    const ada = await openRoom(browser, room, 'Ada');
    const vera = await openRoom(browser, room, 'Vera', { hash: `#token=${token}` });
    pages.push(ada, vera);
    await eventually(async () => (await fromAda(vera))?.framesDecoded > 5, 30_000, 'Vera to decode Ada');
    assert.equal(await vera.evaluate(() => window.confab.role), 'viewer');
    assert.ok(await vera.locator('#mic-btn').isDisabled(), 'the microphone button is disabled');
    assert.ok(await vera.locator('#cam-btn').isDisabled(), 'the camera button is disabled');
    // Ada sees Vera's tile without video or microphone; nothing was refused.
    const veraTile = ada.locator('.tile-remote', { hasText: 'Vera' });
    await veraTile.waitFor({ timeout: 10_000 });
    // Past the server's 20 s connect timeout, Vera is still in the room, still decoding Ada.
    await new Promise((r) => setTimeout(r, 22_000));
    assert.equal(await vera.evaluate(() => window.confab.state), 'connected');
    const before = (await fromAda(vera)).framesDecoded;
    await eventually(async () => (await fromAda(vera)).framesDecoded > before + 20, 10_000, 'Vera still decoding Ada');
    assert.match((await veraTile.getAttribute('class')) || '', /video-off/);
    assert.ok(!vera.logs.some((l) => /not_allowed/.test(l)), 'no publish was refused');
    assert.equal(await vera.evaluate(() => window.confab.chatChannel?.readyState), 'open', 'its chat DataChannel is open');
  } catch (e) {
    await diagnose(pages);
    throw e;
  } finally {
    await browser.close();
  }
});

test('a dropped WebSocket resumes the same participant: media never stops, nobody sees a leave', { timeout: 90_000 }, async () => {
  const browser = await launch();
  const pages = [];
  try {
    const room = randomRoom('reconnect');
    const ada = await openRoom(browser, room, 'Ada');
    const bob = await openRoom(browser, room, 'Bob');
    pages.push(ada, bob);
    await eventually(async () => (await fromAda(bob))?.framesDecoded > 5, 30_000, 'Bob to decode Ada');
    const firstId = (await fromAda(bob)).participantId;
    await bob.evaluate(() => {
      window.membership = [];
      for (const type of ['participant-joined', 'participant-left']) {
        window.confab.addEventListener(type, (e) => window.membership.push(`${type} ${e.detail.name || e.detail.participant?.name || ''}`));
      }
    });

    // Record every state the banner shows, then cut Ada's socket (her transports stay up).
    await ada.evaluate(() => {
      window.seenStates = [];
      window.confab.addEventListener('statechange', (e) => window.seenStates.push(e.detail.state));
      window.confab._ws.close();
    });
    // Both directions are sampled through the drop and the resume: no second without a frame.
    const samples = [];
    const end = Date.now() + 6_000;
    while (Date.now() < end) {
      const [a, b] = await Promise.all([fromAda(bob), stats(ada)]);
      samples.push({ t: Date.now(), toBob: a?.framesDecoded ?? 0, toAda: b.find((r) => r.name === 'Bob')?.framesDecoded ?? 0 });
      await new Promise((r) => setTimeout(r, 200));
    }
    const longest = (k) => {
      let worst = 0; let since = samples[0].t;
      for (let i = 1; i < samples.length; i += 1) {
        if (samples[i][k] > samples[i - 1][k]) since = samples[i].t;
        worst = Math.max(worst, samples[i].t - since);
      }
      return worst;
    };
    assert.ok(await ada.evaluate(() => window.seenStates.includes('reconnecting')), 'Ada showed reconnecting');
    await eventually(() => ada.evaluate(() => window.confab.state === 'connected'), 20_000, 'Ada to resume');
    assert.equal(await ada.locator('#banner').isVisible(), false, 'the banner goes once connected');
    assert.ok(longest('toBob') <= 1_000, `Bob's video of Ada never stopped (longest stall ${longest('toBob')} ms)`);
    assert.ok(longest('toAda') <= 1_000, `Ada's video of Bob never stopped (longest stall ${longest('toAda')} ms)`);
    // The same Ada, one tile, and Bob saw nobody leave or join.
    assert.equal((await fromAda(bob)).participantId, firstId, 'Ada is the same participant');
    assert.deepEqual(await bob.locator('.tile-remote .tile-name').allTextContents(), ['Ada'], 'one tile for Ada');
    assert.deepEqual(await bob.evaluate(() => window.membership), [], 'Bob saw no leave or join');
  } catch (e) {
    await diagnose(pages);
    throw e;
  } finally {
    await browser.close();
  }
});

test('a page without camera or microphone joins receive-only and says why', { timeout: 60_000 }, async () => {
  const browser = await launch();
  const pages = [];
  try {
    const room = randomRoom('recvonly');
    const ada = await openRoom(browser, room, 'Ada');
    pages.push(ada);
    // Bob's browser has no devices: getUserMedia fails as it does on a machine without any.
    const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
    await context.addInitScript(() => {
      navigator.mediaDevices.getUserMedia = async () => {
        throw new DOMException('Requested device not found', 'NotFoundError');
      };
    });
    const bob = await context.newPage();
    bob.logs = [];
    bob.on('console', (m) => bob.logs.push(`[Bob] ${m.type()}: ${m.text()}`));
    bob.on('pageerror', (e) => bob.logs.push(`[Bob] pageerror: ${e.message}`));
    pages.push(bob);
    await bob.goto(`${ada.url().split('?')[0]}?name=Bob`);

    await eventually(() => bob.evaluate(() => window.confab?.state === 'connected'), 20_000, 'Bob to connect');
    await eventually(async () => (await fromAda(bob))?.framesDecoded > 5 && (await fromAda(bob)).audioPacketsReceived > 0,
      30_000, 'receive-only Bob to decode Ada');
    const toasts = (await bob.locator('#toasts').textContent()) || '';
    assert.match(toasts, /no such device/i, `Bob is told why (${toasts})`);
    assert.match(toasts, /receive-only/i, 'Bob is told he joined receive-only');
    // Ada sees Bob's tile with both indicators.
    await eventually(async () => {
      const cls = (await ada.locator('.tile-remote', { hasText: 'Bob' }).getAttribute('class')) || '';
      return cls.includes('mic-off') && cls.includes('video-off');
    }, 10_000, "Ada to show Bob's tile without camera and microphone");
  } catch (e) {
    await diagnose(pages);
    throw e;
  } finally {
    await browser.close();
  }
});
