// Shared helpers of the browser tests: launching Debian's Chromium headless with a fake camera
// and microphone, opening room pages, polling with timeouts.
import { chromium } from 'playwright-core';

export const BASE = process.env.CONFAB_URL || 'http://127.0.0.1:8080';

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
    ],
  });
}

/**
 * Opens `/rooms/{room}?name={name}` (plus `query`, e.g. `&paid=1`) in a fresh context; keeps the page's
 * console for diagnostics.
 */
export async function openRoom(browser, room, name, query = '') {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  page.logs = [];
  page.on('console', (m) => page.logs.push(`[${name}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => page.logs.push(`[${name}] pageerror: ${e.message}`));
  await page.goto(`${BASE}/rooms/${encodeURIComponent(room)}?name=${encodeURIComponent(name)}${query}`);
  return page;
}

/** Polls `fn` every 250 ms until it returns a truthy value; throws after `ms`. */
export async function eventually(fn, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Per remote participant stats from the page's test hook (`window.confab.stats()`). */
export async function stats(page) {
  return page.evaluate(() => (window.confab ? window.confab.stats() : []));
}

export function randomRoom(prefix) {
  return `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
}

/** Prints what a failed browser test needs: each page's console tail and both transports' states. */
export async function diagnose(pages) {
  for (const p of pages) {
    let states = 'page closed';
    try {
      states = JSON.stringify(await p.evaluate(() => (window.confab ? window.confab.transportStates() : 'no window.confab')));
    } catch { /* page gone */ }
    console.log(`--- ${p.url()}\nstates: ${states}\n${(p.logs || []).slice(-30).join('\n')}`);
  }
}
