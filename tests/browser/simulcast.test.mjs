// Simulcast: Chromium publishes its camera in three layers (RIDs l, m, h: 320, 640 and 1280 px
// wide from a 1280x720 capture); the server sends each subscriber the one its tile needs, by the
// tile size the page reports (`track_settings`). A page rendering the tile small receives the low
// layer; after enlarging it, the high layer; frames decode throughout, through one outgoing stream
// whose sequence numbers and VP8 picture ids the server keeps continuous across the switches.
// While only the small layer is wanted, the publisher is told to stop encoding the others
// (`publisher_layers`), and to resume them when the tile grows. A screen share (a renegotiation of
// the publisher transport) leaves the camera's layers flowing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, openRoom, eventually, stats, randomRoom, diagnose } from './helpers.mjs';

const fromAda = async (page) => (await stats(page)).find((r) => r.name === 'Ada');

test('a small tile receives the low simulcast layer and a large one the high layer, decoding throughout', { timeout: 120_000 }, async () => {
  const browser = await launch();
  const pages = [];
  try {
    const room = randomRoom('simulcast');
    const ada = await openRoom(browser, room, 'Ada', { captureWidth: 1280, simulcast: true });
    const bob = await openRoom(browser, room, 'Bob', { captureWidth: 320, simulcast: true });
    pages.push(ada, bob);
    await eventually(async () => (await fromAda(bob))?.framesDecoded > 10, 30_000, 'Bob to decode Ada');
    const layers = await ada.evaluate(async () => {
      const out = [];
      (await window.confab._pub.getStats()).forEach((s) => { if (s.type === 'outbound-rtp' && s.kind === 'video') out.push(`${s.rid}:${s.frameWidth}`); });
      return out.sort();
    });
    console.log(`Ada sends ${layers.join(', ')}`);

    /** Resizes Bob's page and waits until Ada's video decodes at `width` (and keeps decoding). */
    const atWidth = async (viewport, want, what) => {
      await bob.setViewportSize(viewport);
      const t0 = Date.now();
      await eventually(async () => (await fromAda(bob)).frameWidth === want, 15_000, `${what}: Ada's video at ${want} px`);
      const before = (await fromAda(bob)).framesDecoded;
      await new Promise((r) => setTimeout(r, 3_000));
      const row = await fromAda(bob);
      console.log(`${what}: ${want} px after ${Date.now() - t0 - 3_000} ms; ${(row.framesDecoded - before) / 3} fps at that layer`);
      assert.equal(row.frameWidth, want, `${what}: stays at ${want} px`);
      assert.ok(row.framesDecoded - before >= 30, `${what}: decoding at that layer: ${row.framesDecoded - before} frames in 3 s`);
      return row;
    };
    // A small window: Ada's tile is under 320 px wide, so the 320 px layer.
    await atWidth({ width: 520, height: 400 }, 320, 'small tile');
    // Nobody wants Ada's larger layers now: within a few seconds she stops encoding them
    // (`publisher_layers`), and keeps the small one.
    const sentByRid = () => ada.evaluate(async () => {
      const out = {};
      (await window.confab._pub.getStats()).forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video' && s.rid) out[s.rid] = s.framesSent || 0;
      });
      return out;
    });
    await eventually(async () => {
      const a = await sentByRid();
      await new Promise((r) => setTimeout(r, 2_000));
      const b = await sentByRid();
      return b.h === a.h && b.m === a.m && b.l > a.l + 20;
    }, 15_000, "Ada to stop encoding the layers nobody wants and keep the small one");
    console.log('Ada encodes only the 320 px layer while Bob shows a small tile');
    // A large one: Ada's tile is over 900 px wide, so the 1280 px layer.
    const big = await atWidth({ width: 1920, height: 1080 }, 1280, 'large tile');
    // And back down, to be sure switching goes both ways.
    const small = await atWidth({ width: 520, height: 400 }, 320, 'small again');
    assert.ok(small.freezeCount - big.freezeCount <= 2, `few freezes across the switch: ${small.freezeCount - big.freezeCount}`);

    // A screen share renegotiates Ada's publisher transport. Her camera's layers, named by RID
    // only and no longer carrying it once acknowledged, keep reaching Bob through it.
    await ada.keyboard.press('s');
    await eventually(async () => (await fromAda(bob))?.screenFramesDecoded > 5, 15_000, "Bob to decode Ada's screen");
    const cam0 = (await fromAda(bob)).framesDecoded;
    await new Promise((r) => setTimeout(r, 5_000));
    const camFps = ((await fromAda(bob)).framesDecoded - cam0) / 5;
    console.log(`Ada's camera after her screen share began: ${camFps} fps at Bob`);
    assert.ok(camFps >= 15, `Ada's camera still decodes after the renegotiation: ${camFps} fps`);
  } catch (e) {
    await diagnose(pages);
    throw e;
  } finally {
    await browser.close();
  }
});
