// A 1:1 call between two real Chromium pages on the calls page (static/calls.html): A sees B online
// and calls; B's page rings and B accepts; both decode each other's video in the call's room; A
// hangs up; both call histories show the call, ended, with its duration.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BASE, launch, capCamera, eventually, diagnose, mintToken } from './helpers.mjs';

/** A page of its own context on the calls page, online as `name`. */
async function lobby(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await capCamera(context, 640);
  const page = await context.newPage();
  page.logs = [];
  page.on('console', (m) => page.logs.push(`[${name}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => page.logs.push(`[${name}] pageerror: ${e.message}`));
  await page.goto(`${BASE}/calls.html?name=${encodeURIComponent(name)}`);
  await page.locator('#lobby').waitFor({ state: 'visible', timeout: 15_000 });
  return page;
}

/** Frames decoded of `from`'s video in the call iframe of `page`. */
async function decoded(page, from) {
  const frame = page.frame({ url: /\/rooms\/call-/ });
  if (!frame) return 0;
  const s = await frame.evaluate(() => (window.confab ? window.confab.stats() : [])).catch(() => []);
  return s.find((r) => r.name === from)?.framesDecoded ?? 0;
}

test('A calls B from the calls page: B rings and accepts, both see each other, A hangs up, both histories have the call',
  { timeout: 120_000 }, async () => {
    const browser = await launch();
    const pages = [];
    try {
      const ann = await lobby(browser, 'Ann');
      const ben = await lobby(browser, 'Ben');
      pages.push(ann, ben);

      // Ann sees Ben online and available, and calls.
      const benRow = ann.locator('#people li', { hasText: 'Ben' });
      await benRow.locator('.call-btn').waitFor({ timeout: 15_000 });
      await benRow.locator('.call-btn').click();
      assert.equal(await ann.textContent('#ring-what'), 'Calling…');

      // Ben's page rings with Ann's name; Ben accepts.
      await ben.locator('#ringing[open][data-ringing="true"]').waitFor({ timeout: 10_000 });
      assert.equal(await ben.textContent('#ring-who'), 'Ann');
      await ben.click('#ring-accept');

      // Both land in the call's room and decode each other's video, at a rate, not once.
      for (const p of [ann, ben]) await p.locator('#call').waitFor({ state: 'visible', timeout: 10_000 });
      await eventually(async () => (await decoded(ann, 'Ben')) > 10 && (await decoded(ben, 'Ann')) > 10, 30_000, 'both decoding');
      const [a0, b0, t0] = [await decoded(ann, 'Ben'), await decoded(ben, 'Ann'), Date.now()];
      // A 30 s window: a call that stalls after 20 s (consent, keyframes) fails here.
      await new Promise((r) => setTimeout(r, 30_000));
      const secs = (Date.now() - t0) / 1000;
      const annFps = (await decoded(ann, 'Ben') - a0) / secs;
      const benFps = (await decoded(ben, 'Ann') - b0) / secs;
      console.log(`in the call: Ann decodes Ben at ${annFps.toFixed(1)} fps, Ben decodes Ann at ${benFps.toFixed(1)} fps`);
      // The fake camera sends 20 fps.
      assert.ok(annFps >= 15 && benFps >= 15, `both directions at 15+ fps: ${annFps.toFixed(1)}, ${benFps.toFixed(1)}`);

      // Ann hangs up: both leave the call; both histories show it, ended, with its duration.
      await ann.click('#hangup');
      for (const p of [ann, ben]) {
        await p.locator('#call').waitFor({ state: 'hidden', timeout: 10_000 });
        await p.locator('#history tbody tr[data-status="ended"]').first().waitFor({ timeout: 10_000 });
        const duration = await p.locator('#history tbody tr[data-status="ended"] .duration').first().textContent();
        const [m, s] = String(duration).split(':').map(Number);
        assert.ok(m * 60 + s >= 30, `the call lasted its 30+ s: ${duration}`);
      }
      assert.match(await ann.textContent('#status'), /Call ended/);
    } catch (e) {
      await diagnose(pages);
      throw e;
    } finally {
      await browser.close();
    }
  });

test('the landing page lists a room its host put in the directory, with its head count, and Join opens it',
  { timeout: 60_000 }, async () => {
    const browser = await launch();
    const pages = [];
    try {
      // A host (token minted like another backend would) joins and lists the room.
      const room = `study-${Math.random().toString(36).slice(2, 8)}`;
      const host = await browser.newContext();
      const hp = await host.newPage();
      pages.push(hp);
      const token = await mintToken({ identity: 'hana', name: 'Hana', role: 'host', room });
      await hp.goto(`${BASE}/rooms/${room}#token=${token}`);
      await eventually(() => hp.evaluate(() => window.confab?.state === 'connected'), 20_000, 'the host in the room');
      const r = await hp.evaluate(async ({ room, token }) => (await fetch(`/api/rooms/${room}/listing`, {
        method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ listed: true, title: 'Spanish B1' }),
      })).status, { room, token });
      assert.equal(r, 200);

      const visitor = await browser.newContext();
      const vp = await visitor.newPage();
      pages.push(vp);
      await vp.goto(`${BASE}/`);
      const row = vp.locator(`#listed-rooms li[data-room="${room}"]`);
      await row.waitFor({ timeout: 15_000 });
      assert.match(await row.textContent(), /Spanish B1 · 1 person/);
      await vp.fill('#name', 'Vic');
      await row.locator('button').click();
      await vp.waitForURL(new RegExp(`/rooms/${room}`), { timeout: 10_000 });
    } catch (e) {
      await diagnose(pages);
      throw e;
    } finally {
      await browser.close();
    }
  });
