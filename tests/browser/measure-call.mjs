#!/usr/bin/env node
// Prints call-quality figures for N headless Chromium pages in one room of a running server:
//   CONFAB_URL=http://127.0.0.1:8080 [CAPTURE_WIDTH=640] node tests/browser/measure-call.mjs [pages=3] [seconds=60] [window=30]
// Each page is a separate browser context with the fake camera (20 fps) and microphone. Output: one
// line per (receiver, sender) and a JSON summary line (packets delivered / expected, lowest fps).
// With CONFAB_PID set (the server's pid), also the server's CPU time per forwarded packet over the
// measured window (from /proc/<pid>/stat and the server's /metrics).

/** The server's CPU time so far, µs (user + system, from /proc/<pid>/stat), or null. */
function serverCpuUs() {
  const pid = process.env.CONFAB_PID;
  if (!pid) return null;
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15)
  return (ticks * 1e6) / 100; // USER_HZ is 100 on Linux
}


import { readFileSync } from 'node:fs';
import { launch, openRoom, randomRoom, stats, metric, BASE } from './helpers.mjs';
import { measureCall, totals, formatRows } from './quality.mjs';

const n = Number(process.argv[2] || 3);
const seconds = Number(process.argv[3] || 60);
const windowS = Number(process.argv[4] || 30);
const NAMES = ['Ada', 'Bob', 'Cy', 'Dee', 'Eve', 'Fay', 'Gus', 'Hal'].slice(0, n);

const browser = await launch();
try {
  const room = randomRoom('measure');
  const pages = [];
  // One stream per camera: the figures compare what arrives with what the sender counts as sent.
  for (const name of NAMES) pages.push(await openRoom(browser, room, name, { captureWidth: Number(process.env.CAPTURE_WIDTH) || undefined, simulcast: false }));
  // Wait until everyone decodes everyone, then measure.
  const deadline = Date.now() + 60_000;
  for (;;) {
    const all = await Promise.all(pages.map((p) => stats(p)));
    if (all.every((st) => st.length === n - 1 && st.every((r) => r.framesDecoded > 0))) break;
    if (Date.now() > deadline) throw new Error('pages did not all decode each other within 60 s');
    await new Promise((r) => setTimeout(r, 250));
  }
  const cpu0 = serverCpuUs();
  const fwd0 = await metric(BASE, 'confab_rtp_forwarded_packets_total');
  const t0 = Date.now();
  const { rows } = await measureCall(pages, NAMES, {
    seconds,
    windowS,
    onTick: (t, got) => {
      if (Math.round(t) % 10 === 0) {
        const fps = got.map((s) => (s ? s.rows.map((r) => r.framesDecoded).join('/') : '-')).join(' ');
        process.stderr.write(`t=${t.toFixed(0)}s frames ${fps}\n`);
      }
    },
  });
  const cpu1 = serverCpuUs();
  const fwd1 = await metric(BASE, 'confab_rtp_forwarded_packets_total');
  const server = {
    forwardedPerS: fwd1 != null ? (fwd1 - fwd0) / ((Date.now() - t0) / 1000) : null,
    cpuPercent: cpu1 != null ? (100 * (cpu1 - cpu0)) / ((Date.now() - t0) * 1000) : null,
    cpuUsPerForwarded: cpu1 != null && fwd1 > fwd0 ? (cpu1 - cpu0) / (fwd1 - fwd0) : null,
  };
  console.log(formatRows(rows));
  const pairs = await Promise.all(pages.map((p) => p.evaluate(() => window.confab.pairs())));
  pairs.forEach((p, i) => console.log(`${NAMES[i]} pairs: ${JSON.stringify(p)}`));
  const sent = await Promise.all(pages.map((p) => p.evaluate(() => window.confab.sendStats())));
  sent.forEach((s, i) => console.log(`${NAMES[i]} sends ${s.frameSize}, limited by ${s.qualityLimitation}`));
  console.log(JSON.stringify({ pages: n, seconds, windowS, ...totals(rows), server }));
} finally {
  await browser.close();
}
