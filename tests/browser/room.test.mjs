// Three headless Chromium pages in one room through the real server: every page decodes video
// from both others and receives their audio; a page that leaves disappears from the others,
// who keep decoding.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { launch, openRoom, eventually, stats, randomRoom, diagnose, metric, BASE } from './helpers.mjs';

const NAMES = ['Ada', 'Bob', 'Cy'];

describe('three pages in one room', { timeout: 120_000 }, () => {
  let browser;
  let room;
  const pages = [];
  before(async () => {
    browser = await launch();
    room = randomRoom('browser');
    for (const name of NAMES) pages.push(await openRoom(browser, room, name));
  });
  after(async () => { await browser?.close(); });

  it('each page decodes video and receives audio from the two others and shows their named tiles', async () => {
    try {
      // Every page: both others present, video frames decoded and growing, audio packets arriving.
      const first = [];
      for (const [i, page] of pages.entries()) {
        const others = NAMES.filter((_, j) => j !== i);
        const s = await eventually(async () => {
          const st = await stats(page);
          const ok = others.every((n) => st.some((r) => r.name === n && r.framesDecoded > 10 && r.audioPacketsReceived > 10));
          return ok && st;
        }, 45_000, `${NAMES[i]} to decode ${others.join(' and ')}`);
        first.push(s);
      }
      await new Promise((r) => setTimeout(r, 1500));
      for (const [i, page] of pages.entries()) {
        const again = await stats(page);
        for (const row of first[i]) {
          const now = again.find((r) => r.participantId === row.participantId);
          assert.ok(now && now.framesDecoded > row.framesDecoded, `${NAMES[i]}: frames from ${row.name} keep growing (${row.framesDecoded} -> ${now?.framesDecoded})`);
          assert.ok(now.audioPacketsReceived > row.audioPacketsReceived, `${NAMES[i]}: audio from ${row.name} keeps arriving`);
        }
        const tiles = await page.locator('.tile-remote .tile-name').allTextContents();
        assert.deepEqual([...tiles].sort(), NAMES.filter((_, j) => j !== i).sort(), `${NAMES[i]} shows a tile per remote participant`);
        // Layout: three 16:9 tiles share the stage as a 2×2 grid (not thumbnails at the top), the
        // controls sit at the bottom of the 1280×720 viewport.
        const geo = await page.evaluate(() => ({
          tiles: [...document.querySelectorAll('#grid .tile')].map((t) => t.getBoundingClientRect().toJSON()),
          controls: document.querySelector('.controls').getBoundingClientRect().toJSON(),
        }));
        for (const t of geo.tiles) {
          assert.ok(t.width >= 400 && t.height >= 225, `${NAMES[i]}: tile ${Math.round(t.width)}x${Math.round(t.height)} fills the stage`);
          assert.ok(Math.abs(t.width / t.height - 16 / 9) < 0.05, `${NAMES[i]}: tiles are 16:9`);
        }
        assert.ok(geo.controls.bottom >= 715, `${NAMES[i]}: the controls bar is at the bottom (${geo.controls.bottom})`);
        console.log(`${NAMES[i]}: ${JSON.stringify(again)}`);
      }
      // Chromium starts DTLS before it nominates (USE-CANDIDATE comes with its next check, ~50 ms
      // later): the server selects the pair when that DTLS arrives instead of waiting. Every
      // transport of these pages (two each) goes that way unless Chromium happened to nominate first.
      const early = await metric(BASE, 'confab_ice_early_nominations_total');
      console.log(`transports selected on the peer's DTLS, before its nomination: ${early}`);
      assert.ok(early >= 3, `the server selected pairs on Chromium's early DTLS (${early} transports)`);
      mkdirSync('target', { recursive: true });
      await pages[0].screenshot({ path: 'target/browser-room.png' });
    } catch (e) {
      await diagnose(pages);
      throw e;
    }
  });

  it('a page that leaves loses its tile on the others, who keep decoding each other', async () => {
    try {
      // Cy leaves (the red Leave button): the others drop the tile and keep decoding each other.
      await pages[2].click('#leave-btn');
      for (const [i, page] of pages.slice(0, 2).entries()) {
        await eventually(async () => {
          const names = await page.locator('.tile-remote .tile-name').allTextContents();
          return !names.includes('Cy');
        }, 20_000, `${NAMES[i]} to drop Cy's tile`);
        const was = (await stats(page)).find((r) => r.name === NAMES[1 - i]);
        await eventually(async () => {
          const now = (await stats(page)).find((r) => r.name === NAMES[1 - i]);
          return now && was && now.framesDecoded > was.framesDecoded + 5;
        }, 20_000, `${NAMES[i]} to keep decoding ${NAMES[1 - i]} after the leave`);
      }
      assert.equal(await pages[2].locator('#left-overlay').isVisible(), true, 'Cy sees the left screen');
    } catch (e) {
      await diagnose(pages);
      throw e;
    }
  });

  it('a page that joins after another left is seen and heard on the m-lines the leaver freed', async () => {
    // The server reuses Cy's m-lines on Ada's and Bob's subscriber transports for Dee's tracks
    // (the SDP stays as long as the most tracks ever received at once).
    const dee = await openRoom(browser, room, 'Dee');
    pages.push(dee);
    try {
      for (const [i, page] of pages.slice(0, 2).entries()) {
        const first = await eventually(async () => {
          const r = (await stats(page)).find((x) => x.name === 'Dee');
          return r && r.framesDecoded > 10 && r.audioPacketsReceived > 10 && r;
        }, 30_000, `${NAMES[i]} to decode Dee`);
        await eventually(async () => {
          const r = (await stats(page)).find((x) => x.name === 'Dee');
          return r.framesDecoded > first.framesDecoded + 10;
        }, 10_000, `${NAMES[i]} to keep decoding Dee`);
        const tiles = await page.locator('.tile-remote .tile-name').allTextContents();
        assert.deepEqual([...tiles].sort(), [NAMES[1 - i], 'Dee'].sort(), `${NAMES[i]} shows Dee's tile and not Cy's`);
        const mlines = await page.evaluate(() => window.confab._sub.remoteDescription.sdp.split('\n')
          .filter((l) => /^m=(audio|video)/.test(l)).length);
        assert.ok(mlines <= 4, `${NAMES[i]}'s subscriber SDP has ${mlines} media m-lines for 4 live tracks (Cy's were reused)`);
      }
    } catch (e) {
      await diagnose(pages);
      throw e;
    }
  });
});
