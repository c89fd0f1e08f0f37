// A participant's network blips or changes mid-call; it comes back as the same participant and the
// others see it only as "reconnecting…". Rover runs in a network namespace with a single link to
// the server (HTTP, WebSocket and media all on it; needs root, skipped where namespaces cannot be
// made, never on CI, which runs as root); Stay on this machine. Runs its own server (CONFAB_BIN).
//
// 1. Blip: every packet on Rover's link is dropped for 5 s, then passes again. ICE consent and the
//    WebSocket survive (or resume); video flows again both ways within 5 s of the restore.
// 2. Address change: Rover's address is replaced (new DHCP lease, another access point). Its
//    WebSocket and its ICE pairs are bound to the old address and die without an error; the
//    client notices the media going quiet, finds the socket silent, resumes on a new socket and
//    restarts ICE. Video flows again both ways within 10 s of the change.
// In both, Stay sees no participant leave or join, Rover keeps its participant id, and the call
// then runs at full rate.
// 3. The address change again with both publishing simulcast: the resume renegotiates Rover's
//    publisher transport, whose layers are named by RID only; Rover's camera must come back to
//    Stay (it never did before the server kept the layers' SSRCs across the renegotiation).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pagesAcross, eventually, stats, metric, withOwnServer, recordMembership, membership } from './helpers.mjs';
import { measureCall, formatRows, frames } from './quality.mjs';
import * as netns from './netns.mjs';

const BIN = process.env.CONFAB_BIN;
const why = !BIN ? 'CONFAB_BIN not set' : netns.unavailable();

/**
 * Rover (in the namespace) and Stay (here) in one room, decoding each other; runs `body`. With
 * `simulcast`, both publish three layers: what arrives is then compared with the frame rate only
 * (the sender's packet counters sum all layers, of which one is forwarded).
 */
async function call(body, { simulcast = false } = {}) {
  const net = netns.setup({ links: 1, net: 252 });
  try {
    await withOwnServer({
      listen: net.links[0].server,
      args: ['--public-ip', net.links[0].server],
    }, async (ctx) => {
      const { base } = ctx;
      const [rover, stay] = await pagesAcross(ctx, { chromium: netns.chromiumIn(net.ns), prefix: 'resume', names: ['Rover', 'Stay'], simulcast });
      await eventually(async () => (await frames(rover, 'Stay')) > 40 && (await frames(stay, 'Rover')) > 40,
        45_000, 'Rover and Stay to decode each other');
      const roverId = (await stats(stay)).find((r) => r.name === 'Rover')?.participantId;
      assert.ok(roverId, 'Stay sees Rover');
      await recordMembership(stay);
      await body({ net, ctx, rover, stay });

      // The others saw nothing but "reconnecting": same participant, no leave or join, full rate.
      assert.deepEqual(await membership(stay), [], 'Stay saw no participant leave or join');
      assert.equal((await stats(stay)).find((r) => r.name === 'Rover')?.participantId, roverId, 'Rover is the same participant');
      assert.equal(await rover.evaluate(() => window.confab.participantId), roverId, 'Rover kept its id');
      const { rows } = await measureCall([rover, stay], ['Rover', 'Stay'], { seconds: 10, windowS: 8 });
      console.log(formatRows(rows));
      // A cap here would be the old path's loss read as the new path's congestion.
      console.log(`publisher bitrate caps: ${await metric(base, 'confab_publisher_bitrate_caps_total')}`);
      for (const r of rows) {
        assert.ok(r.fps >= 15, `${r.receiver} <- ${r.sender}: ${r.fps.toFixed(1)} fps after`);
        if (!simulcast) assert.ok(r.videoDelivery >= 0.95, `${r.receiver} <- ${r.sender}: video ${r.videoReceived}/${r.videoSent}`);
      }
      assert.equal(await metric(base, 'confab_transport_failures_total'), 0, 'no transport failed on the server');
    });
  } finally {
    netns.teardown({ ns: net.ns, links: 1 });
  }
}

/** Raw video counters of `pages` (inbound and outbound) every 250 ms until `ms` after `t0`. */
async function videoTrace(pages, t0, ms) {
  const out = [];
  while (Date.now() - t0 < ms) {
    const row = await Promise.all(pages.map((p) => p.evaluate(async () => {
      const c = /** @type {any} */ (window).confab;
      const pick = (r, type) => {
        const o = [];
        r?.forEach((s) => {
          if (s.type === type && s.kind === 'video') {
            o.push(type === 'inbound-rtp'
              ? `in pkts=${s.packetsReceived} lost=${s.packetsLost} dec=${s.framesDecoded} kf=${s.keyFramesDecoded} pli=${s.pliCount} nack=${s.nackCount}`
              : `out pkts=${s.packetsSent} enc=${s.framesEncoded} kf=${s.keyFramesEncoded} pli=${s.pliCount} nack=${s.nackCount} lim=${s.qualityLimitationReason} br=${s.targetBitrate}`);
          }
        });
        return o.join(' ');
      };
      return `${pick(await c._sub?.getStats(), 'inbound-rtp')} | ${pick(await c._pub?.getStats(), 'outbound-rtp')}`;
    })));
    out.push([Date.now() - t0, ...row]);
    await new Promise((r) => setTimeout(r, 250));
  }
  return out.map((r) => r.join(' || ')).join('\n');
}

/** Records `page`'s session states and transport states with their times in `window.trace`. */
async function traceStates(page) {
  await page.evaluate(() => {
    const w = /** @type {any} */ (window);
    w.trace = [];
    const c = w.confab;
    c.addEventListener('statechange', (e) => w.trace.push([Date.now(), `session ${e.detail.state} ${e.detail.reason}`]));
    for (const [name, pc] of [['publisher', c._pub], ['subscriber', c._sub]]) {
      pc?.addEventListener('connectionstatechange', () => w.trace.push([Date.now(), `${name} ${pc.connectionState}`]));
      pc?.addEventListener('icecandidate', (e) => w.trace.push([Date.now(), `${name} candidate ${e.candidate?.address ?? 'end'}`]));
      pc?.addEventListener('iceconnectionstatechange', () => w.trace.push([Date.now(), `${name} ice ${pc.iceConnectionState}`]));
    }
  });
}

/**
 * Ms from `since` until both Rover and Stay decode at least 10 new frames of each other (polled
 * every 100 ms, at most `limitMs`); Infinity if they never do.
 */
async function backBothWays(rover, stay, since, limitMs) {
  const [a0, b0] = await Promise.all([frames(rover, 'Stay'), frames(stay, 'Rover')]);
  const done = { toRover: null, toStay: null };
  while (Date.now() - since < limitMs && (done.toRover === null || done.toStay === null)) {
    const [a, b] = await Promise.all([frames(rover, 'Stay'), frames(stay, 'Rover')]);
    if (done.toRover === null && a >= a0 + 10) done.toRover = Date.now() - since;
    if (done.toStay === null && b >= b0 + 10) done.toStay = Date.now() - since;
    await new Promise((r) => setTimeout(r, 100));
  }
  return { toRover: done.toRover ?? Infinity, toStay: done.toStay ?? Infinity };
}

test('a 5 s network blip: the call comes back within 5 s of the network, as the same participant',
  { timeout: 180_000, skip: why || false }, () => call(async ({ net, rover, stay }) => {
    netns.block(net.ns, 0, true);
    await new Promise((r) => setTimeout(r, 5_000));
    netns.block(net.ns, 0, false);
    const restored = Date.now();
    const back = await backBothWays(rover, stay, restored, 20_000);
    console.log(`blip: video back to Rover ${back.toRover} ms, to Stay ${back.toStay} ms after the network returned`);
    assert.ok(back.toRover <= 5_000 && back.toStay <= 5_000, `video back within 5 s: ${JSON.stringify(back)}`);
  }));

/** Changes Rover's address and checks that it resumes and video returns both ways within 10 s. */
async function addressChange({ net, ctx, rover, stay }) {
  const resumedBefore = await metric(ctx.base, 'confab_resumes_total');
  await traceStates(rover);
  const changed = Date.now();
  const addr = netns.readdress(net.ns, 0, 7, { net: 252 });
  const sampling = process.env.CONFAB_TRACE ? videoTrace([rover, stay], changed, 14_000) : null;
  const back = await backBothWays(rover, stay, changed, 30_000);
  if (sampling) console.log(JSON.stringify(await sampling));
  const pairs = await rover.evaluate(() => window.confab.pairs());
  console.log(`Rover's states: ${JSON.stringify(await rover.evaluate((t0) => window.trace.map(([t, e]) => [t - t0, e]), changed))}`);
  console.log(`address change to ${addr}: video back to Rover ${back.toRover} ms, to Stay ${back.toStay} ms; pairs ${JSON.stringify(pairs)}`);
  assert.ok(back.toRover <= 10_000 && back.toStay <= 10_000, `video back within 10 s: ${JSON.stringify(back)}`);
  assert.ok(pairs.subscriber?.local?.includes(`${addr}:`) && pairs.publisher?.local?.includes(`${addr}:`),
    `both transports on the new address: ${JSON.stringify(pairs)}`);
  assert.ok(await metric(ctx.base, 'confab_resumes_total') > resumedBefore, 'Rover resumed on a new socket');
}

test('an address change: the participant resumes on a new socket and new ICE pairs within 10 s',
  { timeout: 180_000, skip: why || false }, () => call(addressChange));

test('an address change while both publish simulcast: the resumed camera comes back within 10 s',
  { timeout: 180_000, skip: why || false }, () => call(addressChange, { simulcast: true }));
