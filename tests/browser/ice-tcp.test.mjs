// A participant on a network that blocks UDP (no TURN server): its UDP to the server is dropped
// silently both ways, as a corporate firewall does. Chromium gathers only active TCP candidates;
// the server offers passive ICE-TCP (RFC 6544) on its media port, so the call connects over TCP,
// and media flows both ways with a participant on UDP. The client runs in a network namespace of
// its own (needs root; skipped loudly where namespaces cannot be made, never on CI, which runs as
// root). Runs its own server (CONFAB_BIN).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pagesAcross, eventually, stats, withOwnServer, metric } from './helpers.mjs';
import { measureCall, formatRows } from './quality.mjs';
import * as netns from './netns.mjs';

const BIN = process.env.CONFAB_BIN;
const why = !BIN ? 'CONFAB_BIN not set' : netns.unavailable();
if (why && BIN) console.log(`*** ICE-TCP test NOT RUN: ${why} ***`);

test('a client whose network drops all UDP joins over ICE-TCP and exchanges media with a UDP participant',
  { timeout: 150_000, skip: why || false }, async () => {
    const net = netns.setup({ links: 1 });
    netns.blockUdp(net.ns, 0);
    try {
      await withOwnServer({ listen: net.links[0].server, args: ['--public-ip', net.links[0].server] }, async (ctx) => {
        const { base } = ctx;
        const started = Date.now();
        const [corp, home] = await pagesAcross(ctx, { chromium: netns.chromiumIn(net.ns), prefix: 'tcp', names: ['Corp', 'Home'] });
        const decodes = async (page, from) => ((await stats(page)).find((r) => r.name === from)?.framesDecoded ?? 0) > 0;
        await eventually(async () => (await decodes(corp, 'Home')) && (await decodes(home, 'Corp')),
          45_000, 'Corp and Home to decode each other');
        console.log(`both decoding ${Date.now() - started} ms after the pages opened`);
        const pairs = await corp.evaluate(() => window.confab.pairs());
        console.log(`Corp's pairs: ${JSON.stringify(pairs)}`);
        assert.match(pairs.publisher.local, /^tcp /, 'Corp publishes over TCP');
        assert.match(pairs.subscriber.local, /^tcp /, 'Corp receives over TCP');
        const homePairs = await home.evaluate(() => window.confab.pairs());
        assert.match(homePairs.subscriber.local, /^udp /, 'Home stays on UDP');
        const { rows } = await measureCall([corp, home], ['Corp', 'Home'], { seconds: 20, windowS: 15 });
        console.log(formatRows(rows));
        for (const r of rows) {
          const who = `${r.receiver} <- ${r.sender}`;
          assert.ok(r.fps >= 15, `${who}: ${r.fps.toFixed(1)} fps over TCP`);
          assert.ok(r.videoDelivery >= 0.97, `${who}: video ${r.videoReceived}/${r.videoSent}`);
          assert.ok(r.audioDelivery >= 0.97, `${who}: audio ${r.audioReceived}/${r.audioSent}`);
        }
        assert.ok(await metric(base, 'confab_tcp_connections_total') >= 2, 'both of Corp\'s transports use ICE-TCP');
      });
    } finally {
      netns.teardown({ ns: net.ns, links: 1 });
    }
  });
