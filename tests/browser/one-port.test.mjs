// One port: a participant whose network lets only TCP to the server's one port out (no UDP, no
// other port; no TURN server) loads the page over HTTPS, signals over WSS and sends and receives
// media over ICE-TCP, all on that port (`--tls self-signed`: the front door tells TLS from
// RFC 4571-framed STUN by the first bytes). The other participant is on an open network (UDP).
// The walled client runs in a network namespace of its own (needs root; skipped loudly where
// namespaces cannot be made, never on CI, which runs as root). Runs its own server (CONFAB_BIN).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pagesAcross, eventually, stats, withOwnServer, metric } from './helpers.mjs';
import { measureCall, formatRows } from './quality.mjs';
import * as netns from './netns.mjs';

const BIN = process.env.CONFAB_BIN;
const why = !BIN ? 'CONFAB_BIN not set' : netns.unavailable();
if (why && BIN) console.log(`*** one-port test NOT RUN: ${why} ***`);

test('page, signaling and media through one TLS port, everything else dropped',
  { timeout: 150_000, skip: why || false }, async () => {
    const net = netns.setup({ links: 1, net: 253 });
    try {
      await withOwnServer({
        listen: net.links[0].server,
        tls: true,
        args: ['--tls', 'self-signed', '--public-ip', net.links[0].server],
      }, async (ctx) => {
        const { base, port } = ctx;
        netns.onlyTcpPort(net.ns, 0, port);
        const started = Date.now();
        const [corp, home] = await pagesAcross(ctx, { chromium: netns.chromiumIn(net.ns), prefix: 'oneport', names: ['Corp', 'Home'], ignoreCertificateErrors: true });
        assert.ok(corp.url().startsWith('https://'), `the page came over HTTPS: ${corp.url()}`);
        const first = { corp: null, home: null };
        await eventually(async () => {
          const [a, b] = await Promise.all([stats(corp), stats(home)]);
          if (first.corp === null && (a.find((r) => r.name === 'Home')?.framesDecoded ?? 0) > 0) first.corp = Date.now() - started;
          if (first.home === null && (b.find((r) => r.name === 'Corp')?.framesDecoded ?? 0) > 0) first.home = Date.now() - started;
          return first.corp !== null && first.home !== null;
        }, 45_000, 'Corp and Home to decode each other');
        console.log(`first frame after the pages opened: Corp (one TCP port) ${first.corp} ms, Home (UDP) ${first.home} ms`);
        const pairs = await corp.evaluate(() => window.confab.pairs());
        console.log(`Corp's pairs: ${JSON.stringify(pairs)}`);
        for (const role of ['publisher', 'subscriber']) {
          assert.match(pairs[role].local, /^tcp /, `Corp's ${role} transport is on TCP`);
          assert.ok(pairs[role].remote.endsWith(`:${port} host`) || pairs[role].remote.includes(`:${port} `),
            `Corp's ${role} transport goes to the one port ${port}: ${pairs[role].remote}`);
        }
        const ws = await corp.evaluate(() => window.confab._ws?.url);
        assert.ok(ws.startsWith(`wss://${net.links[0].server}:${port}/`), `signaling over WSS on the one port: ${ws}`);
        const { rows } = await measureCall([corp, home], ['Corp', 'Home'], { seconds: 25, windowS: 20 });
        console.log(formatRows(rows));
        for (const r of rows) {
          const who = `${r.receiver} <- ${r.sender}`;
          assert.ok(r.fps >= 15, `${who}: ${r.fps.toFixed(1)} fps over 20 s`);
          assert.ok(r.videoDelivery >= 0.95, `${who}: video ${r.videoReceived}/${r.videoSent}`);
          assert.ok(r.audioDelivery >= 0.95, `${who}: audio ${r.audioReceived}/${r.audioSent}`);
        }
        assert.ok(await metric(base, 'confab_tcp_connections_total') >= 2, 'ICE-TCP connections came through the front door');
      });
    } finally {
      netns.teardown({ ns: net.ns, links: 1 });
    }
  });
