// Per-subscriber bandwidth: one subscriber's link drops to 300 kbit/s (a token bucket on the
// server's side of its link, in its own network namespace). Its browser's receive-side estimate
// falls (REMB), and the server sends it a lower simulcast layer of the publisher's camera within
// 5 s; its audio keeps flowing; another subscriber on a clean link keeps the high layer (sampled
// every second of the limited window); when the limit is lifted, the first climbs back to the
// high layer. On a timeout the test says what each page decodes and what the publisher's
// encoder sends per layer.
//
// Needs root for the namespace; without it the test is skipped and says so loudly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, openRoom, eventually, stats, randomRoom, withOwnServer, metric } from './helpers.mjs';
import { measureCall, formatRows } from './quality.mjs';
import * as netns from './netns.mjs';

const BIN = process.env.CONFAB_BIN;
const why = !BIN ? 'CONFAB_BIN not set' : netns.unavailable();
if (why) console.log(`*** bandwidth test NOT RUN: ${why} ***`);

const LIMIT_KBIT = 300;
const width = async (page) => (await stats(page)).find((r) => r.name === 'Ada')?.frameWidth ?? 0;
/** What `page` sends of video now, kbit/s over one second (its publisher transport's own count). */
const sendKbps = async (page) => {
  const bytes = async () => (await page.evaluate(() => window.confab.sendStats())).videoBytesSent;
  const a = await bytes();
  await new Promise((r) => setTimeout(r, 1000));
  return ((await bytes()) - a) * 8 / 1000;
};

/** What `page` sends of its camera, per simulcast layer: size, frame rate, what limits it. */
const sentLayers = (page) => page.evaluate(async () => {
  const out = [];
  (await window.confab._pub.getStats()).forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && s.availableOutgoingBitrate !== undefined) {
      out.push(`estimate ${Math.round(s.availableOutgoingBitrate / 1000)} kbit/s`);
    }
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out.push(`${s.rid ?? '-'} ${s.frameWidth ?? 0}x${s.frameHeight ?? 0} ${s.framesPerSecond ?? 0} fps ${Math.round((s.targetBitrate ?? 0) / 1000)} kbit/s${s.active === false ? ' paused' : ''} (${s.qualityLimitationReason})`);
    }
  });
  return out.join(', ');
});

/**
 * Waits up to `ms` for `page` to send more than `kbps` of video; on a timeout the error says what
 * it sent last (rate, frame size, what Chromium says limits it).
 */
async function sendsOver(page, kbps, ms, what) {
  let seen = '';
  await eventually(async () => {
    const rate = await sendKbps(page);
    const s = await page.evaluate(() => window.confab.sendStats());
    seen = `${rate.toFixed(0)} kbit/s, ${s.frameSize}, limited by ${s.qualityLimitation}`;
    return rate > kbps;
  }, ms, what).catch((e) => { throw new Error(`${e.message} (last: ${seen})`); });
}

/**
 * Runs `body({ ctx, base, inside, outside })` with a server of its own, one browser in a network
 * namespace whose link (`netns.throttle(0, …)`) the test limits, and one on this machine.
 */
async function withThrottledBrowser(body) {
  const net = netns.setup({ ns: 'cfbwe', net: 248, links: 1 });
  try {
    await withOwnServer({ listen: net.links[0].server, args: ['--public-ip', net.links[0].server] }, async (ctx) => {
      const { base } = ctx;
      const opts = { secureOrigin: base };
      const inside = await launch({ ...opts, executablePath: netns.chromiumIn(net.ns) });
      const outside = await launch(opts);
      ctx.browsers.push(inside, outside);
      await body({ ctx, base, inside, outside });
    });
  } finally {
    netns.teardown({ ns: 'cfbwe', links: 1 });
  }
}

test(`a subscriber whose link drops to ${LIMIT_KBIT} kbit/s gets a lower layer within 5 s, keeps its audio, and climbs back; its neighbour keeps the high layer`,
  { timeout: 240_000, skip: why || false }, async () => {
    await withThrottledBrowser(async ({ ctx, base, inside, outside }) => {
      const room = randomRoom('bwe');
      const ada = await openRoom(outside, room, 'Ada', { base, captureWidth: 1280, simulcast: true });
      const bob = await openRoom(inside, room, 'Bob', { base, captureWidth: 320 });
      const cy = await openRoom(outside, room, 'Cy', { base, captureWidth: 320 });
      ctx.pages.push(ada, bob, cy);
      // Only Ada sends: Bob's link carries her camera and microphone, nothing else. Large
      // windows: both want her top layer.
      await eventually(async () => (await width(bob)) > 0 && (await width(cy)) > 0, 40_000, 'Bob and Cy to decode Ada');
      await bob.keyboard.press('v');
      await cy.keyboard.press('v');
      await cy.keyboard.press('m');
      await bob.setViewportSize({ width: 1920, height: 1080 });
      await cy.setViewportSize({ width: 1920, height: 1080 });
      // Up to 90 s: Ada's send-side estimate starts near 300 kbit/s and her top layer needs
      // about 1.9 Mbit/s for all three; on 2 cores shared with three browsers it has taken
      // over 40 s (measured: her encoder "limited by bandwidth", top layer not yet sent).
      await eventually(async () => (await width(bob)) === 1280 && (await width(cy)) === 1280, 90_000,
        "Bob and Cy to receive Ada's 1280 px layer")
        .catch(async (e) => {
          throw new Error(`${e.message} (Bob ${await width(bob)} px, Cy ${await width(cy)} px; Ada sends ${await sentLayers(ada)})`);
        });

      const resent0 = await metric(base, 'confab_rtp_retransmitted_packets_total');
      netns.throttle(0, LIMIT_KBIT);
      const cut = Date.now();
      console.log(`link to Bob limited to ${LIMIT_KBIT} kbit/s at ${new Date(cut).toISOString()}`);
      let lowered;
      try {
        await eventually(async () => (await width(bob)) > 0 && (await width(bob)) < 1280, 5_000,
          `Bob to get a lower layer on the ${LIMIT_KBIT} kbit/s link`)
          .finally(async () => console.log(`packets sent again since the cut: ${await metric(base, 'confab_rtp_retransmitted_packets_total') - resent0}; Bob ${await width(bob)} px, Cy ${await width(cy)} px; Ada sends ${await sentLayers(ada)}`));
        lowered = Date.now() - cut;
        console.log(`Bob's layer came down to ${await width(bob)} px ${lowered} ms after the cut`);
        // Held at the limit for 15 s: Bob's audio from Ada flows, Cy keeps the high layer.
        // Bob's decoded width at every sample: the server probes upwards now and then (the probe
        // is the higher layer itself), so one instant may catch him on the top layer; what must
        // hold is that he spends most of the window below it.
        const widths = [];
        const onTick = (_t, [fromBob]) => {
          const w = fromBob?.rows.find((x) => x.name === 'Ada')?.frameWidth;
          if (w !== undefined) widths.push(w);
        };
        // Cy's width, every second of the same window.
        const cyWidths = [];
        let holding = true;
        const cySampler = (async () => {
          while (holding) {
            cyWidths.push(await width(cy));
            await new Promise((r) => setTimeout(r, 1000));
          }
        })();
        const held = await measureCall([bob, ada], ['Bob', 'Ada'], { seconds: 15, windowS: 12, stepMs: 500, onTick })
          .finally(() => { holding = false; });
        await cySampler;
        console.log(`at ${LIMIT_KBIT} kbit/s:\n${formatRows(held.rows)}\nBob's width of Ada's video, every 0.5 s: ${widths.join(' ')}\nCy's, every second: ${cyWidths.join(' ')}`);
        const r = held.rows.find((x) => x.receiver === 'Bob' && x.sender === 'Ada');
        assert.ok(r.audioDelivery >= 0.9, `Bob keeps Ada's audio: ${r.audioReceived}/${r.audioSent}`);
        assert.ok(r.maxAudioGapS <= 1, `Bob's longest audio gap: ${r.maxAudioGapS} s`);
        const top = widths.filter((w) => w >= 1280).length;
        assert.ok(widths.length >= 20 && top <= widths.length / 3,
          `Bob spends at most a third of the limited window on the top layer: ${top} of ${widths.length} samples`);
        // Each probe for a higher layer costs a few seconds of video on a link that cannot take
        // it (the probe is the layer itself, no padding yet), so the rate here is modest
        // (measured 5.5-9.2 fps) but video never stops for good.
        assert.ok(r.fps >= 3, `Bob still decodes Ada's video: ${r.fps.toFixed(1)} fps`);
        // Cy's link is clean: what Bob's link does never reaches Cy's layer. Her own browser's
        // delay-based estimate can still dip on a machine whose 2 cores three browsers share
        // (seen once in 15 runs: 1.05 Mbit/s to 0.39 with no loss, 10 s after Bob's cut), and
        // the server takes that estimate as it comes (for 5-8 s, until its next probe), so she
        // must hold the top layer for at least half the window (dragged down with Bob, she would
        // hold it for none) and be back on it at its end.
        const cyTop = cyWidths.filter((w) => w >= 1280).length;
        assert.ok(cyWidths.length >= 10 && cyTop >= cyWidths.length / 2,
          `Cy keeps Ada's top layer: ${cyTop} of ${cyWidths.length} samples`);
        await eventually(async () => (await width(cy)) === 1280, 10_000, "Cy to be on Ada's top layer");
      } finally {
        netns.throttle(0, 0);
      }
      const lifted = Date.now();
      await eventually(async () => (await width(bob)) === 1280, 45_000, "Bob to climb back to Ada's top layer");
      console.log(`Bob back at 1280 px ${Date.now() - lifted} ms after the limit was lifted`);
      assert.ok((await metric(base, 'confab_bandwidth_estimates_total')) > 0, 'the server read REMB estimates');
    });
  });

test(`a camera sent as one stream is held under a subscriber link that drops to ${LIMIT_KBIT} kbit/s, so that subscriber keeps audio and video, and is released after the limit is lifted`,
  { timeout: 300_000, skip: why || false }, async () => {
    await withThrottledBrowser(async ({ ctx, base, inside, outside }) => {
      const room = randomRoom('uplink');
      // No simulcast: the server has no lower layer to give Bob, only the publisher's bitrate.
      const ada = await openRoom(outside, room, 'Ada', { base, captureWidth: 1280, simulcast: false });
      const bob = await openRoom(inside, room, 'Bob', { base, captureWidth: 320, simulcast: false });
      ctx.pages.push(ada, bob);
      await eventually(async () => (await width(bob)) > 0, 40_000, 'Bob to decode Ada');
      await bob.keyboard.press('v');
      await bob.setViewportSize({ width: 1920, height: 1080 });
      await sendsOver(ada, 600, 90_000, 'Ada to send over 600 kbit/s of video');
      const caps0 = await metric(base, 'confab_publisher_bitrate_caps_total');

      netns.throttle(0, LIMIT_KBIT);
      const cut = Date.now();
      try {
        await eventually(async () => (await sendKbps(ada)) < LIMIT_KBIT * 0.8, 15_000,
          `Ada's video to come under Bob's ${LIMIT_KBIT} kbit/s link`);
        console.log(`Ada's video under ${LIMIT_KBIT * 0.8} kbit/s ${Date.now() - cut} ms after the cut`);
        // What Ada's encoder makes of the cap, every 0.5 s: frame size, frames sent, what limits it.
        const sending = [];
        const onTick = (_t, [, fromAda]) => {
          if (fromAda) sending.push(`${fromAda.sent.frameSize}/${fromAda.sent.framesSent}/${fromAda.sent.qualityLimitation}`);
        };
        const bobFromAda = (m) => m.rows.find((x) => x.receiver === 'Bob' && x.sender === 'Ada');
        // First the cap overshoots and Ada's encoder adapts. While the flooded bottleneck drains,
        // Bob's estimate (and the cap after it) falls far below his link (measured: 69-77 kbit/s
        // on the 300 kbit/s link, 2-3 s after the cut), probes raise the cap by half every 5 s
        // from there, and Chromium sends even less than the cap: it keeps its 1280 px frames for
        // several seconds at 2-4 fps (its encoder drops frames) before its quality scaler lowers
        // the resolution (then 14-20 fps at 640 px, from 8-13 s after the cut). Measured over
        // these first 10 s: 1.5-3.8 fps decoded, gaps of 1.5-3.5 s. Bob's audio must not suffer
        // and his video must not stop for good; the frame rate is judged after.
        const adapting = await measureCall([bob, ada], ['Bob', 'Ada'], { seconds: 10, windowS: 10, stepMs: 500, onTick });
        sending.push('|');
        const held = await measureCall([bob, ada], ['Bob', 'Ada'], { seconds: 13, windowS: 12, stepMs: 500, onTick });
        console.log(`at ${LIMIT_KBIT} kbit/s, while Ada's encoder adapts:\n${formatRows(adapting.rows)}`);
        console.log(`then:\n${formatRows(held.rows)}\nAda sends (size/frames/limit): ${sending.join(' ')}`);
        for (const [r, maxGapS] of [[bobFromAda(adapting), 4], [bobFromAda(held), 2]]) {
          assert.ok(r.audioDelivery >= 0.9, `Bob keeps Ada's audio: ${r.audioReceived}/${r.audioSent}`);
          assert.ok(r.maxAudioGapS <= 1, `Bob's longest audio gap: ${r.maxAudioGapS} s`);
          assert.ok(r.maxVideoGapS <= maxGapS, `Bob's longest stretch without a frame: ${r.maxVideoGapS} s (at most ${maxGapS} s)`);
        }
        const r = bobFromAda(held);
        assert.ok(r.fps >= 5, `Bob still decodes Ada's video once her encoder has adapted: ${r.fps.toFixed(1)} fps`);
      } finally {
        netns.throttle(0, 0);
      }
      const lifted = Date.now();
      await sendsOver(ada, 600, 60_000, 'Ada to send over 600 kbit/s again');
      console.log(`Ada back over 600 kbit/s ${Date.now() - lifted} ms after the limit was lifted`);
      const caps = (await metric(base, 'confab_publisher_bitrate_caps_total')) - caps0;
      assert.ok(caps > 0, `the server capped Ada with REMB: ${caps} sent`);
    });
  });
