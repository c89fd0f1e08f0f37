// Shared helpers of the browser tests: launching Debian's Chromium headless with a fake camera
// and microphone, opening room pages, polling with timeouts.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, createWriteStream, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BASE = process.env.CONFAB_URL || 'http://127.0.0.1:8080';

/**
 * Launches headless Chromium with fake devices. `executablePath` replaces Debian's binary (e.g. a
 * wrapper that runs it in a network namespace); `secureOrigin` is an `http://host:port` origin other
 * than localhost to treat as secure (getUserMedia needs it).
 */
export async function launch({ executablePath, secureOrigin, ignoreCertificateErrors = false, audioFile } = {}) {
  return chromium.launch({
    executablePath: executablePath || process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
      ...(secureOrigin && secureOrigin.startsWith('http:') ? [`--unsafely-treat-insecure-origin-as-secure=${secureOrigin}`] : []),
      // A test server's self-signed certificate (`--tls self-signed`).
      ...(ignoreCertificateErrors ? ['--ignore-certificate-errors'] : []),
      // Every fake microphone plays this WAV (looped) instead of Chromium's short beeps.
      ...(audioFile ? [`--use-file-for-fake-audio-capture=${audioFile}`] : []),
    ],
  });
}

/**
 * Opens `/rooms/{room}?name={name}` (plus `query`, e.g. `&paid=1`, and `hash`, e.g. `#token=…`) of the
 * server at `base` in a fresh context; keeps the page's console for diagnostics. `captureWidth` caps the camera the page asks
 * for (16:9): long calls cap it at 640 so three 720p encoders and six decoders do not starve the
 * 2-core machine (the fake camera then keeps its 20 fps; forwarding does not depend on the size).
 * The page publishes its camera in simulcast layers unless `simulcast: false` (`?simulcast=0`) asks
 * for one stream; `true` says layers explicitly (`?simulcast=1`): tests that compare what a receiver got with
 * the sender's own counters (`measureCall`) need one stream, as the sender's counters sum its
 * simulcast layers while a receiver gets one.
 */
export async function openRoom(browser, room, name, { query = '', hash = '', base = BASE, captureWidth, tcpOnly = false, simulcast } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  if (tcpOnly) await context.addInitScript(TCP_ONLY);
  if (captureWidth) await capCamera(context, captureWidth);
  const page = await context.newPage();
  page.logs = [];
  page.on('console', (m) => page.logs.push(`[${name}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => page.logs.push(`[${name}] pageerror: ${e.message}`));
  const layers = simulcast === true ? '&simulcast=1' : simulcast === false ? '&simulcast=0' : '';
  await page.goto(`${base}/rooms/${encodeURIComponent(room)}?name=${encodeURIComponent(name)}${layers}${query}${hash}`);
  return page;
}

/**
 * An access token minted the way another backend would (`confab token` with the server's secret
 * in CONFAB_DATA_DIR, which scripts/test-browser.sh sets along with CONFAB_BIN).
 * @param {{identity: string, name: string, role: string, room: string}} claims
 */
export async function mintToken({ identity, name, role, room }) {
  const { execFileSync } = await import('node:child_process');
  if (!process.env.CONFAB_DATA_DIR || !process.env.CONFAB_BIN) {
    throw new Error('scripts/test-browser.sh sets CONFAB_DATA_DIR and CONFAB_BIN (the server\'s token secret)');
  }
  return execFileSync(process.env.CONFAB_BIN, ['token', '--identity', identity, '--name', name, '--role', role,
    '--room', room, '--data-dir', process.env.CONFAB_DATA_DIR],
  { env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CONFAB_JWT_SECRET'))) }).toString().trim();
}

/**
 * Writes a WAV file of a steady `hz` sine at `amplitude` (0..1 of full scale), mono 16-bit 48 kHz,
 * `seconds` long, and returns its path: a fake microphone that "speaks" all the time (its
 * RFC 6464 audio level is about -13 dBov at amplitude 0.3).
 */
export function toneWav(dir, { hz = 440, amplitude = 0.3, seconds = 2 } = {}) {
  const rate = 48_000;
  const n = rate * seconds;
  const buf = Buffer.alloc(44 + n * 2);
  buf.write('RIFF', 0); buf.writeUInt32LE(36 + n * 2, 4); buf.write('WAVE', 8);
  buf.write('fmt ', 12); buf.writeUInt32LE(16, 16); buf.writeUInt16LE(1, 20); buf.writeUInt16LE(1, 22);
  buf.writeUInt32LE(rate, 24); buf.writeUInt32LE(rate * 2, 28); buf.writeUInt16LE(2, 32); buf.writeUInt16LE(16, 34);
  buf.write('data', 36); buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i += 1) buf.writeInt16LE(Math.round(Math.sin((2 * Math.PI * hz * i) / rate) * amplitude * 32767), 44 + i * 2);
  const path = join(dir, `tone-${hz}.wav`);
  writeFileSync(path, buf);
  return path;
}

/** Caps the camera every page of `context` asks for at `width` px wide (16:9). */
export async function capCamera(context, width) {
  await context.addInitScript((w) => {
    const md = navigator.mediaDevices;
    const get = md.getUserMedia.bind(md);
    md.getUserMedia = (c) => get(c && c.video
      ? { ...c, video: { ...(typeof c.video === 'object' ? c.video : {}), width: { ideal: w }, height: { ideal: Math.round((w * 9) / 16) } } }
      : c);
  }, width);
}

/**
 * An init script that keeps a page's peer connections off UDP without a firewall: the server's UDP
 * candidates are cut from every SDP it sends and from trickled candidates, so the only pair
 * Chromium can form is with the server's passive ICE-TCP candidate (the loopback stand-in for a
 * network that drops UDP, where network namespaces cannot be made).
 */
function TCP_ONLY() {
  const proto = RTCPeerConnection.prototype;
  const udp = /^a=candidate:\S+ \d+ udp /i;
  const setRemote = proto.setRemoteDescription;
  proto.setRemoteDescription = function (desc) {
    if (!desc?.sdp) return setRemote.call(this, desc);
    const sdp = desc.sdp.split('\r\n').filter((l) => !udp.test(l)).join('\r\n');
    return setRemote.call(this, { type: desc.type, sdp });
  };
  const addCandidate = proto.addIceCandidate;
  proto.addIceCandidate = function (c, ...rest) {
    if (c?.candidate && / udp /i.test(c.candidate)) return Promise.resolve();
    return addCandidate.call(this, c, ...rest);
  };
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

const STATIC_DIR = new URL('../../static', import.meta.url).pathname;

/** A TCP port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/**
 * Starts `confab serve` (binary `CONFAB_BIN`) on `127.0.0.1:port` with `args` (default: media
 * announced on 127.0.0.1 only); resolves once /healthz answers 200. Its output goes to `log` (an
 * array, for diagnostics). `listen` is the HTTP address (default `127.0.0.1:port`).
 */
export async function startServer(port, dataDir, log, { args = ['--public-ip', '127.0.0.1'], listen, tls = false } = {}) {
  const argv = ['serve', '--listen', listen || `127.0.0.1:${port}`, '--media-port', '0', ...args,
    '--data-dir', dataDir, '--static-dir', STATIC_DIR];
  const child = spawn(process.env.CONFAB_BIN, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  // CONFAB_SERVER_LOG=<file>: the whole server output there too (the failure report keeps only its tail).
  const file = process.env.CONFAB_SERVER_LOG ? createWriteStream(process.env.CONFAB_SERVER_LOG, { flags: 'a' }) : null;
  const keep = (b) => { file?.write(b); log.push(b.toString()); if (log.length > 400) log.splice(0, 100); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const host = listen ? listen.replace(/:\d+$/, '') : '127.0.0.1';
  await eventually(async () => {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    const res = await get(`${tls ? 'https' : 'http'}://${host}:${port}/healthz`).catch(() => null);
    return res?.status === 200;
  }, 30_000, `the server on port ${port} to answer /healthz`);
  return child;
}

/**
 * GET `url` (http or https; a test server's self-signed certificate is accepted): `{status, body}`.
 */
export function get(url) {
  const mod = url.startsWith('https:') ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.get(url, { rejectUnauthorized: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${url} timed out`)));
  });
}

/** A counter or gauge from the server's Prometheus text at `base` (null when absent). */
export async function metric(base, name) {
  const { body: text } = await get(`${base}/metrics`);
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : null;
}

/**
 * Runs `body(ctx)` against a server of its own (see `startServer` for `options`), then cleans up:
 * closes the browsers in `ctx.browsers`, kills `ctx.server` (a test that restarts it assigns the
 * new one), removes the data dir. On failure it prints each page's state and console
 * (`ctx.pages`) and the server's output tail first. `ctx` = `{ port, base, dataDir, log, server,
 * browsers, pages }`; `base` is the HTTP origin.
 */
export async function withOwnServer(options, body) {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'confab-test-'));
  const host = options.listen || '127.0.0.1';
  const ctx = { port, base: `${options.tls ? 'https' : 'http'}://${host}:${port}`, dataDir, log: [], server: null, browsers: [], pages: [] };
  try {
    ctx.server = await startServer(port, dataDir, ctx.log, { ...options, listen: `${host}:${port}` });
    await body(ctx);
  } catch (e) {
    await diagnose(ctx.pages);
    console.log(`--- server output tail\n${ctx.log.join('').split('\n').slice(-40).join('\n')}`);
    throw e;
  } finally {
    for (const b of ctx.browsers) await b.close().catch(() => {});
    ctx.server?.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Starts recording the `participant-joined` / `participant-left` events `page` sees. */
export async function recordMembership(page) {
  await page.evaluate(() => {
    const w = /** @type {any} */ (window);
    w.membership = [];
    for (const type of ['participant-joined', 'participant-left']) {
      w.confab.addEventListener(type, () => w.membership.push(type));
    }
  });
}

/** The membership events `page` saw since {@link recordMembership}, in order. */
export async function membership(page) {
  return page.evaluate(() => /** @type {any} */ (window).membership);
}

/**
 * Two participants in one fresh room of the server in `ctx` (see {@link withOwnServer}): the first
 * in a Chromium that runs inside network namespace `ns` (`chromium` is `netns.chromiumIn(ns)`),
 * the second in one on this machine. Both browsers and pages go into `ctx` for clean-up and
 * diagnostics. Cameras capped at 640 px wide. Resolves to `[insidePage, outsidePage]`.
 */
export async function pagesAcross(ctx, { chromium, prefix, names: [inName, outName], ignoreCertificateErrors = false, simulcast = false }) {
  const { base } = ctx;
  const opts = { secureOrigin: base, ignoreCertificateErrors };
  const inside = await launch({ ...opts, executablePath: chromium });
  ctx.browsers.push(inside);
  const outside = await launch(opts);
  ctx.browsers.push(outside);
  const room = randomRoom(prefix);
  const a = await openRoom(inside, room, inName, { base, captureWidth: 640, simulcast });
  const b = await openRoom(outside, room, outName, { base, captureWidth: 640, simulcast });
  ctx.pages.push(a, b);
  return [a, b];
}
