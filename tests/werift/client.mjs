// A small confab client on werift (pure TypeScript WebRTC), written from docs/protocol.md alone:
// a guest token over HTTP (Transport 1), JSON signaling over a WebSocket (Transport 2-3), a publisher
// transport the client offers (publish_offer → publish_answer) and a subscriber transport the server
// offers (subscribe_offer → subscribe_answer) ("Two transports per participant"), resume on a new
// socket ("Resume") and leave. It sends raw RTP (sendonly transceivers, RTCRtpSender.sendRtp) and
// counts the RTP it receives per remote track; it never decodes media.
import { performance } from "node:perf_hooks";
import {
  RTCPeerConnection,
  RTCRtpCodecParameters,
  RTCRtpHeaderExtensionParameters,
  RtpHeader,
  RtpPacket,
} from "werift";
import WebSocket from "ws";

const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Codecs and RTP (protocol.md): Opus 48 kHz stereo, VP8 with nack / nack pli / ccm fir; header
// extensions mid (both), audio level (audio), abs-send-time (video), transport-cc (publisher).
const FEEDBACK = [
  { type: "nack" },
  { type: "nack", parameter: "pli" },
  { type: "ccm", parameter: "fir" },
];
const EXT = {
  mid: "urn:ietf:params:rtp-hdrext:sdes:mid",
  audioLevel: "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
  absSendTime: "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
  twcc: "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
};

function peerConfig(iceServers) {
  return {
    // No STUN server of werift's own (its default is a public one, unreachable here): host candidates
    // only, the server being ICE-lite with host candidates of its own.
    iceServers: iceServers ?? [],
    bundlePolicy: "max-bundle",
    codecs: {
      audio: [
        new RTCRtpCodecParameters({
          mimeType: "audio/opus",
          clockRate: 48000,
          channels: 2,
          parameters: "minptime=10;useinbandfec=1",
        }),
      ],
      video: [
        new RTCRtpCodecParameters({ mimeType: "video/VP8", clockRate: 90000, rtcpFeedback: FEEDBACK }),
      ],
    },
    headerExtensions: {
      audio: [EXT.mid, EXT.audioLevel, EXT.twcc].map((uri) => new RTCRtpHeaderExtensionParameters({ uri })),
      video: [EXT.mid, EXT.absSendTime, EXT.twcc].map((uri) => new RTCRtpHeaderExtensionParameters({ uri })),
    },
  };
}

export async function guestToken(base, name) {
  const res = await fetch(`${base}/api/guest-token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name }),
  });
  if (res.status !== 200) throw new Error(`guest-token: HTTP ${res.status}`);
  const body = await res.json();
  if (typeof body.token !== "string" || !body.token) throw new Error("guest-token: no token in the answer");
  return body.token;
}

// ---- media: synthetic Opus / VP8 RTP ------------------------------------------------------------

// Every payload ends with a 4-byte big-endian packet index, so a receiver can count exactly which of
// the packets sent in a window it got (the SFU forwards the payload unchanged: protocol.md "Codecs").
function audioPayload(index) {
  const p = Buffer.alloc(100, 0xa5);
  p[0] = 0xfc; // Opus TOC: config 31 (CELT FB 20 ms), stereo, one frame
  p.writeUInt32BE(index >>> 0, p.length - 4);
  return p;
}

// RFC 7741: payload descriptor (X=0, N=0, S=1, PID=0), then the VP8 payload header. Its first byte is
// size0(3) | show_frame(1) | version(3) | P(1), P = 0 for a key frame; a key frame header goes on with the
// start code 0x9d 0x01 0x2a and 14-bit width / height, little endian.
function videoPayload(index, key) {
  const p = Buffer.alloc(key ? 160 : 110, 0x5a);
  p[0] = 0x10; // descriptor: S bit, PID 0
  const partSize = p.length - 1 - (key ? 10 : 3) - 4;
  p[1] = ((partSize & 0x7) << 5) | 0x10 | (key ? 0 : 1); // size0, show_frame=1, version 0, P
  p[2] = (partSize >> 3) & 0xff;
  p[3] = (partSize >> 11) & 0xff;
  if (key) {
    p[4] = 0x9d;
    p[5] = 0x01;
    p[6] = 0x2a;
    p.writeUInt16LE(640, 7);
    p.writeUInt16LE(480, 9);
  }
  p.writeUInt32BE(index >>> 0, p.length - 4);
  return p;
}

export function payloadIndex(payload) {
  return payload.length >= 4 ? payload.readUInt32BE(payload.length - 4) : -1;
}

export function isVp8Keyframe(payload) {
  // descriptor: first byte X|R|N|S|R|PID; X adds a byte with I|L|T|K, I a 1-2 byte picture id, L a
  // TL0PICIDX byte, T|K a TID/KEYIDX byte. A rewriting SFU may add fields, so parse them.
  let o = 1;
  if (payload[0] & 0x80) {
    const x = payload[1];
    o = 2;
    if (x & 0x80) o += payload[o] & 0x80 ? 2 : 1;
    if (x & 0x40) o += 1;
    if (x & 0x30) o += 1;
  }
  return (payload[0] & 0x10) !== 0 && (payload[0] & 0x07) === 0 && (payload[o] & 0x01) === 0;
}

// A sendonly track fed at a fixed rate. `tick()` sends every packet that is due by now (so timer
// jitter does not change the rate); `log[i]` is the send time of packet i.
class RtpSource {
  constructor(kind, sender) {
    this.kind = kind;
    this.sender = sender;
    this.rate = kind === "audio" ? 50 : 30;
    this.tsStep = kind === "audio" ? 960 : 3000;
    this.seq = Math.floor(Math.random() * 65536);
    this.ts = Math.floor(Math.random() * 2 ** 32);
    this.sent = 0; // packets handed to the transport
    this.skipped = 0; // due while the transport was not connected (werift drops them)
    this.due = 0; // packets due so far
    this.start = undefined;
    this.sendTimes = [];
    this.keyframes = 0;
    this.plis = 0;
    this.firs = 0;
    this.forceKey = true;
    this.nacked = 0; // packets the server asked for again (RTCP generic NACK; werift resends them)
    sender.onGenericNack.subscribe((nack) => {
      this.nacked += nack.lost?.length ?? 0;
    });
    if (kind === "video") {
      sender.onPictureLossIndication.subscribe(() => {
        this.plis++;
        this.forceKey = true;
      });
      sender.onRtcp.subscribe((rtcp) => {
        // RTCP PSFB FMT 4 (FIR): werift surfaces it through onRtcp only.
        if (rtcp?.type === 206 && rtcp.feedback?.count === 4) {
          this.firs++;
          this.forceKey = true;
        }
      });
    }
  }

  tick(t) {
    if (this.start === undefined) this.start = t;
    const target = Math.floor(((t - this.start) * this.rate) / 1000) + 1;
    while (this.due < target) {
      this.due++;
      this.sendOne(t);
    }
  }

  sendOne(t) {
    const s = this.sender;
    const ready = s.dtlsTransport?.state === "connected" && s.codec;
    const index = this.sent;
    let payload;
    let marker = false;
    if (this.kind === "audio") {
      payload = audioPayload(index);
    } else {
      const key = this.forceKey || this.due % this.rate === 1;
      payload = videoPayload(index, key);
      marker = true; // one packet per frame
      if (key && ready) {
        this.forceKey = false;
        this.keyframes++;
      }
    }
    this.seq = (this.seq + 1) & 0xffff;
    this.ts = (this.ts + this.tsStep) >>> 0;
    if (!ready) {
      this.skipped++;
      return;
    }
    const header = new RtpHeader({
      payloadType: s.codec.payloadType,
      sequenceNumber: this.seq,
      timestamp: this.ts,
      marker,
    });
    this.sent++;
    this.sendTimes.push(t);
    s.sendRtp(new RtpPacket(header, payload)).catch(() => {});
  }

  // index of the first packet sent at or after time t
  indexAt(t) {
    let lo = 0;
    let hi = this.sendTimes.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.sendTimes[mid] < t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

// What arrived of one remote track: packet indices (from the payload), arrival times.
class RtpSink {
  constructor(key, kind) {
    this.key = key;
    this.kind = kind;
    this.packets = 0; // every RTP packet, retransmissions and duplicates included
    this.indices = new Map(); // payload index → first arrival time
    this.arrivals = [];
    this.keyframes = 0;
    this.payloadTypes = new Set();
    this.ssrcs = new Set();
  }

  onRtp(rtp) {
    const t = now();
    this.packets++;
    this.arrivals.push(t);
    this.payloadTypes.add(rtp.header.payloadType);
    this.ssrcs.add(rtp.header.ssrc);
    const i = payloadIndex(rtp.payload);
    if (!this.indices.has(i)) this.indices.set(i, t);
    if (this.kind === "video" && isVp8Keyframe(rtp.payload)) this.keyframes++;
  }

  // unique packets with index in [from, to)
  receivedBetween(from, to) {
    let n = 0;
    for (const i of this.indices.keys()) if (i >= from && i < to) n++;
    return n;
  }

  arrivalsBetween(t0, t1) {
    let n = 0;
    for (const t of this.arrivals) if (t >= t0 && t <= t1) n++;
    return n;
  }

  // longest time without any packet arriving in [t0, t1]
  longestGap(t0, t1) {
    let last = t0;
    let gap = 0;
    for (const t of this.arrivals) {
      if (t < t0) continue;
      if (t > t1) break;
      gap = Math.max(gap, t - last);
      last = t;
    }
    return Math.max(gap, t1 - last);
  }

  lastArrival() {
    return this.arrivals.length ? this.arrivals[this.arrivals.length - 1] : -Infinity;
  }
}

// ---- signaling ----------------------------------------------------------------------------------

export class ConfabClient {
  constructor({ base, name, room, log }) {
    this.base = base;
    this.name = name;
    this.room = room;
    this.log = log ?? (() => {});
    this.ws = undefined;
    this.token = undefined;
    this.events = []; // every server message, { t, msg }, on every socket
    this.waiters = [];
    this.closes = []; // { t, code, reason } of our sockets
    this.joined = undefined;
    this.participantId = undefined;
    this.resumeToken = undefined;
    this.pub = undefined;
    this.sub = undefined;
    this.sources = {}; // kind → RtpSource
    this.sinks = new Map(); // "<participant_id>/<track_id>" → RtpSink
    this.midMap = new Map(); // subscriber mid → { participant_id, track_id, kind, source }
    this.subQueue = Promise.resolve();
    this.subOffers = 0;
    this.subAnswers = 0;
    this.errors = [];
    this.timer = undefined;
    this.requestId = 0;
  }

  async connect() {
    if (!this.token) this.token = await guestToken(this.base, this.name);
    const url = `${this.base.replace(/^http/, "ws")}/ws?token=${encodeURIComponent(this.token)}`;
    const ws = new WebSocket(url);
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
      ws.once("unexpected-response", (_req, res) => reject(new Error(`ws upgrade: HTTP ${res.statusCode}`)));
    });
    ws.on("message", (data, isBinary) => {
      if (ws !== this.ws) return; // a message still in flight on an abandoned socket
      if (isBinary) return this.fail(`binary frame from the server`);
      let msg;
      try {
        msg = JSON.parse(data.toString("utf8"));
      } catch {
        return this.fail(`non-JSON frame from the server`);
      }
      this.onMessage(msg);
    });
    ws.on("close", (code, reason) => {
      this.closes.push({ t: now(), code, reason: reason.toString(), current: ws === this.ws });
    });
    ws.on("error", (e) => this.log(`ws error: ${e.message}`));
    this.ws = ws;
    return ws;
  }

  send(msg) {
    this.ws.send(JSON.stringify(msg));
  }

  fail(text) {
    this.errors.push(text);
    this.log(`ERROR ${text}`);
  }

  onMessage(msg) {
    const t = now();
    this.events.push({ t, msg });
    // Record `joined` / `resumed` here, not where the request awaits it: the server sends the first
    // subscribe_offer right behind `joined` (often in the same read), before an await resumes.
    if (msg.type === "joined" || msg.type === "resumed") {
      if (msg.type === "joined") {
        this.joined = msg;
        this.participantId = msg.participant_id;
        this.resumeToken = msg.resume_token;
      }
      this.iceServers = msg.ice_servers;
    }
    if (msg.type === "error") {
      this.fail(`server error ${msg.code}: ${msg.message}`);
    } else if (msg.type === "subscribe_offer") {
      this.subOffers++;
      this.subQueue = this.subQueue.then(() => this.onSubscribeOffer(msg)).catch((e) => this.fail(`subscribe_offer: ${e.stack ?? e}`));
    } else if (msg.type !== "pong") {
      this.log(`<- ${summarize(msg)}`);
    }
    for (const w of [...this.waiters]) {
      if (w.pred(msg)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(msg);
      }
    }
  }

  // The next message (from now on) matching pred; rejects after timeoutMs.
  waitFor(pred, timeoutMs, what) {
    return new Promise((resolve, reject) => {
      const w = { pred, resolve };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`${this.name}: no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  // A message since `since` (performance.now()) matching pred, whether it came already or comes later.
  async seen(pred, since, timeoutMs, what) {
    const hit = this.events.find((e) => e.t >= since && pred(e.msg));
    if (hit) return hit.msg;
    return this.waitFor(pred, timeoutMs, what);
  }

  async request(msg, replyType, timeoutMs = 10000) {
    const request_id = `r${++this.requestId}`;
    const p = this.waitFor((m) => m.request_id === request_id && (m.type === replyType || m.type === "error"), timeoutMs, replyType);
    this.send({ ...msg, request_id });
    const reply = await p;
    if (reply.type === "error") throw new Error(`${msg.type} refused: ${reply.code} ${reply.message}`);
    return reply;
  }

  async join() {
    await this.connect();
    const joined = await this.request({ type: "join", room: this.room, name: this.name }, "joined");
    for (const f of ["room", "participant_id", "participants", "max_participants", "resume_token"]) {
      if (!(f in joined)) throw new Error(`joined has no ${f}`);
    }
    if (!/^[0-9a-f]{32}$/.test(joined.resume_token)) throw new Error("joined.resume_token is not 32 hex characters");
    this.participantId = joined.participant_id;
    this.resumeToken = joined.resume_token;
    return joined;
  }

  // Publisher transport: the client offers one sendonly audio and one sendonly video m-line and the
  // `chat` DataChannel (created before the first publish_offer: protocol.md "Chat").
  async publish() {
    const pc = new RTCPeerConnection(peerConfig(this.iceServers));
    this.pub = pc;
    pc.connectionStateChange.subscribe((s) => this.log(`publisher ${s}`));
    this.chat = pc.createDataChannel("chat", { ordered: true });
    this.chatMessages = [];
    this.chat.onMessage.subscribe((data) => {
      try {
        this.chatMessages.push(JSON.parse(data.toString()));
      } catch {
        this.fail("chat: non-JSON message");
      }
    });
    const audio = pc.addTransceiver("audio", { direction: "sendonly" });
    const video = pc.addTransceiver("video", { direction: "sendonly" });
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer); // werift gathers here: the local description has its candidates
    const sdp = pc.localDescription.sdp;
    const tracks = [
      { mid: audio.mid, kind: "audio", source: "microphone" },
      { mid: video.mid, kind: "video", source: "camera" },
    ];
    this.publishOffer = sdp;
    const answer = await this.request({ type: "publish_offer", sdp, tracks }, "publish_answer");
    this.publishAnswer = answer.sdp;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    this.sources.audio = new RtpSource("audio", audio.sender);
    this.sources.video = new RtpSource("video", video.sender);
    return answer;
  }

  async onSubscribeOffer(msg) {
    if (!this.sub) {
      const pc = new RTCPeerConnection(peerConfig(this.iceServers));
      this.sub = pc;
      pc.connectionStateChange.subscribe((s) => this.log(`subscriber ${s}`));
      pc.onTransceiverAdded.subscribe((tr) => this.watchTransceiver(tr));
      pc.onRemoteTransceiverAdded.subscribe((tr) => this.watchTransceiver(tr));
    }
    const pc = this.sub;
    for (const tr of msg.tracks ?? []) this.midMap.set(String(tr.mid), tr);
    this.lastSubscribeOffer = msg.sdp;
    this.log(`<- subscribe_offer tracks=${JSON.stringify((msg.tracks ?? []).map((t) => `${t.mid}:${t.participant_id}/${t.kind}`))}`);
    await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    for (const tr of pc.getTransceivers()) this.watchTransceiver(tr);
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    this.lastSubscribeAnswer = pc.localDescription.sdp;
    this.send({ type: "subscribe_answer", sdp: pc.localDescription.sdp });
    this.subAnswers++;
  }

  watchTransceiver(tr) {
    if (tr._confabWatched) return;
    tr._confabWatched = true;
    tr.onTrack.subscribe((track) => {
      const info = this.midMap.get(String(tr.mid));
      if (!info) return this.fail(`track on subscriber mid ${tr.mid} that no subscribe_offer named`);
      const key = `${info.participant_id}/${info.track_id}`;
      let sink = this.sinks.get(key);
      if (!sink) {
        sink = new RtpSink(key, info.kind);
        sink.participantId = info.participant_id;
        this.sinks.set(key, sink);
      }
      this.log(`track ${key} (${info.kind}, mid ${tr.mid}, ssrc ${track.ssrc})`);
      track.onReceiveRtp.subscribe((rtp) => sink.onRtp(rtp));
    });
  }

  // What each transport settled on: the SRTP profile from DTLS (1: AES_CM_128_HMAC_SHA1_80, 7:
  // AEAD_AES_128_GCM) and the nominated pair's remote (server) address.
  transportInfo() {
    const info = {};
    for (const [name, pc] of [["pub", this.pub], ["sub", this.sub]]) {
      const dtls = pc?.dtlsTransports?.[0];
      const pair = dtls?.iceTransport?.connection?.nominated;
      info[name] = {
        srtp_profile: dtls?.dtls?.srtp?.srtpProfile ?? null,
        server: pair ? `${pair.remoteCandidate?.transport ?? "?"} ${pair.remoteAddr?.join(":")}` : null,
      };
    }
    return info;
  }

  sinksOf(participantId) {
    const out = {};
    for (const s of this.sinks.values()) if (s.participantId === participantId) out[s.kind] = s;
    return out;
  }

  startMedia() {
    this.timer = setInterval(() => {
      const t = now();
      for (const s of Object.values(this.sources)) s.tick(t);
    }, 5);
  }

  stopMedia() {
    clearInterval(this.timer);
  }

  // Drop the signaling socket without a close handshake and without `leave` (a lost socket).
  dropSocket() {
    const old = this.ws;
    this.ws = undefined;
    old.terminate();
  }

  async resume() {
    await this.connect();
    return this.request(
      { type: "resume", participant_id: this.participantId, resume_token: this.resumeToken },
      "resumed",
    );
  }

  async leave() {
    const ws = this.ws;
    const closed = new Promise((resolve) => ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() })));
    this.send({ type: "leave" });
    return closed;
  }

  close() {
    this.stopMedia();
    try {
      this.pub?.close();
    } catch {}
    try {
      this.sub?.close();
    } catch {}
    try {
      this.ws?.terminate();
    } catch {}
  }
}

function summarize(msg) {
  const m = { ...msg };
  if (m.sdp) m.sdp = `<${m.sdp.length} bytes>`;
  if (m.resume_token) m.resume_token = "<secret>";
  return JSON.stringify(m).slice(0, 400);
}

export { sleep, now };
