// A call held for a minute, on the machine's real interfaces: the server runs on its defaults (every
// interface announced, as `cargo run` does), three Chromium pages join one room, and over the last
// 30 s of 60 every page decodes every remote camera at >= 18 fps (the fake camera sends 20; captures are
// capped at 640x360 so the three encoders fit beside the server on 2 cores) and
// >= 95 % of the frames its sender encoded, receives >= 99 % of the video and audio packets the
// sender sent, and never goes a one-second step without a frame or 40 audio packets. A call that
// dies after 20 s (issue 8: the browser switched ICE pairs and the server kept sending on the old
// one, then stopped forwarding on a consent gap) fails here. Runs its own server (CONFAB_BIN).
// The same minute again with the page's default, simulcast (three layers per camera, one of
// which reaches each viewer): every remote camera at >= 18 fps, no second without a frame, audio
// whole. Packet and frame counts are not compared with the sender's there: its counters sum
// its layers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, openRoom, eventually, stats, randomRoom, metric, withOwnServer } from './helpers.mjs';
import { measureCall, totals, formatRows } from './quality.mjs';

const BIN = process.env.CONFAB_BIN;
const NAMES = ['Ada', 'Bob', 'Cy'];

/** Three pages in one room for a minute; asserts what arrives over the last 30 s. */
const longCall = ({ simulcast }) => withOwnServer({ args: [] }, async (ctx) => {
  const { base, pages } = ctx;
  const browser = await launch();
  ctx.browsers.push(browser);
  const room = randomRoom('long');
  for (const name of NAMES) pages.push(await openRoom(browser, room, name, { base, captureWidth: 640, simulcast }));
  await eventually(async () => {
    const all = await Promise.all(pages.map((p) => stats(p)));
    return all.every((st) => st.length === 2 && st.every((r) => r.framesDecoded > 0));
  }, 45_000, 'every page to decode both others');
  const switches0 = await metric(base, 'confab_simulcast_layer_switches_total');
  const { rows } = await measureCall(pages, NAMES, { seconds: 60, windowS: 30 });
  console.log(formatRows(rows));
  console.log(`simulcast layer switches during the minute: ${await metric(base, 'confab_simulcast_layer_switches_total') - switches0}`);
  const sum = totals(rows);
  console.log(JSON.stringify(sum));
  for (const r of rows) {
    const who = `${r.receiver} <- ${r.sender}`;
    assert.ok(r.fps >= 18, `${who}: ${r.fps.toFixed(1)} fps decoded over the last 30 s (>= 18)`);
    if (!simulcast) {
      assert.ok(r.fps >= 0.95 * r.framesSentPerS, `${who}: ${r.fps.toFixed(1)} fps decoded of ${r.framesSentPerS.toFixed(1)} encoded`);
      assert.ok(r.videoDelivery >= 0.99, `${who}: video packets ${r.videoReceived}/${r.videoSent}`);
    }
    assert.ok(r.audioDelivery >= 0.99, `${who}: audio packets ${r.audioReceived}/${r.audioSent}`);
    assert.equal(r.maxVideoGapS, 0, `${who}: a second without a decoded frame`);
    assert.ok(r.minAudioPps >= 40, `${who}: audio continuous (lowest ${r.minAudioPps.toFixed(0)} packets in a second, 50 sent)`);
  }
  assert.equal(await metric(base, 'confab_transport_failures_total'), 0, 'no transport failed');
  assert.equal(await metric(base, 'confab_transport_disconnects_total'), 0, 'no transport read as disconnected');
});

test('three pages held for 60 s on the real interfaces decode every remote video at 18+ fps with no gap',
  // No --public-ip: every interface (loopback and the machine's own) is announced.
  { timeout: 180_000, skip: BIN ? false : 'CONFAB_BIN not set' }, () => longCall({ simulcast: false }));

test('the same minute with simulcast cameras (the default): every remote video at 18+ fps with no gap',
  { timeout: 180_000, skip: BIN ? false : 'CONFAB_BIN not set' }, () => longCall({ simulcast: true }));
