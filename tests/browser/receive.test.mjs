// What a page receives: audio-only mode turns the others' cameras off at the server
// (`track_settings`), so the page stops decoding them while their audio plays on; when nobody
// receives a camera its publisher is told to stop encoding it (`publisher_paused`) and its sent
// frames stop; turning audio-only off brings the video back within seconds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, openRoom, eventually, stats, randomRoom, diagnose } from './helpers.mjs';

const fromAda = async (page) => (await stats(page)).find((r) => r.name === 'Ada');
const framesSent = (page) => page.evaluate(async () => (await window.confab.sendStats()).framesSent);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('audio-only mode stops the cameras at the server and the publisher, keeps the audio, and comes back', { timeout: 90_000 }, async () => {
  const browser = await launch();
  const pages = [];
  try {
    const room = randomRoom('receive');
    const ada = await openRoom(browser, room, 'Ada', { captureWidth: 320 });
    const bob = await openRoom(browser, room, 'Bob', { captureWidth: 320 });
    pages.push(ada, bob);
    await eventually(async () => (await fromAda(bob))?.framesDecoded > 10, 30_000, 'Bob to decode Ada');

    // Bob goes audio-only (key A): over 5 s he decodes no more of Ada's camera, her audio goes on
    // at its rate (50 packets/s), and Ada, whom nobody else watches, stops encoding her camera.
    await bob.keyboard.press('a');
    await sleep(1_500);
    const [v0, s0] = [await fromAda(bob), await framesSent(ada)];
    await sleep(5_000);
    const [v1, s1] = [await fromAda(bob), await framesSent(ada)];
    console.log(`audio-only 5 s: Bob decoded ${v1.framesDecoded - v0.framesDecoded} frames of Ada, `
      + `${v1.audioPacketsReceived - v0.audioPacketsReceived} audio packets; Ada sent ${s1 - s0} frames`);
    assert.ok(v1.framesDecoded - v0.framesDecoded <= 1, `no video decoded in audio-only mode: ${v1.framesDecoded - v0.framesDecoded}`);
    assert.ok(v1.audioPacketsReceived - v0.audioPacketsReceived >= 200, `audio goes on: ${v1.audioPacketsReceived - v0.audioPacketsReceived} packets in 5 s`);
    assert.ok(s1 - s0 <= 2, `Ada stopped encoding her unwatched camera: ${s1 - s0} frames in 5 s`);
    assert.match((await bob.locator('#audio-only-btn').getAttribute('aria-pressed')) || '', /true/);

    // Back (key A again): Ada encodes again and Bob decodes her camera within 5 s.
    const back = Date.now();
    await bob.keyboard.press('a');
    const before = (await fromAda(bob)).framesDecoded;
    await eventually(async () => (await fromAda(bob)).framesDecoded > before + 10, 5_000, "Bob to decode Ada's camera again");
    console.log(`video back ${Date.now() - back} ms after leaving audio-only`);
    assert.ok((await framesSent(ada)) > s1 + 10, 'Ada encodes her camera again');
  } catch (e) {
    await diagnose(pages);
    throw e;
  } finally {
    await browser.close();
  }
});
