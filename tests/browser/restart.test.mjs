// A server that dies mid-call and comes back: the pages show reconnecting, rejoin the room on the
// new process and decode each other again. Runs its own server (binary from CONFAB_BIN, as
// scripts/test-browser.sh passes it); skipped without CONFAB_BIN.
import { test } from 'node:test';
import { launch, openRoom, eventually, stats, randomRoom, startServer, withOwnServer } from './helpers.mjs';

const BIN = process.env.CONFAB_BIN;

test('a server crash mid-call: pages reconnect to the restarted server and decode again',
  { timeout: 90_000, skip: BIN ? false : 'CONFAB_BIN not set' }, () => withOwnServer({}, async (ctx) => {
    const { pages, log } = ctx;
    const browser = await launch();
    ctx.browsers.push(browser);
    const room = randomRoom('restart');
    for (const name of ['Ada', 'Bob']) pages.push(await openRoom(browser, room, name, { base: ctx.base }));
    const decodesOther = async (page, other) =>
      (await stats(page)).some((r) => r.name === other && r.framesDecoded > 5);
    await eventually(async () => (await decodesOther(pages[0], 'Bob')) && (await decodesOther(pages[1], 'Ada')),
      30_000, 'Ada and Bob to decode each other');
    for (const p of pages) {
      await p.evaluate(() => {
        window.seenStates = [];
        window.confab.addEventListener('statechange', (e) => window.seenStates.push(e.detail.state));
      });
    }

    ctx.server.kill('SIGKILL');
    await new Promise((r) => ctx.server.once('exit', r));
    for (const p of pages) {
      await eventually(() => p.evaluate(() => window.seenStates.includes('reconnecting')), 10_000,
        'the page to show reconnecting');
    }
    ctx.server = await startServer(ctx.port, ctx.dataDir, log);
    for (const p of pages) {
      await eventually(() => p.evaluate(() => window.confab.state === 'connected'), 30_000,
        'the page to reconnect to the new server');
    }
    await eventually(async () => (await decodesOther(pages[0], 'Bob')) && (await decodesOther(pages[1], 'Ada')),
      20_000, 'Ada and Bob to decode each other after the restart');
    }));
