// Active speakers: the server reads every microphone's RFC 6464 audio level and tells the room who
// speaks (`active_speakers`). Chromium's fake microphones play a steady tone here; a muted one
// sends silence. Every page must mark the speaker's tile, follow a change of speaker within a few
// seconds, and hear of it in a handful of messages (debounced), not one per packet.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch, openRoom, eventually, stats, randomRoom, diagnose, toneWav } from './helpers.mjs';

/** The page's own participant id and the server's current list. */
const speakersOn = (page) => page.evaluate(() => ({ me: window.confab.participantId, list: window.confab.activeSpeakers }));

/** Whether `page` marks `name`'s tile (its own tile when it is the page's user) as the dominant speaker. */
const marked = async (page, name, own) => {
  const tile = own ? page.locator('.tile[data-key="local"]') : page.locator('.tile-remote', { hasText: name });
  return /\bdominant\b/.test((await tile.getAttribute('class')) || '');
};

test('the room hears who speaks: the speaker is marked on every page and a change follows in seconds', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'confab-speakers-'));
  const browser = await launch({ audioFile: toneWav(dir) });
  const pages = [];
  try {
    const room = randomRoom('speakers');
    const names = ['Ada', 'Bob', 'Cy'];
    for (const n of names) pages.push(await openRoom(browser, room, n, { captureWidth: 320 }));
    const [ada, bob, cy] = pages;
    await eventually(async () => (await Promise.all(pages.map((p) => stats(p)))).every((s) => s.length === 2 && s.every((r) => r.framesDecoded > 0)),
      40_000, 'everyone to decode everyone');
    // Only Ada's microphone is on.
    await bob.keyboard.press('m');
    await cy.keyboard.press('m');
    const ids = Object.fromEntries(await Promise.all(pages.map(async (p, i) => [names[i], (await speakersOn(p)).me])));
    for (const p of pages) {
      await p.evaluate(() => { window.__speakerEvents = 0; window.confab.addEventListener('active-speakers', () => { window.__speakerEvents += 1; }); });
    }
    await eventually(async () => (await Promise.all(pages.map(speakersOn))).every((s) => s.list.length === 1 && s.list[0] === ids.Ada),
      10_000, 'every page to list Ada alone as the speaker');
    assert.ok(await marked(ada, 'Ada', true), "Ada's page marks her own tile");
    assert.ok(await marked(bob, 'Ada', false), "Bob's page marks Ada's tile");
    assert.ok(await marked(cy, 'Ada', false), "Cy's page marks Ada's tile");

    // Ada goes quiet and Bob speaks: within 5 s every page lists Bob alone.
    const switched = Date.now();
    await ada.keyboard.press('m');
    await bob.keyboard.press('m');
    await eventually(async () => (await Promise.all(pages.map(speakersOn))).every((s) => s.list.length === 1 && s.list[0] === ids.Bob),
      5_000, 'every page to list Bob alone');
    console.log(`speaker change seen on every page ${Date.now() - switched} ms after the mute/unmute`);
    assert.ok(await marked(cy, 'Bob', false), "Cy's page marks Bob's tile");
    assert.ok(!(await marked(cy, 'Ada', false)), "Cy's page no longer marks Ada's");

    // A steady speaker for 10 s: no further announcements (debounced, not per packet).
    const before = await Promise.all(pages.map((p) => p.evaluate(() => window.__speakerEvents)));
    await new Promise((r) => setTimeout(r, 10_000));
    const after = await Promise.all(pages.map((p) => p.evaluate(() => window.__speakerEvents)));
    assert.deepEqual(after, before, 'no announcement while the same person keeps speaking');
    assert.ok(after.every((n) => n <= 4), `a handful of announcements for two changes: ${after}`);
    assert.deepEqual((await speakersOn(cy)).list, [ids.Bob]);
  } catch (e) {
    await diagnose(pages);
    throw e;
  } finally {
    await browser.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
