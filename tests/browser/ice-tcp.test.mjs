// A participant on a network that blocks UDP (no TURN server): its UDP to the server is dropped
// silently both ways, as a corporate firewall does. Chromium gathers only active TCP candidates;
// the server offers passive ICE-TCP (RFC 6544) on its media port, so the call connects over TCP,
// and media flows both ways with a participant on UDP. Then the link to that participant turns
// slow (a token bucket far below the video's rate): the server holds the neighbour's single-stream
// camera under that link (REMB) and, while the connection is backed up, skips video to the next
// keyframe (drop policy), so its audio keeps flowing, its neighbour is untouched, and video is full
// again once the link is back.
//
// The client runs in a network namespace of its own (needs root). Where namespaces cannot be made
// that test says so loudly; the loopback test below runs everywhere (UDP candidates filtered out
// of what the page receives, so TCP is the only pair Chromium can form). Both run their own
// server (CONFAB_BIN).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pagesAcross, eventually, stats, withOwnServer, metric, launch, openRoom, randomRoom } from './helpers.mjs';
import { measureCall, formatRows } from './quality.mjs';
import * as netns from './netns.mjs';

const BIN = process.env.CONFAB_BIN;
const why = !BIN ? 'CONFAB_BIN not set' : netns.unavailable();
if (why && BIN) {
  console.log(`*** ICE-TCP namespace test NOT RUN: ${why}; only the loopback TCP test runs (UDP candidates filtered) ***`);
}

const SLOW_KBIT = 160;
const CONGESTED = 'confab_drops_total{cause="tcp_congested"}';
const decodes = async (page, from) => ((await stats(page)).find((r) => r.name === from)?.framesDecoded ?? 0) > 0;
const row = (rows, receiver, sender) => rows.find((r) => r.receiver === receiver && r.sender === sender);

/** Asserts every row of a healthy call window: frame rate and delivery of both media kinds. */
function assertHealthy(rows, what) {
  for (const r of rows) {
    const who = `${what}: ${r.receiver} <- ${r.sender}`;
    assert.ok(r.fps >= 15, `${who}: ${r.fps.toFixed(1)} fps`);
    assert.ok(r.videoDelivery >= 0.97, `${who}: video ${r.videoReceived}/${r.videoSent}`);
    assert.ok(r.audioDelivery >= 0.97, `${who}: audio ${r.audioReceived}/${r.audioSent}`);
  }
}

test('a client whose network drops all UDP joins over ICE-TCP, exchanges media with a UDP participant, and keeps its audio when the link turns slow',
  { timeout: 240_000, skip: why || false }, async () => {
    const net = netns.setup({ links: 1 });
    netns.blockUdp(net.ns, 0);
    try {
      await withOwnServer({ listen: net.links[0].server, args: ['--public-ip', net.links[0].server] }, async (ctx) => {
        const { base } = ctx;
        const started = Date.now();
        const [corp, home] = await pagesAcross(ctx, { chromium: netns.chromiumIn(net.ns), prefix: 'tcp', names: ['Corp', 'Home'] });
        await eventually(async () => (await decodes(corp, 'Home')) && (await decodes(home, 'Corp')),
          45_000, 'Corp and Home to decode each other');
        console.log(`both decoding ${Date.now() - started} ms after the pages opened`);
        const pairs = await corp.evaluate(() => window.confab.pairs());
        console.log(`Corp's pairs: ${JSON.stringify(pairs)}`);
        assert.match(pairs.publisher.local, /^tcp /, 'Corp publishes over TCP');
        assert.match(pairs.subscriber.local, /^tcp /, 'Corp receives over TCP');
        const homePairs = await home.evaluate(() => window.confab.pairs());
        assert.match(homePairs.subscriber.local, /^udp /, 'Home stays on UDP');
        const open = await measureCall([corp, home], ['Corp', 'Home'], { seconds: 35, windowS: 30 });
        console.log(`open link:\n${formatRows(open.rows)}`);
        assertHealthy(open.rows, 'open link');
        assert.ok(await metric(base, 'confab_tcp_connections_total') >= 2, 'both of Corp\'s transports use ICE-TCP');

        // The link towards Corp drops to 160 kbit/s: Home's video (~250–500 kbit/s here) cannot fit,
        // its audio (~70 kbit/s with TCP framing) can. Without the server acting the audio would queue behind
        // video in the server's and the kernel's buffers and arrive seconds late or not at all. It acts in
        // two ways: Home's camera (one stream here) is held under Corp's link by REMB (the uplink cap), and
        // while the connection is still backed up its video is skipped to the next keyframe (drop policy).
        const congestedBefore = (await metric(base, CONGESTED)) ?? 0;
        const capsBefore = (await metric(base, 'confab_publisher_bitrate_caps_total')) ?? 0;
        netns.throttle(0, SLOW_KBIT);
        const slow = await measureCall([corp, home], ['Corp', 'Home'], { seconds: 30, windowS: 20 });
        netns.throttle(0, 0);
        console.log(`link to Corp at ${SLOW_KBIT} kbit/s:\n${formatRows(slow.rows)}`);
        const congestedDrops = ((await metric(base, CONGESTED)) ?? 0) - congestedBefore;
        const caps = ((await metric(base, 'confab_publisher_bitrate_caps_total')) ?? 0) - capsBefore;
        console.log(`video packets the server skipped for Corp's backed-up connection: ${congestedDrops}; REMB caps sent to Home: ${caps}`);
        const slowAudio = row(slow.rows, 'Corp', 'Home');
        assert.ok(slowAudio.audioDelivery >= 0.9,
          `Corp keeps Home's audio on the slow link: ${slowAudio.audioReceived}/${slowAudio.audioSent}`);
        assert.ok(slowAudio.maxAudioGapS <= 2, `Corp's longest audio gap from Home: ${slowAudio.maxAudioGapS} s`);
        assert.ok(congestedDrops > 0 || caps > 0,
          'the server acted on the slow link: it capped Home\'s camera or skipped video for the backed-up connection');
        // Corp's own uplink is not throttled, but the server's feedback to it (RTCP, TCP ACKs)
        // crosses the slow link, behind up to 400 ms of the token bucket's queue, so its encoder
        // may slow down and its TCP sends wait for ACKs: what it sends in the window's last ~second
        // arrives after the window (measured 95.9-100 %). Nothing is lost: the restored window
        // below checks 97 % again.
        const up = row(slow.rows, 'Home', 'Corp');
        assert.ok(up.fps >= 10 && up.videoDelivery >= 0.95 && up.audioDelivery >= 0.95,
          `Home keeps receiving Corp: ${up.fps.toFixed(1)} fps, video ${up.videoReceived}/${up.videoSent}, audio ${up.audioReceived}/${up.audioSent}`);

        // The link is back: Home's video to Corp resumes (a keyframe on drain) and stays up.
        const back = await measureCall([corp, home], ['Corp', 'Home'], { seconds: 25, windowS: 15 });
        console.log(`link restored:\n${formatRows(back.rows)}`);
        assertHealthy(back.rows, 'link restored');
      });
    } finally {
      netns.teardown({ ns: net.ns, links: 1 });
    }
  });

test('on loopback, with the server\'s UDP candidates filtered out, a call runs over ICE-TCP for both transports',
  { timeout: 120_000, skip: !BIN && 'CONFAB_BIN not set' }, async () => {
    await withOwnServer({}, async (ctx) => {
      const { base } = ctx;
      const browser = await launch();
      ctx.browsers.push(browser);
      const room = randomRoom('lo-tcp');
      const tcp = await openRoom(browser, room, 'Tcp', { base, captureWidth: 640, tcpOnly: true, simulcast: false });
      const udp = await openRoom(browser, room, 'Udp', { base, captureWidth: 640, simulcast: false });
      ctx.pages.push(tcp, udp);
      await eventually(async () => (await decodes(tcp, 'Udp')) && (await decodes(udp, 'Tcp')), 45_000,
        'Tcp and Udp to decode each other');
      const pairs = await tcp.evaluate(() => window.confab.pairs());
      console.log(`Tcp's pairs: ${JSON.stringify(pairs)}`);
      assert.match(pairs.publisher.local, /^tcp /, 'Tcp publishes over TCP');
      assert.match(pairs.subscriber.local, /^tcp /, 'Tcp receives over TCP');
      const { rows } = await measureCall([tcp, udp], ['Tcp', 'Udp'], { seconds: 25, windowS: 20 });
      console.log(formatRows(rows));
      assertHealthy(rows, 'loopback TCP');
      assert.ok(await metric(base, 'confab_tcp_connections_total') >= 2, 'both of Tcp\'s transports use ICE-TCP');
    });
  });
