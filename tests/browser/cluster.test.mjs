// Two nodes of one deployment (Redis on 127.0.0.1:6379, which scripts/ensure-redis.sh starts when
// missing): Ada opens a room from node A's page, Bob opens the same room link on node B. B answers
// Bob's join with `redirect` to A; Bob's page follows it on its own and the two see each other,
// decoding video both ways for 10 s at the rate it is sent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch, openRoom, eventually, stats, randomRoom, freePort, startServer, diagnose } from './helpers.mjs';
import { measureCall, formatRows } from './quality.mjs';

const BIN = process.env.CONFAB_BIN;

test('a room link opened on the other node follows the redirect and joins the room where it is hosted',
  { timeout: 120_000, skip: BIN ? false : 'CONFAB_BIN not set' }, async () => {
    const run = Math.random().toString(36).slice(2, 10);
    const saved = { ...process.env };
    // Both nodes inherit these: the same token secret, the same Redis.
    process.env.REDIS_URL = 'redis://127.0.0.1:6379/0';
    process.env.CONFAB_JWT_SECRET = `cluster-browser-secret-${run}-0123456789abcdef`;
    const nodes = [];
    const pages = [];
    const logs = [[], []];
    let browser;
    try {
      for (const [i, name] of ['a', 'b'].entries()) {
        const port = await freePort();
        const dataDir = mkdtempSync(join(tmpdir(), `confab-node-${name}-`));
        const base = `http://127.0.0.1:${port}`;
        const child = await startServer(port, dataDir, logs[i], {
          args: ['--public-ip', '127.0.0.1', '--node-id', `${name}-${run}`, '--node-url', base, '--cluster-ttl-s', '5'],
        });
        nodes.push({ base, dataDir, child });
      }
      browser = await launch();
      const room = randomRoom('cluster');
      const ada = await openRoom(browser, room, 'Ada', { base: nodes[0].base, simulcast: false });
      pages.push(ada);
      await eventually(() => ada.evaluate(() => window.confab.state === 'connected'), 30_000, 'Ada to join on node A');
      const bob = await openRoom(browser, room, 'Bob', { base: nodes[1].base, simulcast: false });
      pages.push(bob);
      const from = (p, who) => async () => (await stats(p)).find((r) => r.name === who)?.framesDecoded > 5;
      await eventually(async () => (await from(bob, 'Ada')()) && (await from(ada, 'Bob')()), 45_000,
        'Ada and Bob to decode each other');
      assert.equal(await ada.evaluate(() => window.confab._nodeOrigin), null, "Ada's page stayed on A");
      assert.equal(await bob.evaluate(() => window.confab._nodeOrigin), nodes[0].base, "Bob's page followed B to A");
      const { rows } = await measureCall([ada, bob], ['Ada', 'Bob'], { seconds: 12, windowS: 10 });
      console.log(formatRows(rows));
      for (const r of rows) {
        assert.ok(r.fps >= 0.9 * r.framesSentPerS, `${r.receiver} <- ${r.sender}: ${r.fps.toFixed(1)} fps of ${r.framesSentPerS.toFixed(1)} sent`);
        assert.ok(r.audioDelivery >= 0.95, `${r.receiver} <- ${r.sender}: audio ${r.audioReceived}/${r.audioSent}`);
      }
    } catch (e) {
      await diagnose(pages);
      for (const [i, l] of logs.entries()) console.log(`--- node ${i} output tail\n${l.join('').split('\n').slice(-30).join('\n')}`);
      throw e;
    } finally {
      await browser?.close();
      for (const n of nodes) {
        n.child.kill('SIGKILL');
        rmSync(n.dataDir, { recursive: true, force: true });
      }
      for (const k of ['REDIS_URL', 'CONFAB_JWT_SECRET']) {
        if (saved[k] === undefined) delete process.env[k]; else process.env[k] = saved[k];
      }
    }
  });
