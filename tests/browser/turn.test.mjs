// An operator's TURN server, handed to clients with --ice-server: a participant that can reach
// only the TURN server (not the SFU's media address) joins through a relay, with the time-limited
// credentials the server put in `joined` (TURN REST convention; coturn's use-auth-secret checks
// them). A real coturn (Debian's) on this machine; the walled participant in a network namespace
// of its own (needs root; skipped loudly where namespaces cannot be made, never on CI, which runs
// as root). Runs its own server (CONFAB_BIN).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { pagesAcross, eventually, stats, withOwnServer, freePort } from './helpers.mjs';
import { measureCall, formatRows } from './quality.mjs';
import * as netns from './netns.mjs';

const BIN = process.env.CONFAB_BIN;
const haveTurn = (() => { try { execFileSync('turnserver', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; } })();
const why = !BIN ? 'CONFAB_BIN not set' : (netns.unavailable() || (haveTurn ? null : 'coturn (turnserver) is not installed'));
if (why && BIN) console.log(`*** TURN test NOT RUN: ${why} ***`);

test('a participant that reaches only the operator\'s TURN server joins through a relay',
  { timeout: 150_000, skip: why || false }, async () => {
    const net = netns.setup({ links: 1, net: 254 });
    const secret = randomBytes(24).toString('hex');
    const turnPort = await freePort();
    const turnLog = [];
    // Relays to the SFU's media address (loopback: unreachable from the namespace except so).
    const turn = spawn('turnserver', ['-n', '--no-cli', '--no-tls', '--no-dtls', '--fingerprint',
      `--listening-ip=${net.links[0].server}`, `--listening-port=${turnPort}`, `--relay-ip=${net.links[0].server}`,
      '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm=confab.test',
      '--allow-loopback-peers', '--min-port=49160', '--max-port=49260', '--log-file=stdout', '--simple-log'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
    turn.stdout.on('data', (b) => { turnLog.push(b.toString()); if (turnLog.length > 200) turnLog.shift(); });
    turn.stderr.on('data', (b) => turnLog.push(b.toString()));
    process.env.CONFAB_TURN_SECRET = secret; // the server inherits it (never on its command line)
    try {
      await withOwnServer({
        listen: net.links[0].server,
        args: ['--public-ip', '127.0.0.1', '--ice-server', `turn:${net.links[0].server}:${turnPort}?transport=udp`],
      }, async (ctx) => {
        const [relayed, local] = await pagesAcross(ctx, { chromium: netns.chromiumIn(net.ns), prefix: 'turn', names: ['Relayed', 'Local'] });
        const decodes = async (page, from) => ((await stats(page)).find((r) => r.name === from)?.framesDecoded ?? 0) > 0;
        await eventually(async () => (await decodes(relayed, 'Local')) && (await decodes(local, 'Relayed')),
          45_000, 'Relayed and Local to decode each other');
        const given = await relayed.evaluate(() => window.confab.rtcConfig.iceServers);
        assert.equal(given?.[0]?.urls?.[0], `turn:${net.links[0].server}:${turnPort}?transport=udp`, 'the TURN server came with joined');
        assert.match(given[0].username, /^\d+:/, 'a time-limited username (expiry:user)');
        const pairs = await relayed.evaluate(() => window.confab.pairs());
        console.log(`Relayed's pairs: ${JSON.stringify(pairs)}`);
        for (const role of ['publisher', 'subscriber']) {
          assert.match(pairs[role].local, / relay$/, `Relayed's ${role} transport goes through the TURN relay`);
        }
        const { rows } = await measureCall([relayed, local], ['Relayed', 'Local'], { seconds: 20, windowS: 15 });
        console.log(formatRows(rows));
        for (const r of rows) {
          assert.ok(r.fps >= 15, `${r.receiver} <- ${r.sender}: ${r.fps.toFixed(1)} fps`);
          assert.ok(r.videoDelivery >= 0.95, `${r.receiver} <- ${r.sender}: video ${r.videoReceived}/${r.videoSent}`);
        }
      });
    } catch (e) {
      console.log(`--- coturn output tail\n${turnLog.join('').split('\n').slice(-30).join('\n')}`);
      throw e;
    } finally {
      delete process.env.CONFAB_TURN_SECRET;
      turn.kill('SIGKILL');
      netns.teardown({ ns: net.ns, links: 1 });
    }
  });
