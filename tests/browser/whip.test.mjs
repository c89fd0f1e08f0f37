// WHIP ingest (RFC 9725): a headless Chromium page with none of confab's client code publishes its
// fake camera and microphone the way an encoder does (one POST of an SDP offer with a bearer token,
// no trickle), a room page decodes it at the rate it sends over 20 s, and DELETE on the session's
// Location takes it out of the room.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, openRoom, eventually, stats, randomRoom, diagnose, mintToken, BASE } from './helpers.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const WINDOW_MS = 20_000;

test('a WHIP encoder publishes into a room, the room decodes it at the rate sent, DELETE removes it', { timeout: 120_000 }, async () => {
  const browser = await launch();
  const pages = [];
  try {
    const room = randomRoom('whip');
    const token = await mintToken({ identity: 'encoder-1', name: 'Encoder', role: 'participant', room });
    const viewer = await openRoom(browser, room, 'Viewer', { captureWidth: 320 });
    pages.push(viewer);
    const encoder = await (await browser.newContext()).newPage();
    encoder.logs = [];
    encoder.on('console', (m) => encoder.logs.push(`[encoder] ${m.type()}: ${m.text()}`));
    pages.push(encoder);
    // Any page of the server's origin: the encoder needs fetch, not the client.
    await encoder.goto(`${BASE}/healthz`);
    const location = await encoder.evaluate(async ({ room, token }) => {
      const media = await navigator.mediaDevices.getUserMedia({
        audio: true, video: { width: 320, height: 180, frameRate: 20 },
      });
      const pc = new RTCPeerConnection();
      for (const t of media.getTracks()) pc.addTransceiver(t, { direction: 'sendonly' });
      await pc.setLocalDescription(await pc.createOffer());
      const res = await fetch(`/whip/${room}`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` },
        body: pc.localDescription.sdp,
      });
      if (res.status !== 201) throw new Error(`WHIP POST answered ${res.status}: ${await res.text()}`);
      await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
      window.sent = async () => {
        const out = { frames: 0, audio: 0 };
        (await pc.getStats()).forEach((r) => {
          if (r.type === 'outbound-rtp' && r.kind === 'video') out.frames += r.framesSent || 0;
          if (r.type === 'outbound-rtp' && r.kind === 'audio') out.audio += r.packetsSent || 0;
        });
        return out;
      };
      window.pcState = () => pc.connectionState;
      return res.headers.get('Location');
    }, { room, token });
    assert.match(location, new RegExp(`^/whip/${room}/[0-9a-f]{32}$`));

    const fromEncoder = async () => (await stats(viewer)).find((r) => r.name === 'Encoder');
    await eventually(async () => (await fromEncoder())?.framesDecoded > 10, 30_000, 'the room page to decode the encoder');
    const [d0, s0, t0] = [await fromEncoder(), await encoder.evaluate(() => window.sent()), Date.now()];
    await sleep(WINDOW_MS);
    const [d1, s1, t1] = [await fromEncoder(), await encoder.evaluate(() => window.sent()), Date.now()];
    const secs = (t1 - t0) / 1000;
    const decodedFps = (d1.framesDecoded - d0.framesDecoded) / secs;
    const sentFps = (s1.frames - s0.frames) / secs;
    const audio = d1.audioPacketsReceived - d0.audioPacketsReceived;
    const audioSent = s1.audio - s0.audio;
    console.log(`over ${secs.toFixed(1)} s: decoded ${decodedFps.toFixed(1)} fps of ${sentFps.toFixed(1)} sent; `
      + `audio ${audio}/${audioSent} packets; freezes ${d1.freezeCount - d0.freezeCount}`);
    assert.ok(sentFps >= 10, `the encoder sent ${sentFps.toFixed(1)} fps`);
    assert.ok(decodedFps >= 0.9 * sentFps, `decoded ${decodedFps.toFixed(1)} of ${sentFps.toFixed(1)} fps`);
    assert.ok(audio >= 0.95 * audioSent, `audio ${audio} of ${audioSent} packets`);

    const status = await encoder.evaluate(async ({ location, token }) => (await fetch(location, {
      method: 'DELETE', headers: { Authorization: `Bearer ${token}` },
    })).status, { location, token });
    assert.equal(status, 200);
    await eventually(async () => !(await fromEncoder()), 10_000, 'the encoder to leave the room page');
    const again = await encoder.evaluate(async ({ location, token }) => (await fetch(location, {
      method: 'DELETE', headers: { Authorization: `Bearer ${token}` },
    })).status, { location, token });
    assert.equal(again, 404, 'the session is gone');
  } catch (e) {
    await diagnose(pages);
    throw e;
  } finally {
    await browser.close();
  }
});
