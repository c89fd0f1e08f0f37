#!/usr/bin/env node
// Join time in the browser: N-1 pages are in a room; the Nth opens the room link and we time, from
// navigation start, each step until it decodes every remote video (getStats framesDecoded > 0):
// token fetched, WebSocket open, `joined`, devices granted, each transport connected, first frame
// on screen of every remote camera (requestVideoFrameCallback in the page, not getStats polling).
//   CONFAB_URL=http://127.0.0.1:8080 [CAPTURE_WIDTH=640] node tests/browser/measure-join.mjs [pages=3] [runs=5]
// (CAPTURE_WIDTH caps the cameras of the pages already in the room, to keep the machine's CPU for the
// page being timed.)
import { launch, openRoom, randomRoom, stats, capCamera, BASE } from './helpers.mjs';

const n = Number(process.argv[2] || 3);
const runs = Number(process.argv[3] || 5);
const NAMES = ['Ada', 'Bob', 'Cy', 'Dee', 'Eve', 'Fay'];

// Recorded in the page, in ms since navigation start.
const HOOKS = () => {
  const t = (window.__t = {});
  const mark = (k) => { if (!(k in t)) t[k] = Math.round(performance.now()); };
  const f = window.fetch;
  window.fetch = async (...a) => {
    const tok = String(a[0]).includes('guest-token');
    if (tok) mark('token_asked');
    const r = await f(...a);
    if (tok) mark('token');
    return r;
  };
  document.addEventListener('DOMContentLoaded', () => mark('dom_loaded'));
  // Main-thread tasks over 50 ms (the page's own scripts, layout, media start-up), for diagnosis.
  window.__long = [];
  new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push([Math.round(e.startTime), Math.round(e.duration)]); })
    .observe({ type: 'longtask', buffered: true });
  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(...a) {
      super(...a);
      this.addEventListener('open', () => mark('ws_open'));
      this.addEventListener('message', (e) => { try { const m = JSON.parse(e.data); mark(`msg_${m.type}`); } catch { /* binary */ } });
    }
  };
  const md = navigator.mediaDevices;
  const gum = md.getUserMedia.bind(md);
  md.getUserMedia = async (c) => { const s = await gum(c); mark('devices'); return s; };
  // First frame on screen per remote video, seen by the page itself (requestVideoFrameCallback on
  // every <video> given a remote track), so the timed page is not also polled with getStats.
  window.__frames = {};
  const desc = Object.getOwnPropertyDescriptor(HTMLMediaElement.prototype, 'srcObject');
  Object.defineProperty(HTMLMediaElement.prototype, 'srcObject', {
    configurable: true,
    get() { return desc.get.call(this); },
    set(v) {
      desc.set.call(this, v);
      const track = v && v.getVideoTracks ? v.getVideoTracks()[0] : null;
      if (!track || !(this instanceof HTMLVideoElement) || this.closest('[data-key="local"]')) return;
      const id = track.id;
      this.requestVideoFrameCallback(() => { if (!(id in window.__frames)) window.__frames[id] = Math.round(performance.now()); });
    },
  });
  const PC = window.RTCPeerConnection;
  let k = 0;
  window.RTCPeerConnection = class extends PC {
    constructor(...a) {
      const t0 = performance.now();
      super(...a);
      const name = k++ === 0 ? 'pc1' : 'pc2';
      t[`${name}_ctor_ms`] = Math.round(performance.now() - t0);
      mark(`${name}_created`);
      this.addEventListener('connectionstatechange', () => { if (this.connectionState === 'connected') mark(`${name}_connected`); });
    }
  };
};

const browser = await launch();
const totals = [];
const fromToken = [];
try {
  for (let r = 0; r < runs; r += 1) {
    const room = randomRoom('join');
    const pages = [];
    const captureWidth = Number(process.env.CAPTURE_WIDTH) || undefined;
    for (const name of NAMES.slice(0, n - 1)) pages.push(await openRoom(browser, room, name, { captureWidth }));
    const deadline = Date.now() + 30_000;
    while (!(await Promise.all(pages.map((p) => stats(p)))).every((st) => st.every((x) => x.framesDecoded > 0) && st.length === n - 2)) {
      if (Date.now() > deadline) throw new Error('the first pages did not connect');
      await new Promise((res) => setTimeout(res, 100));
    }
    const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
    await context.addInitScript(HOOKS);
    // The timed page's own camera too: on 2 cores a 720p encoder beside two others decides the
    // join time more than anything the server or the protocol does.
    if (captureWidth) await capCamera(context, captureWidth);
    const page = await context.newPage();
    await page.goto(`${BASE}/rooms/${room}?name=${NAMES[n - 1]}`);
    // Done when every remote camera has put a frame on screen: read from the page's own record
    // every 100 ms (a property read, not getStats, so the measurement costs the page nothing).
    let all = null;
    const end = Date.now() + 20_000;
    while (!all && Date.now() < end) {
      all = await page.evaluate((want) => {
        const at = Object.values(window.__frames || {});
        return at.length >= want ? Math.max(...at) : null;
      }, n - 1);
      if (!all) await new Promise((res) => setTimeout(res, 100));
    }
    // Cross-check with the decoder's own count once (after the fact, not while timing).
    const decoding = all && await page.evaluate(async () => (await window.confab.stats()).filter((x) => x.framesDecoded > 0).length);
    if (all && decoding < n - 1) throw new Error(`frames on screen for ${n - 1} videos but ${decoding} decoding`);
    const t = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const res = performance.getEntriesByType('resource').filter((e) => /\.(js|css)$/.test(e.name));
      return { ...window.__t, html: Math.round(nav.responseEnd),
        assets: Math.round(Math.max(0, ...res.map((e) => e.responseEnd))),
        ...(window.__long.length ? { long_tasks: window.__long.map(([at, ms]) => `${at}+${ms}`).join(' ') } : {}) };
    });
    t.all_decoding = all;
    totals.push(all);
    if (all && t.token) fromToken.push(all - t.token);
    console.log(JSON.stringify(t));
    await context.close();
    for (const p of pages) await p.context().close();
  }
} finally {
  await browser.close();
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
// From navigation start (page load included), and from the token request's answer (the page's
// script is running: what the server and the protocol decide).
console.log(JSON.stringify({ pages: n, runs, nav_to_all_decoding_ms: [...totals].sort((a, b) => a - b),
  median: median(totals), token_to_all_decoding_ms: [...fromToken].sort((a, b) => a - b), median_from_token: median(fromToken) }));
