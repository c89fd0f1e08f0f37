// Interop test with an independent WebRTC stack: two werift participants call each other through a
// running confab server, with a client written from docs/protocol.md alone (client.mjs).
//
//   node call.mjs http://127.0.0.1:PORT        (WERIFT_SECONDS: the measured window, default 60)
//
// 1. A and B join one random room; each publishes Opus (50 packets/s, 960-sample steps) and VP8
//    (30 frames/s, one packet per frame, a key frame every 1 s and on PLI/FIR) as raw RTP.
// 2. Once both receive each other's media: for WERIFT_SECONDS, every direction and track must deliver
//    ≥ 95 % of the packets the peer sent in the window (matched by a packet index in the payload,
//    1 s of slack after the window's end), with no reception gap over 2 s.
// 2b. B turns A's camera off with `track_settings` for 3 s (no video of A reaches B, A's audio does,
//    A gets `publisher_paused`), then on (video back within 3 s, `publisher_paused` false).
// 3. Resume: A's WebSocket is dropped abruptly (no close frame, no `leave`); A comes back on a new
//    socket with `resume`; A must get `resumed`, B no `participant_left`, and media in both directions
//    no gap over 2 s in a 10 s window around the drop.
// 4. A leaves; B must get `participant_left` for A within 2 s.
// Prints one line of JSON (the figures) and exits 0, or 1 on a failed check.
import { randomBytes } from "node:crypto";
import { ConfabClient, now, sleep } from "./client.mjs";

const base = process.argv[2];
if (!base) {
  console.error("usage: node call.mjs http://127.0.0.1:PORT");
  process.exit(2);
}
const SECONDS = Number(process.env.WERIFT_SECONDS ?? 60);
const MIN_RATIO = 0.95;
const MAX_GAP_MS = 2000;
const t00 = now();
const stamp = () => ((now() - t00) / 1000).toFixed(2).padStart(7);
const say = (who, text) => console.error(`[${stamp()}] ${who}: ${text}`);

const failures = [];
function check(ok, text) {
  if (!ok) {
    failures.push(text);
    say("CHECK", `FAILED ${text}`);
  }
  return ok;
}

const room = `werift-${randomBytes(6).toString("hex")}`;
const A = new ConfabClient({ base, name: "werift-A", room, log: (s) => say("A", s) });
const B = new ConfabClient({ base, name: "werift-B", room, log: (s) => say("B", s) });
const pairs = () => [
  [A, B],
  [B, A],
];
const summary = { room, seconds: SECONDS };

async function waitUntil(pred, timeoutMs, what) {
  const end = now() + timeoutMs;
  while (!pred()) {
    if (now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

// Figures of one direction (sender → receiver) and kind over [t0, t1]; `received` counts the distinct
// packets whose index is among the sender's packets of the window.
function figures(sender, receiver, kind, t0, t1) {
  const src = sender.sources[kind];
  const sink = receiver.sinksOf(sender.participantId)[kind];
  const i0 = src.indexAt(t0);
  const i1 = src.indexAt(t1);
  const sent = i1 - i0;
  const received = sink ? sink.receivedBetween(i0, i1) : 0;
  const gap = sink ? sink.longestGap(t0, t1) : t1 - t0;
  return {
    sent,
    received,
    ratio: sent ? +(received / sent).toFixed(4) : 0,
    longest_gap_ms: Math.round(gap),
    rtp_arrivals: sink ? sink.arrivalsBetween(t0, t1) : 0, // retransmissions and duplicates included
  };
}

function direction(sender, receiver) {
  return `${sender.name.slice(-1)}->${receiver.name.slice(-1)}`;
}

function flowing(receiver, sender, sinceMs) {
  const sinks = receiver.sinksOf(sender.participantId);
  const t = now();
  return (
    sinks.audio &&
    sinks.video &&
    sinks.video.keyframes > 0 &&
    t - sinks.audio.lastArrival() < sinceMs &&
    t - sinks.video.lastArrival() < sinceMs
  );
}

async function main() {
  // ---- 1. join and publish ----------------------------------------------------------------------
  const joinedA = await A.join();
  check(joinedA.participants.length === 0, `A joined an empty room (participants: ${joinedA.participants.length})`);
  await A.publish();
  A.startMedia();
  const tB = now();
  const joinedB = await B.join();
  const seenA = joinedB.participants.find((p) => p.id === A.participantId);
  check(!!seenA, "B's joined lists A");
  check(
    seenA && seenA.tracks.length === 2 && seenA.tracks.some((t) => t.kind === "audio" && t.source === "microphone") &&
      seenA.tracks.some((t) => t.kind === "video" && t.source === "camera"),
    `B's joined lists A's two tracks (got ${JSON.stringify(seenA?.tracks)})`,
  );
  await A.seen((m) => m.type === "participant_joined" && m.participant?.id === B.participantId, tB, 5000, "participant_joined B");
  await B.publish();
  B.startMedia();
  await A.seen(
    (m) => m.type === "track_published" && m.participant_id === B.participantId,
    tB,
    5000,
    "track_published for B",
  );

  const tConnect = now();
  await waitUntil(() => flowing(A, B, 500) && flowing(B, A, 500), 30000, "media flowing both ways");
  say("test", `media flows both ways ${Math.round(now() - tConnect)} ms after B published`);
  summary.setup_ms = Math.round(now() - t00);
  await sleep(1000);

  // ---- 2. the measured window ------------------------------------------------------------------
  const t0 = now();
  say("test", `window of ${SECONDS} s starts`);
  await sleep(SECONDS * 1000);
  const t1 = now();
  await sleep(1000); // slack for the last packets of the window
  summary.window = {};
  for (const [s, r] of pairs()) {
    for (const kind of ["audio", "video"]) {
      const f = figures(s, r, kind, t0, t1);
      const d = `${direction(s, r)} ${kind}`;
      summary.window[`${direction(s, r)}_${kind}`] = f;
      const rate = s.sources[kind].rate;
      check(f.sent >= 0.95 * rate * SECONDS, `${d}: the sender kept its rate (${f.sent} sent, ${rate * SECONDS} expected)`);
      check(f.received >= MIN_RATIO * f.sent, `${d}: received ${f.received} of ${f.sent} sent (< ${MIN_RATIO * 100} %)`);
      check(f.longest_gap_ms <= MAX_GAP_MS, `${d}: longest reception gap ${f.longest_gap_ms} ms (> ${MAX_GAP_MS} ms)`);
    }
  }
  say("test", `window: ${JSON.stringify(summary.window)}`);
  summary.transports = { A: A.transportInfo(), B: B.transportInfo() };

  // ---- 2b. track_settings: B turns A's camera off, then on again ---------------------------------
  // From docs/protocol.md: the server stops forwarding that track to B only, tells A (whom nobody
  // else watches) `publisher_paused`, and forwards it again, from a key frame, once B turns it on.
  const camA = seenA?.tracks.find((t) => t.source === "camera");
  const sinksA = B.sinksOf(A.participantId);
  if (check(!!camA && !!sinksA.video && !!sinksA.audio, "B knows A's camera track and receives both of A's tracks")) {
    const tOff = now();
    B.send({ type: "track_settings", track_id: camA.id, enabled: false, width: 320, height: 180 });
    await sleep(500);
    const tq0 = now();
    await sleep(3000);
    const tq1 = now();
    const videoOff = sinksA.video.arrivalsBetween(tq0, tq1);
    const audioOff = sinksA.audio.arrivalsBetween(tq0, tq1);
    check(videoOff === 0, `B receives none of A's video while it has it off (${videoOff} packets in 3 s)`);
    check(audioOff >= 0.9 * A.sources.audio.rate * 3, `B keeps A's audio meanwhile (${audioOff} packets in 3 s)`);
    const paused = await A.seen((m) => m.type === "publisher_paused" && m.source === "camera" && m.paused === true, tOff, 3000,
      "publisher_paused for A's camera").then(() => true, () => false);
    check(paused, "A is told publisher_paused (camera, true) when nobody receives its camera");
    const tOn = now();
    B.send({ type: "track_settings", track_id: camA.id, enabled: true });
    let backMs = null;
    try {
      await waitUntil(() => sinksA.video.lastArrival() > tOn, 3000, "A's video at B again");
      backMs = Math.round(sinksA.video.lastArrival() - tOn);
    } catch (e) {
      check(false, `B receives A's video again within 3 s of turning it on: ${e.message}`);
    }
    const resumedPub = await A.seen((m) => m.type === "publisher_paused" && m.source === "camera" && m.paused === false, tOn, 3000,
      "publisher_paused false").then(() => true, () => false);
    check(resumedPub, "A is told publisher_paused (camera, false) when B wants its camera again");
    summary.track_settings = { video_while_off: videoOff, audio_while_off: audioOff, video_back_ms: backMs };
    await sleep(1000);
  }

  // ---- 3. resume ---------------------------------------------------------------------------------
  const tr0 = now();
  await sleep(3000);
  const tDrop = now();
  say("A", "dropping the signaling socket (no close frame, no leave)");
  A.dropSocket();
  await sleep(500);
  let resumed;
  try {
    resumed = await A.resume();
  } catch (e) {
    check(false, `A resumes: ${e.message}`);
  }
  const tResumed = now();
  if (resumed) {
    check(resumed.participant_id === A.participantId, "resumed carries the same participant_id");
    check(resumed.resume_token === A.resumeToken, "resumed carries the same resume_token");
    check(resumed.room === room, "resumed carries the room");
    const b = (resumed.participants ?? []).find((p) => p.id === B.participantId);
    check(!!b && b.tracks.length === 2, `resumed lists B with its two tracks (got ${JSON.stringify(b?.tracks)})`);
  }
  await sleep(Math.max(0, tr0 + 10000 - now()));
  const tr1 = now();
  await sleep(1000);
  summary.resume = {
    resumed_after_ms: Math.round(tResumed - tDrop),
    b_got_reconnecting: B.events.some((e) => e.t >= tDrop && e.msg.type === "participant_reconnecting" && e.msg.participant_id === A.participantId),
    b_got_reconnected: B.events.some((e) => e.t >= tDrop && e.msg.type === "participant_reconnected" && e.msg.participant_id === A.participantId),
    a_subscribe_offers_after_resume: A.events.filter((e) => e.t >= tResumed && e.msg.type === "subscribe_offer").length,
  };
  check(
    !summary.resume.b_got_reconnecting || summary.resume.b_got_reconnected,
    "B, told participant_reconnecting for A, is told participant_reconnected",
  );
  for (const [s, r] of pairs()) {
    for (const kind of ["audio", "video"]) {
      const f = figures(s, r, kind, tr0, tr1);
      summary.resume[`${direction(s, r)}_${kind}`] = f;
      check(
        f.longest_gap_ms <= MAX_GAP_MS,
        `${direction(s, r)} ${kind} across the socket drop: longest gap ${f.longest_gap_ms} ms (> ${MAX_GAP_MS} ms)`,
      );
    }
  }
  say("test", `resume: ${JSON.stringify(summary.resume)}`);

  // ---- 4. leave ----------------------------------------------------------------------------------
  const leftBefore = B.events.find((e) => e.msg.type === "participant_left" && e.msg.participant_id === A.participantId);
  check(!leftBefore, "B never received participant_left for A before A's leave");
  const tLeave = now();
  const closed = A.leave();
  let left;
  try {
    left = await B.seen((m) => m.type === "participant_left" && m.participant_id === A.participantId, tLeave, 2000, "participant_left A");
  } catch (e) {
    check(false, `B gets participant_left for A within 2 s of A's leave: ${e.message}`);
  }
  const tLeft = now();
  const close = await Promise.race([closed, sleep(3000).then(() => undefined)]);
  summary.leave = {
    participant_left_after_ms: left ? Math.round(tLeft - tLeave) : null,
    a_close_code: close?.code ?? null,
  };
  check(close?.code === 1000, `A's socket closed with 1000 after leave (got ${close?.code ?? "no close within 3 s"})`);
  A.close();
  const bLeft = B.leave();
  await Promise.race([bLeft, sleep(3000)]);

  summary.chat_history = {
    A: A.chatMessages.some((m) => m.type === "history" && m.done === true),
    B: B.chatMessages.some((m) => m.type === "history" && m.done === true),
  };
  summary.plis_received = { A: A.sources.video.plis, B: B.sources.video.plis };
  summary.nacked_packets = {
    A: { audio: A.sources.audio.nacked, video: A.sources.video.nacked },
    B: { audio: B.sources.audio.nacked, video: B.sources.video.nacked },
  };
  summary.firs_received = { A: A.sources.video.firs, B: B.sources.video.firs };
  summary.keyframes_sent = { A: A.sources.video.keyframes, B: B.sources.video.keyframes };
  summary.codecs = {
    A_pub: { audio_pt: A.sources.audio.sender.codec?.payloadType, video_pt: A.sources.video.sender.codec?.payloadType },
    B_sub_payload_types: Object.fromEntries([...B.sinks.values()].map((s) => [s.kind, [...s.payloadTypes]])),
  };
  for (const c of [A, B]) check(c.errors.length === 0, `${c.name}: no server error / protocol error (${c.errors.join("; ")})`);
}

let status = 0;
try {
  await main();
} catch (e) {
  failures.push(`exception: ${e.stack ?? e}`);
  say("test", `exception: ${e.stack ?? e}`);
}
if (failures.length) {
  status = 1;
  if (process.env.WERIFT_DUMP_SDP) {
    for (const c of [A, B]) {
      for (const [label, sdp] of [
        ["publish offer", c.publishOffer],
        ["publish answer", c.publishAnswer],
        ["subscribe offer", c.lastSubscribeOffer],
        ["subscribe answer", c.lastSubscribeAnswer],
      ]) {
        if (sdp) console.error(`---- ${c.name} ${label}\n${sdp}`);
      }
    }
  }
}
A.close();
B.close();
summary.ok = failures.length === 0;
summary.failures = failures;
summary.runtime_s = +((now() - t00) / 1000).toFixed(1);
console.log(JSON.stringify(summary));
process.exit(status);
