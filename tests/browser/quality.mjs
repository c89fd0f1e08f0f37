// Call quality over a window: samples every page's receive and send counters once a second and
// turns them into rates per (receiver, sender): frames decoded per second, video and audio
// packets received against packets the sender sent, the longest stretch without a decoded frame
// or an audio packet. Used by the long-call browser tests and by `measure-call.mjs`, which prints
// the figures for docs/performance.md.

/** One sample of one page: its receive rows (per remote participant), its send counters, the time. */
async function sample(page) {
  return page.evaluate(async () => {
    const c = /** @type {any} */ (window).confab;
    if (!c) return null;
    const [rows, sent] = await Promise.all([c.stats(), c.sendStats()]);
    return { t: performance.timeOrigin + performance.now(), rows, sent };
  });
}

/**
 * Samples `pages` (named by `names`) every `stepMs` for `seconds`, then reports per receiver and
 * sender over the last `windowS` seconds:
 * - `fps`: camera frames decoded per second;
 * - `videoDelivery` / `audioDelivery`: packets the receiver got from the sender / packets the
 *   sender's publisher transport sent, over the same window;
 * - `maxVideoGapS` / `maxAudioGapS`: the longest run of sampling steps in which no frame was decoded / no
 *   audio packet arrived (a resolution of `stepMs`);
 * - `minAudioPps`: the lowest audio packet rate over one step;
 * - `freezes`, `freezeS`: Chromium's own freeze counters over the window.
 * @returns {Promise<{rows: object[], samples: number}>}
 */
export async function measureCall(pages, names, { seconds = 60, windowS = 30, stepMs = 1000, onTick } = {}) {
  const series = pages.map(() => []);
  const start = Date.now();
  while (Date.now() - start < seconds * 1000) {
    const tick = Date.now();
    const got = await Promise.all(pages.map((p) => sample(p).catch(() => null)));
    got.forEach((s, i) => { if (s) series[i].push(s); });
    if (onTick) onTick((Date.now() - start) / 1000, got);
    const wait = stepMs - (Date.now() - tick);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  const rows = [];
  for (const [ri, recv] of series.entries()) {
    const end = recv.at(-1);
    if (!end) continue;
    const from = recv.findIndex((s) => s.t >= end.t - windowS * 1000);
    const win = recv.slice(from);
    for (const [si, sender] of names.entries()) {
      if (si === ri) continue;
      const sent = series[si];
      const row = (s) => s.rows.find((r) => r.name === sender);
      const first = win[0];
      const a = row(first);
      const b = row(end);
      const dt = (end.t - first.t) / 1000;
      // The sender's counters at the instants nearest the window's ends.
      const near = (t) => sent.reduce((best, s) => (Math.abs(s.t - t) < Math.abs(best.t - t) ? s : best), sent[0]);
      const s0 = sent.length ? near(first.t).sent : null;
      const s1 = sent.length ? near(end.t).sent : null;
      let maxVideoGap = 0; let maxAudioGap = 0; let vRun = 0; let aRun = 0; let minAudioPps = Infinity;
      for (let k = 1; k < win.length; k += 1) {
        const p = row(win[k - 1]); const q = row(win[k]);
        if (!p || !q) { vRun += 1; aRun += 1; continue; }
        const step = (win[k].t - win[k - 1].t) / 1000;
        vRun = q.framesDecoded > p.framesDecoded ? 0 : vRun + step;
        aRun = q.audioPacketsReceived > p.audioPacketsReceived ? 0 : aRun + step;
        maxVideoGap = Math.max(maxVideoGap, vRun);
        maxAudioGap = Math.max(maxAudioGap, aRun);
        // Over the interval between the browser's own readings of the counters (the stats'
        // timestamps), not between the samples' arrival: a busy page answers late, and a
        // 1.2 s interval read as 1 s would count as a dip.
        const audioStep = q.audioStatsAt > p.audioStatsAt ? (q.audioStatsAt - p.audioStatsAt) / 1000 : step;
        minAudioPps = Math.min(minAudioPps, (q.audioPacketsReceived - p.audioPacketsReceived) / audioStep);
      }
      rows.push({
        receiver: names[ri],
        sender,
        windowS: Math.round(dt),
        fps: a && b ? (b.framesDecoded - a.framesDecoded) / dt : 0,
        framesSentPerS: s0 && s1 ? (s1.framesSent - s0.framesSent) / dt : null,
        videoReceived: a && b ? b.videoPacketsReceived - a.videoPacketsReceived : 0,
        videoSent: s0 && s1 ? s1.videoPacketsSent - s0.videoPacketsSent : null,
        audioReceived: a && b ? b.audioPacketsReceived - a.audioPacketsReceived : 0,
        audioSent: s0 && s1 ? s1.audioPacketsSent - s0.audioPacketsSent : null,
        maxVideoGapS: maxVideoGap,
        maxAudioGapS: maxAudioGap,
        minAudioPps: Number.isFinite(minAudioPps) ? minAudioPps : 0,
        freezes: a && b ? b.freezeCount - a.freezeCount : 0,
        freezeS: a && b ? b.totalFreezesDuration - a.totalFreezesDuration : 0,
      });
    }
  }
  for (const r of rows) {
    r.videoDelivery = r.videoSent ? r.videoReceived / r.videoSent : 0;
    r.audioDelivery = r.audioSent ? r.audioReceived / r.audioSent : 0;
  }
  return { rows, samples: Math.min(...series.map((s) => s.length)) };
}

/** Totals over every (receiver, sender) row: packets delivered / packets expected. */
export function totals(rows) {
  const sum = (k) => rows.reduce((n, r) => n + (r[k] || 0), 0);
  const delivered = sum('videoReceived') + sum('audioReceived');
  const expected = sum('videoSent') + sum('audioSent');
  return {
    delivered,
    expected,
    ratio: expected ? delivered / expected : 0,
    minFps: Math.min(...rows.map((r) => r.fps)),
    maxVideoGapS: Math.max(...rows.map((r) => r.maxVideoGapS)),
    maxAudioGapS: Math.max(...rows.map((r) => r.maxAudioGapS)),
  };
}

/** One line per row, for logs. */
export function formatRows(rows) {
  return rows.map((r) => `${r.receiver} <- ${r.sender}: ${r.fps.toFixed(1)} fps `
    + `(sent ${r.framesSentPerS?.toFixed(1)}), video ${r.videoReceived}/${r.videoSent} `
    + `(${(100 * r.videoDelivery).toFixed(1)} %), audio ${r.audioReceived}/${r.audioSent} `
    + `(${(100 * r.audioDelivery).toFixed(1)} %), max gap video ${r.maxVideoGapS.toFixed(1)} s `
    + `audio ${r.maxAudioGapS.toFixed(1)} s, min audio ${r.minAudioPps.toFixed(0)} pkt/s, `
    + `freezes ${r.freezes} (${r.freezeS.toFixed(1)} s)`).join('\n');
}

/** Camera frames `page` has decoded from the participant named `from` (0 if none yet). */
export async function frames(page, from) {
  const rows = await page.evaluate(() => /** @type {any} */ (window).confab.stats());
  const row = rows.find((/** @type {any} */ r) => r.name === from);
  return row ? row.framesDecoded : 0;
}

/**
 * The longest time between two consecutive increases of `samples[k].v` (`{t, v}`, t in ms) from
 * `after` on, ms; a stream that never resumed stalls until the last sample.
 */
export function longestStall(samples, after) {
  let last = null;
  let worst = 0;
  for (let k = 1; k < samples.length; k += 1) {
    if (samples[k].v > samples[k - 1].v) {
      if (last !== null && samples[k].t >= after) worst = Math.max(worst, samples[k].t - last);
      last = samples[k].t;
    }
  }
  if (last !== null && samples.length) worst = Math.max(worst, samples.at(-1).t - Math.max(last, after));
  return worst;
}
