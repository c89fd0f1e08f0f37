// confab browser protocol library: signaling (docs/protocol.md) and the two peer connections.
//
// This module owns no DOM. It owns:
//   - the WebSocket to `/ws` and the join / reconnect lifecycle (`state`),
//   - the publisher RTCPeerConnection (client offers; our microphone, camera, screen and the `chat`
//     DataChannel) and the subscriber RTCPeerConnection (server offers; everyone else's tracks),
//   - the room model: the other participants, their published tracks and mute states, and which
//     received MediaStreamTrack belongs to which participant/source.
// The UI (ui.js) listens to the events below and calls the public methods; it never touches signaling.
//
// Events (CustomEvent, data in `detail`):
//   statechange        {state, reason}     connection lifecycle, see {@link SessionState}
//   joined             {participantId, room, maxParticipants}
//   participant-joined {participant}
//   participant-left   {participantId, name}
//   participant-updated{participantId}     name, track list or mute state changed
//   media              {participantId}     the received MediaStreamTracks of a participant changed
//   local-media        {}                  our own tracks / mute / screen state changed
//   server-error       {code, message}     an `error` message from the server
//   notice             {message, level}    something the user should know (e.g. no camera)
//   datachannel        {channel}           the `chat` DataChannel of a new publisher transport
//   paid-session       {session}           the room's paid session is tracked (answer to `session_started`)
//   paid-session-ended {id, reason}        the room's paid session ended; settlement follows (fetchPaidSession)

import { acquireDevices, deviceTrack, describeMediaError } from '/media.js';
import { toParticipant, toTrack, msidBindings, jwtSubject, jwtRole } from '/wire.js';
import { participantStats, sendStats, pairStats } from '/stats.js';

export { describeMediaError };

/** @typedef {import('/types.js').Kind} Kind */
/** @typedef {import('/types.js').Source} Source */
/** @typedef {import('/types.js').SessionState} SessionState */
/** @typedef {import('/types.js').Target} Target */
/** @typedef {import('/types.js').Track} Track */
/** @typedef {import('/types.js').Participant} Participant */
/** @typedef {import('/types.js').RemoteBinding} RemoteBinding */
/** @typedef {import('/types.js').PaidSession} PaidSession */
/** @typedef {import('/types.js').ParticipantStats} ParticipantStats */

/**
 * Camera video goes out as three simulcast layers (RFC 8853; RIDs `l`, `m`, `h`: a quarter, half
 * and the full capture size) so the server can send each subscriber the one its tile needs; the
 * browser itself leaves out layers its resolution cannot fill. `?simulcast=0` in the page's URL
 * publishes one stream instead. Microphone and screen share are always one stream.
 */
const SIMULCAST = typeof location === 'undefined' || new URLSearchParams(location.search).get('simulcast') !== '0';

/** @param {Source} source @param {MediaStream[]} streams @returns {RTCRtpTransceiverInit} */
function sendInit(source, streams) {
  /** @type {RTCRtpTransceiverInit} */
  const init = { direction: 'sendonly', streams };
  if (source === 'camera' && SIMULCAST) {
    init.sendEncodings = [
      { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
      { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
      { rid: 'h', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
    ];
  }
  return init;
}

/** Why each timer exists and how long it waits. */
export const TIMING = Object.freeze({
  /** client heartbeat period: each heartbeat is a probe (see `heartbeatProbeMs`) */
  pingIntervalMs: 2_500,
  /** a heartbeat ping unanswered this long plus two round trips: the socket is dead, resume */
  heartbeatProbeMs: 3_000,
  /** `joined` must arrive this long after the socket opened */
  joinTimeoutMs: 10_000,
  /** `publish_answer` must arrive this long after a `publish_offer` */
  answerTimeoutMs: 15_000,
  /** the publisher transport must be connected this long after `joined` */
  mediaTimeoutMs: 20_000,
  /** joining a room where others publish, our own publishing waits this long at most for our
   * subscriber transport to connect: receiving comes first on a busy machine (the encoder's
   * start-up and the publish round compete with it for the same CPU) */
  receiveFirstMs: 1_000,
  /** reconnect back-off delays; one attempt per entry, then `failed` */
  backoffMs: [1000, 2000, 4000, 8000, 8000],
  /** resume attempts after a lost socket (the server keeps us 20 s): then a full rejoin */
  resumeBackoffMs: [0, 500, 1000, 2000, 3000, 4000, 5000],
  /** a transport restarting ICE must be connected again within this, else a full rejoin */
  iceRestartMs: 15_000,
  /** a transport `disconnected` this long restarts ICE (after probing the socket) */
  disconnectedMs: 3_000,
  /** after a network change the socket may be dead without knowing it: a ping must be answered
   * within this plus twice the last round trip, else we resume on a new socket at once rather than
   * wait for the silence timeout */
  probeMs: 1_000,
});

/** Server error codes after which retrying the same join is pointless. */
const FATAL_JOIN_ERRORS = new Set(['room_full', 'invalid_room', 'invalid_name', 'unauthorized', 'already_joined',
  'room_locked', 'removed', 'token_expired']);
/** Server error codes that refuse our last publisher offer. */
const OFFER_ERRORS = new Set(['invalid_sdp', 'sdp_too_large', 'negotiation_failed']);
/** Server error codes that answer `session_started`. */
const PAID_ERRORS = new Set(['paid_sessions_disabled', 'paid_session_not_found', 'chain_unavailable', 'not_a_party',
  'unavailable', 'tutor_busy', 'paid_session_running', 'bad_json']);

/** A failure that must not be retried (wrong room id, room full, ...). */
class FatalError extends Error {}

/**
 * Resolves once `pc` is connected, or after `ms` (whichever comes first; also when it fails).
 * @param {RTCPeerConnection} pc @param {number} ms @returns {Promise<void>}
 */
function connectedOrAfter(pc, ms) {
  return new Promise((resolve) => {
    if (pc.connectionState === 'connected') return resolve();
    const done = () => { clearTimeout(timer); pc.removeEventListener('connectionstatechange', check); resolve(); };
    const check = () => { if (pc.connectionState !== 'new' && pc.connectionState !== 'connecting') done(); };
    const timer = setTimeout(done, ms);
    pc.addEventListener('connectionstatechange', check);
  });
}

/**
 * One participant's session in one room. Create, `await start()`, then drive with the methods below.
 */
export class ConfabSession extends EventTarget {
  /**
   * @param {Object} opts
   * @param {string} opts.room        room id, 1–64 of [A-Za-z0-9_-]
   * @param {string} opts.name        display name, 1–64 chars
   * @param {string} [opts.origin]    http(s) origin of the server; defaults to the page's
   * @param {RTCConfiguration} [opts.rtcConfig]
   * @param {() => ({token: string, expiresAt: number}|null)} [opts.tokenSource]  an access token the page
   *   already holds (a backend-minted `#token=` link, a wallet sign-in; `expiresAt` in ms), asked
   *   synchronously before each connection; null (or none) takes a guest token as before
   */
  constructor({ room, name, origin, rtcConfig, tokenSource }) {
    super();
    this.room = room;
    this.name = name;
    this.origin = origin || globalThis.location.origin;
    /** The node that hosts the room, when the page's own sent us there (`redirect`); null: the
     * page's origin. @type {string|null} */
    this._nodeOrigin = null;
    /** Redirects followed since the last `joined` (a loop between nodes stops at 3). */
    this._redirects = 0;
    /** where a non-guest token comes from; see the constructor's `tokenSource` */
    this._tokenSource = tokenSource || null;
    /** @type {RTCConfiguration} */
    this.rtcConfig = { bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require', ...(rtcConfig || {}) };

    /** @type {SessionState} */
    this.state = 'idle';
    /** @type {string} reason of the last `failed` / `reconnecting` */
    this.reason = '';
    /** @type {string|null} our participant id in the current connection */
    this.participantId = null;
    this.maxParticipants = 0;
    /** @type {Map<string, Participant>} the others, by id */
    this.participants = new Map();
    /** @type {Map<string, RemoteBinding>} subscriber m-lines, by mid */
    this.remote = new Map();

    /** Our own media. `mediaError` says why microphone/camera are missing, if they are. */
    this.local = {
      /** @type {MediaStreamTrack|null} */ microphone: null,
      /** @type {MediaStreamTrack|null} */ camera: null,
      /** @type {MediaStreamTrack|null} */ screen: null,
      micMuted: false,
      cameraOff: false,
      /** @type {string} */ mediaError: '',
    };

    /** @type {RTCDataChannel|null} the `chat` channel of the current publisher transport */
    this.chatChannel = null;
    /** round-trip time of the last ping, ms */
    this.rttMs = NaN;
    /** @type {string} the access token of the current connection (kept after leaving, for REST) */
    this.token = '';
    /** @type {string} our user id: the token's `sub` */
    this.userId = '';
    /** @type {Set<string>} every `sub` this session had (a token renewed on reconnect may change it) */
    this.userIds = new Set();
    /** @type {string} the token's `role`: `host` shows the host controls */
    this.role = 'participant';
    /** a host locked the room (from `room_locked`) */
    this.locked = false;
    /** @type {string[]} who speaks now, dominant first (from `active_speakers`; may hold our own id) */
    this.activeSpeakers = [];
    /** @type {Map<string, {enabled: boolean, w: number, h: number}>} what we last asked per remote track (`track_settings`) */
    this._wants = new Map();
    /** @type {Record<string, boolean>} the server asked us to stop encoding this source (`publisher_paused`) */
    this.publisherPaused = {};
    /** @type {Record<string, string[]|null>} the simulcast RIDs the server wants of this source (`publisher_layers`) */
    this._activeRids = {};
    this._tokenExpiresAt = 0;
    /** @type {PaidSession|null} the room's running paid session, if the server told us */
    this.paidSession = null;
    /** a `session_started` awaits its answer (its refusals are PAID_ERRORS) */
    this._paidPending = false;

    /** @type {WebSocket|null} */ this._ws = null;
    /** @type {RTCPeerConnection|null} */ this._pub = null;
    /** @type {RTCPeerConnection|null} */ this._sub = null;
    /** @type {Record<Source, RTCRtpTransceiver|null>} publisher transceiver per source */
    this._slots = { microphone: null, camera: null, screen: null };
    /** connection generation; async work of an older generation is dropped */
    this._gen = 0;
    /** media generation: the peer connections' handlers; changes only when they are rebuilt (a
     * resumed socket keeps the transports) */
    this._mediaGen = 0;
    /** @type {{participantId: string, token: string}|null} what `resume` needs, from `joined` */
    this._resume = null;
    this._resumeAttempt = 0;
    /** `joined` / `resumed` is awaited on the current socket */
    this._awaitingJoin = false;
    /** the next publisher offer restarts ICE (new credentials) */
    this._iceRestart = false;
    /** the socket died with the media (a network change, probably): after the resume every
     * transport restarts ICE, also one that does not know yet that its pair is dead */
    this._networkChanged = false;
    this._attempt = 0;
    this._joinedOnce = false;
    /** @type {Promise<void>} device changes, one at a time (see _serial) */
    this._deviceOps = Promise.resolve();
    /** @type {Promise<void>} the first device acquisition; the publisher waits for it, nothing else does */
    this._devicesReady = Promise.resolve();
    /** publisher negotiation: one offer in flight, `_pubDirty` asks for another round */
    this._pubBusy = false;
    this._pubDirty = false;
    /** @type {{resolve: (sdp: string) => void, reject: (e: Error) => void}|null} */
    this._pendingAnswer = null;
    /** @type {Promise<void>} serializes subscribe offers */
    this._subChain = Promise.resolve();
    /** candidates held until the description they belong to was sent */
    this._candidateGate = { publisher: false, subscriber: false };
    /** @type {{publisher: RTCIceCandidateInit[], subscriber: RTCIceCandidateInit[]}} */
    this._candidateQueue = { publisher: [], subscriber: [] };
    this._timers = { ping: 0, silence: 0, join: 0, media: 0, retry: 0, restartPub: 0, restartSub: 0, pubDown: 0, subDown: 0, probe: 0 };
    this._lastMessageAt = 0;
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Acquire camera + microphone (falling back to fewer or none) and connect, at the same time: the
   * token, the WebSocket, `joined` and the subscriber transport do not wait for the devices (the
   * others' video can start before ours); only the publisher's offer does.
   */
  async start() {
    this._setState('connecting', '');
    this._devicesReady = this._acquireLocalMedia().then(() => {
      if (this.state === 'left') this._stopLocalTracks(); // left while the browser asked for devices
    });
    await Promise.all([this._devicesReady, this._connect()]);
  }

  /** Leave the room for good: tell the server, close everything, stop our devices. */
  leave() {
    if (this.state === 'left') return;
    this._resume = null;
    this._send({ type: 'leave' });
    this._teardown('left');
    this._stopLocalTracks();
    this._setState('left', '');
    this._emit('local-media', {});
  }

  /** After `failed`: start over with a fresh back-off. */
  async retry() {
    this._attempt = 0;
    this._setState('connecting', '');
    await this._connect();
  }

  // ---------------------------------------------------------------- local media controls

  /** Stop every local device and share. */
  _stopLocalTracks() {
    for (const source of /** @type {Source[]} */ (['microphone', 'camera', 'screen'])) {
      this.local[source]?.stop();
      this.local[source] = null;
    }
  }

  /**
   * Device changes run one after another, so a double key press cannot open two cameras or two
   * screen pickers; each checks the state it finds.
   * @param {() => Promise<void>} op
   */
  _serial(op) {
    const run = this._deviceOps.then(() => (this.state === 'left' ? undefined : op()));
    this._deviceOps = run.catch((e) => console.error('confab:', e));
    return this._deviceOps;
  }

  /** @param {boolean} muted */
  setMicMuted(muted) { return this._serial(() => this._setMicMuted(muted)); }

  /** Camera off stops the device (the light goes out); on asks for it again. @param {boolean} off */
  setCameraOff(off) { return this._serial(() => this._setCameraOff(off)); }

  /** Share a screen or window as a second video track (source `screen`). */
  startScreenShare() { return this._serial(() => this._startScreenShare()); }

  stopScreenShare() { return this._serial(() => this._stopScreenShare()); }

  /** Toggles decide on the state they find when their turn comes, so N presses are N toggles. */
  toggleMic() { return this._serial(() => this._setMicMuted(!(this.local.micMuted || !this.local.microphone))); }

  toggleCamera() { return this._serial(() => this._setCameraOff(!(this.local.cameraOff || !this.local.camera))); }

  toggleScreenShare() {
    return this._serial(() => (this.local.screen ? this._stopScreenShare() : this._startScreenShare()));
  }

  /** @param {boolean} muted */
  async _setMicMuted(muted) {
    if (!muted && !this.local.microphone) {
      const track = await this._getDeviceTrack('audio');
      if (!track) return;
      this.local.microphone = track;
      await this._publishSource('microphone', track);
    }
    this.local.micMuted = muted;
    if (this.local.microphone) this.local.microphone.enabled = !muted;
    this._sendMute('microphone', muted);
    this._emit('local-media', {});
  }

  /** @param {boolean} off */
  async _setCameraOff(off) {
    if (off === (this.local.cameraOff || !this.local.camera)) return;
    if (off) {
      const slot = this._slots.camera;
      if (slot) await slot.sender.replaceTrack(null);
      this.local.camera?.stop();
      this.local.camera = null;
      this.local.cameraOff = true;
      this._sendMute('camera', true);
    } else {
      const track = await this._getDeviceTrack('video');
      if (!track) return;
      this.local.camera = track;
      this.local.cameraOff = false;
      await this._publishSource('camera', track);
      this._sendMute('camera', false);
    }
    this._emit('local-media', {});
  }

  async _startScreenShare() {
    if (this.local.screen) return;
    /** @type {MediaStream} */
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 15 }, audio: false });
    } catch (e) {
      if (/** @type {Error} */ (e).name !== 'NotAllowedError') {
        this._notice(`Screen sharing failed: ${describeMediaError(e)}`, 'error');
      }
      return;
    }
    const track = stream.getVideoTracks()[0];
    if (this.state === 'left') { track.stop(); return; }
    track.contentHint = 'detail';
    // The browser's own "Stop sharing" bar ends the track.
    track.addEventListener('ended', () => { if (this.local.screen === track) this.stopScreenShare(); });
    this.local.screen = track;
    this._emit('local-media', {});
    await this._publishSource('screen', track);
  }

  async _stopScreenShare() {
    const track = this.local.screen;
    if (!track) return;
    this.local.screen = null;
    track.stop();
    const slot = this._slots.screen;
    if (slot && this._pub && this._pub.signalingState !== 'closed') {
      await slot.sender.replaceTrack(null);
      slot.direction = 'inactive';
      this._renegotiate();
    }
    this._emit('local-media', {});
  }

  // ---------------------------------------------------------------- paid sessions (LangDAO)

  /**
   * Tell the server the student started a paid session on chain (`startSession(tutor, language)` was
   * mined). The server checks the chain and answers `paid_session` (event `paid-session`) or an
   * `error` (`not_a_party`, `paid_session_not_found`, `paid_sessions_disabled`, …; event `server-error`).
   * The student is the `sub` of our token. Returns false when not joined.
   * @param {{tutor: string, language: number}} opts
   */
  startPaidSession({ tutor, language }) {
    if (!this.participantId) return false;
    this._paidPending = true;
    this._send({ type: 'session_started', tutor: String(tutor), language: Number(language) });
    return true;
  }

  /** The End button of a paid session (student or tutor only). */
  endPaidSession() {
    if (!this.participantId) return false;
    this._send({ type: 'end_session' });
    return true;
  }

  /**
   * `GET /api/rooms/{room}/paid-session` with our token: the running paid session, or the latest one
   * with its settlement. Resolves `{status, body}` (body: parsed JSON or null); never throws on HTTP errors.
   * @returns {Promise<{status: number, body: any}>}
   */
  async fetchPaidSession() {
    if (!this.token) return { status: 0, body: null };
    try {
      const res = await fetch(`${this.origin}/api/rooms/${encodeURIComponent(this.room)}/paid-session`, {
        headers: { authorization: `Bearer ${this.token}` }, cache: 'no-store',
      });
      let body = null;
      try { body = await res.json(); } catch { /* not JSON */ }
      return { status: res.status, body };
    } catch {
      return { status: 0, body: null };
    }
  }

  // ---------------------------------------------------------------- queries

  /**
   * Received tracks of a participant, by source.
   * @param {string} participantId
   * @returns {{microphone: MediaStreamTrack|null, camera: MediaStreamTrack|null, screen: MediaStreamTrack|null}}
   */
  mediaOf(participantId) {
    /** @type {Record<Source, MediaStreamTrack|null>} */
    const out = { microphone: null, camera: null, screen: null };
    for (const b of this.remote.values()) {
      if (b.participantId === participantId && b.track) out[b.source] = b.track;
    }
    return out;
  }

  /**
   * Whether a participant's source is off: not published, or published muted.
   * @param {string} participantId @param {Source} source
   */
  isSourceOff(participantId, source) {
    const p = this.participants.get(participantId);
    if (!p) return true;
    for (const t of p.tracks.values()) if (t.source === source) return t.muted;
    return true;
  }

  /**
   * Per remote participant decode counters from the subscriber's getStats(). Used by the browser tests
   * (`window.confab.stats()`) and by the UI's level meters.
   * @returns {Promise<ParticipantStats[]>}
   */
  async stats() {
    const report = this._sub ? await this._sub.getStats() : null;
    return participantStats(report, this.participants, this.remote);
  }

  /**
   * What our publisher transport has sent (test hook, `window.confab.sendStats()`).
   * @returns {Promise<import('/types.js').SendStats>}
   */
  async sendStats() {
    return sendStats(this._pub ? await this._pub.getStats() : null);
  }

  /**
   * Both transports' selected ICE candidate pairs (test hook and diagnostics).
   * @returns {Promise<{publisher: import('/types.js').PairStats|null, subscriber: import('/types.js').PairStats|null}>}
   */
  async pairs() {
    const [pub, sub] = await Promise.all([this._pub?.getStats() ?? null, this._sub?.getStats() ?? null]);
    return { publisher: pairStats(pub), subscriber: pairStats(sub) };
  }

  /** Our own microphone level (0..1) as the publisher transport measures it. */
  async localAudioLevel() {
    if (!this._pub || !this.local.microphone || this.local.micMuted) return 0;
    const report = await this._pub.getStats();
    let level = 0;
    report.forEach((s) => { if (s.type === 'media-source' && s.kind === 'audio') level = s.audioLevel || 0; });
    return level;
  }

  /** Connection states of both transports, for diagnostics. */
  transportStates() {
    const d = (/** @type {RTCPeerConnection|null} */ pc) => pc
      ? { connection: pc.connectionState, ice: pc.iceConnectionState, signaling: pc.signalingState }
      : null;
    return { state: this.state, reason: this.reason, ws: this._ws?.readyState ?? null,
      publisher: d(this._pub), subscriber: d(this._sub) };
  }

  // ---------------------------------------------------------------- connection internals

  async _acquireLocalMedia() {
    // A view-only token (a `viewer` link) never publishes: no devices are asked for, and the
    // publisher transport carries only the chat DataChannel (the server refuses any track).
    const given = this._tokenSource ? this._tokenSource() : null;
    if (given && typeof given.token === 'string' && jwtRole(given.token) === 'viewer') {
      this.role = 'viewer';
      Object.assign(this.local, { microphone: null, camera: null, cameraOff: true,
        mediaError: 'You joined view-only: you see, hear and chat; the others do not see or hear you.' });
      this._notice(this.local.mediaError, 'info');
      this._emit('local-media', {});
      return;
    }
    const { microphone, camera, error } = await acquireDevices();
    Object.assign(this.local, { microphone, camera, mediaError: error, cameraOff: !camera });
    if (error) this._notice(`${error}${!camera && !microphone ? ' You joined receive-only.' : ''}`, 'warning');
    this._emit('local-media', {});
  }

  /** @param {Kind} kind @returns {Promise<MediaStreamTrack|null>} */
  async _getDeviceTrack(kind) {
    try {
      const track = await deviceTrack(kind);
      if (this.state === 'left') { track.stop(); return null; } // left while the browser asked
      return track;
    } catch (e) {
      this._notice(/** @type {Error} */ (e).message, 'error');
      return null;
    }
  }

  async _connect() {
    const gen = ++this._gen;
    // Resuming keeps the transports, the room model and the chat channel: only the socket is new.
    if (this._resume) this._closeSocket(); else this._teardown(this.state);
    /** @type {string} */
    let token;
    try {
      token = Date.now() < this._tokenExpiresAt ? this.token : await this._fetchToken();
    } catch (e) {
      if (gen !== this._gen) return;
      return this._connectionLost(gen, /** @type {Error} */ (e));
    }
    if (gen !== this._gen) return;
    const node = this._nodeOrigin || this.origin;
    const scheme = node.startsWith('https:') ? 'wss:' : 'ws:';
    const url = `${scheme}//${new URL(node).host}/ws?token=${encodeURIComponent(token)}`;
    const ws = new WebSocket(url);
    this._ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (gen !== this._gen) return;
      opened = true;
      this._lastMessageAt = Date.now();
      this._awaitingJoin = true;
      if (this._resume) {
        this._send({ type: 'resume', participant_id: this._resume.participantId, resume_token: this._resume.token });
      } else {
        this._send({ type: 'join', room: this.room, name: this.name });
      }
      this._timers.join = setTimeout(() => {
        if (gen === this._gen && this._awaitingJoin) {
          this._connectionLost(gen, new Error('the server did not answer our join'));
        }
      }, TIMING.joinTimeoutMs);
      this._timers.ping = setInterval(() => this._heartbeat(gen), TIMING.pingIntervalMs);
    };
    ws.onmessage = (ev) => {
      if (gen !== this._gen) return;
      this._lastMessageAt = Date.now();
      if (typeof ev.data !== 'string') return;
      /** @type {any} */
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      this._onMessage(gen, msg).catch((e) => this._fault(gen, e));
    };
    ws.onclose = (ev) => {
      if (gen !== this._gen || this.state === 'left') return;
      if (!opened) this._tokenExpiresAt = 0; // refused (401?): the next attempt asks for a new token
      const why = opened
        ? `connection to the server closed${ev.code ? ` (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})` : ''}`
        : 'cannot open the WebSocket to the server';
      this._connectionLost(gen, new Error(why));
    };
  }

  async _fetchToken() {
    // A token the page holds wins over a guest token, while it has more than a minute left.
    const given = this._tokenSource ? this._tokenSource() : null;
    if (given && typeof given.token === 'string' && given.expiresAt - 60_000 > Date.now()) {
      this.token = given.token;
      this._tokenExpiresAt = given.expiresAt - 60_000;
      this.userId = jwtSubject(given.token);
      this.role = jwtRole(given.token);
      if (this.userId) this.userIds.add(this.userId);
      return given.token;
    }
    /** @type {Response} */
    let res;
    try {
      res = await fetch(`${this.origin}/api/guest-token`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: this.name }),
      });
    } catch {
      throw new Error('the server is unreachable');
    }
    if (!res.ok) {
      let detail = '';
      try { const body = await res.json(); detail = body.message || body.error || ''; } catch { /* not JSON */ }
      const err = new Error(`the server refused a guest token (HTTP ${res.status}${detail ? `: ${detail}` : ''})`);
      throw res.status >= 400 && res.status < 500 && res.status !== 429 ? Object.assign(new FatalError(err.message)) : err;
    }
    const body = await res.json();
    if (!body || typeof body.token !== 'string') throw new Error('the server sent no token');
    this.token = body.token;
    // Reused on reconnects (one chat identity) until a minute before it expires.
    const ttl = Number(body.expires_in) || 0;
    this._tokenExpiresAt = ttl > 120 ? Date.now() + (ttl - 60) * 1000 : 0;
    this.userId = jwtSubject(body.token);
    this.role = jwtRole(body.token);
    if (this.userId) this.userIds.add(this.userId);
    return body.token;
  }

  /**
   * The socket or a transport broke: retry with back-off, or fail when attempts are used up.
   * @param {number} gen @param {Error} err
   */
  _connectionLost(gen, err) {
    if (gen !== this._gen || this.state === 'left' || this.state === 'failed') return;
    this._gen++;
    // A lost socket is not a lost participant: the server keeps us (and our media) for a while,
    // so come back with `resume` on a new socket, transports untouched.
    if (this._resume && this._pub && !(err instanceof FatalError)
        && this._resumeAttempt < TIMING.resumeBackoffMs.length) {
      this._closeSocket();
      const delay = TIMING.resumeBackoffMs[this._resumeAttempt++];
      this._setState('reconnecting', `${err.message || String(err)}; resuming`);
      this._timers.retry = setTimeout(() => { if (this.state !== 'left') this._connect(); }, delay);
      return;
    }
    this._resume = null;
    this._teardown(this.state);
    const reason = err.message || String(err);
    if (err instanceof FatalError || this._attempt >= TIMING.backoffMs.length) {
      this._setState('failed', reason);
      return;
    }
    const delay = TIMING.backoffMs[this._attempt++];
    this._setState(this._joinedOnce ? 'reconnecting' : 'connecting',
      `${reason}; retrying in ${Math.round(delay / 1000)} s (attempt ${this._attempt} of ${TIMING.backoffMs.length})`);
    this._timers.retry = setTimeout(() => { if (this.state !== 'left') this._connect(); }, delay);
  }

  /** @param {number} gen @param {unknown} e */
  _fault(gen, e) {
    if (gen !== this._gen) return;
    console.error('confab:', e);
    this._connectionLost(gen, e instanceof Error ? e : new Error(String(e)));
  }

  /** @param {number} gen */
  _heartbeat(gen) {
    if (gen !== this._gen) return;
    this._probe(gen, TIMING.heartbeatProbeMs);
  }

  /** Close the socket and its timers and pending requests; transports and the room model stay. */
  _closeSocket() {
    for (const k of /** @type {(keyof typeof this._timers)[]} */ (Object.keys(this._timers))) {
      clearTimeout(this._timers[k]); clearInterval(this._timers[k]); this._timers[k] = 0;
    }
    if (this._ws) {
      const ws = this._ws;
      ws.onopen = ws.onmessage = ws.onclose = null;
      if (ws.readyState <= 1) ws.close(1000);
      this._ws = null;
    }
    this._awaitingJoin = false;
    this._pendingAnswer?.reject(new Error('connection closed'));
    this._pendingAnswer = null;
    this._pubBusy = false;
    this._pubDirty = false;
    this._subChain = Promise.resolve();
  }

  /** Close socket and transports, forget the room model; keeps local tracks. @param {SessionState} _state */
  _teardown(_state) {
    this._closeSocket();
    this._mediaGen++;
    this._pub?.close(); this._pub = null;
    this._sub?.close(); this._sub = null;
    this._slots = { microphone: null, camera: null, screen: null };
    this._candidateGate = { publisher: false, subscriber: false };
    this._candidateQueue = { publisher: [], subscriber: [] };
    this.chatChannel = null;
    this.participantId = null;
    this.remote.clear();
    this._wants.clear();
    this.publisherPaused = {};
    this._activeRids = {};
    const gone = [...this.participants.values()];
    this.participants.clear();
    for (const p of gone) this._emit('participant-left', { participantId: p.id, name: p.name, silent: true });
  }

  // ---------------------------------------------------------------- server messages

  /** @param {number} gen @param {any} msg */
  async _onMessage(gen, msg) {
    switch (msg.type) {
      case 'joined': return this._onJoined(gen, msg);
      case 'resumed': return this._onResumed(gen, msg);
      case 'participant_reconnecting':
      case 'participant_reconnected': {
        const p = this.participants.get(msg.participant_id);
        if (!p) return;
        p.reconnecting = msg.type === 'participant_reconnecting';
        this._emit('participant-updated', { participantId: p.id });
        return;
      }
      case 'participant_joined': {
        const p = toParticipant(msg.participant);
        this.participants.set(p.id, p);
        this._emit('participant-joined', { participant: p });
        return;
      }
      case 'participant_left': {
        const p = this.participants.get(msg.participant_id);
        this.participants.delete(msg.participant_id);
        for (const [mid, b] of this.remote) if (b.participantId === msg.participant_id) this.remote.delete(mid);
        this._emit('participant-left', { participantId: msg.participant_id, name: p?.name || '' });
        return;
      }
      case 'track_published': {
        const p = this.participants.get(msg.participant_id);
        if (!p) return;
        const t = toTrack(msg.track);
        p.tracks.set(t.id, t);
        this._emit('participant-updated', { participantId: p.id });
        return;
      }
      case 'track_unpublished': {
        const p = this.participants.get(msg.participant_id);
        p?.tracks.delete(msg.track_id);
        let changed = false;
        for (const [mid, b] of this.remote) {
          if (b.participantId === msg.participant_id && b.trackId === msg.track_id) { this.remote.delete(mid); changed = true; }
        }
        if (p) this._emit('participant-updated', { participantId: p.id });
        if (changed) this._emit('media', { participantId: msg.participant_id });
        return;
      }
      case 'muted_by_host':
        // The server forwards none of it now; mute it here too so the buttons say so, and the
        // user unmutes it as usual.
        this._emit('muted-by-host', { source: String(msg.source) });
        if (msg.source === 'microphone') this.setMicMuted(true);
        else if (msg.source === 'camera') this.setCameraOff(true);
        return;
      case 'active_speakers':
        // The server's list from the microphones' audio levels, dominant speaker first.
        this.activeSpeakers = Array.isArray(msg.speakers)
          ? msg.speakers.map((/** @type {any} */ x) => String(x?.participant_id || '')).filter(Boolean).slice(0, 8)
          : [];
        this._emit('active-speakers', { speakers: this.activeSpeakers });
        return;
      case 'publisher_layers':
        if (msg.source === 'camera' || msg.source === 'screen') {
          this._activeRids[msg.source] = Array.isArray(msg.rids) ? msg.rids.map(String) : null;
          this._applySendState(msg.source);
        }
        return;
      case 'publisher_paused':
        if (msg.source === 'camera' || msg.source === 'screen') this._onPublisherPaused(msg.source, !!msg.paused);
        return;
      case 'room_locked':
        this.locked = !!msg.locked;
        this._emit('room-locked', { locked: this.locked });
        return;
      case 'track_muted': {
        const p = this.participants.get(msg.participant_id);
        const t = p?.tracks.get(msg.track_id);
        if (t) t.muted = !!msg.muted;
        else if (p) for (const x of p.tracks.values()) if (x.source === msg.source) x.muted = !!msg.muted;
        if (p) this._emit('participant-updated', { participantId: p.id });
        return;
      }
      case 'publish_answer':
        if (this._pendingAnswer) { this._pendingAnswer.resolve(msg.sdp); this._pendingAnswer = null; }
        return;
      case 'subscribe_offer':
        this._subChain = this._subChain.then(() => this._onSubscribeOffer(gen, msg))
          .catch((e) => this._fault(gen, e));
        return;
      case 'pong':
        if (typeof msg.ts === 'number') this.rttMs = Date.now() - msg.ts;
        return;
      case 'paid_session':
        this._paidPending = false;
        this.paidSession = msg.session || null;
        this._emit('paid-session', { session: this.paidSession });
        return;
      case 'paid_session_ended':
        this.paidSession = null;
        this._emit('paid-session-ended', { id: String(msg.id || ''), reason: String(msg.reason || '') });
        return;
      case 'error': return this._onServerError(gen, msg);
      case 'redirect': return this._onRedirect(gen, msg);
      default:
        // Presence and call events reach every socket of a user; the calls page handles them.
        if (/^(call_|presence)/.test(String(msg.type))) break;
        console.warn('confab: unknown message type', msg.type);
    }
  }

  /** @param {number} gen @param {any} msg */
  async _onJoined(gen, msg) {
    clearTimeout(this._timers.join);
    this._redirects = 0;
    this._awaitingJoin = false;
    this._probe(gen, TIMING.heartbeatProbeMs); // measures the round trip the probes allow for
    this._resumeAttempt = 0;
    this.participantId = msg.participant_id;
    this._applyIceServers(msg.ice_servers);
    this._resume = msg.resume_token ? { participantId: msg.participant_id, token: String(msg.resume_token) } : null;
    this.maxParticipants = msg.max_participants || 0;
    this._joinedOnce = true;
    for (const raw of msg.participants || []) {
      const p = toParticipant(raw);
      this.participants.set(p.id, p);
      this._emit('participant-joined', { participant: p, initial: true });
    }
    this._emit('joined', { participantId: this.participantId, room: msg.room, maxParticipants: this.maxParticipants });
    const sub = this._ensureSubscriber(gen);
    // A permission prompt may take the user a while: the media timeout starts once we publish.
    await this._devicesReady;
    if (gen !== this._gen || this.state === 'left') return;
    if ([...this.participants.values()].some((p) => p.tracks.size > 0)) await connectedOrAfter(sub, TIMING.receiveFirstMs);
    if (gen !== this._gen || this.state === 'left') return;
    this._timers.media = setTimeout(() => {
      if (gen === this._gen && this.state !== 'connected') {
        this._connectionLost(gen, new Error('could not establish the media connection (ICE/DTLS timed out)'));
      }
    }, TIMING.mediaTimeoutMs);
    this._createPublisher(gen);
    await this._renegotiate();
    // Tell the others about mute states that predate this connection.
    if (this.local.micMuted && this.local.microphone) this._sendMute('microphone', true);
  }

  /**
   * Back on a new socket as the same participant: sync the room model with the server's view, and
   * restart ICE on any transport that did not survive (a network change).
   * @param {number} gen @param {any} msg
   */
  _onResumed(gen, msg) {
    clearTimeout(this._timers.join);
    this._awaitingJoin = false;
    this._probe(gen, TIMING.heartbeatProbeMs); // measures the round trip the probes allow for
    this._resumeAttempt = 0;
    this._attempt = 0;
    this._applyIceServers(msg.ice_servers);
    const now = new Map((msg.participants || []).map((/** @type {any} */ raw) => {
      const p = toParticipant(raw);
      return [p.id, p];
    }));
    for (const old of [...this.participants.values()]) {
      if (!now.has(old.id)) {
        this.participants.delete(old.id);
        for (const [mid, b] of this.remote) if (b.participantId === old.id) this.remote.delete(mid);
        this._emit('participant-left', { participantId: old.id, name: old.name });
      }
    }
    for (const p of now.values()) {
      const known = this.participants.has(p.id);
      this.participants.set(p.id, p);
      this._emit(known ? 'participant-updated' : 'participant-joined', known ? { participantId: p.id } : { participant: p });
    }
    const all = this._networkChanged;
    this._networkChanged = false;
    for (const target of /** @type {Target[]} */ (['publisher', 'subscriber'])) {
      const pc = target === 'publisher' ? this._pub : this._sub;
      if (pc && (all || pc.connectionState !== 'connected')) this._restartIce(gen, target);
    }
    if (this._pub?.connectionState === 'connected') this._setState('connected', '');
  }

  /**
   * The operator's ICE servers from `joined` / `resumed` (usually none: confab needs no TURN),
   * for transports made from now on and, with fresh TURN credentials, for the current ones.
   * @param {unknown} list
   */
  _applyIceServers(list) {
    if (!Array.isArray(list) || list.length === 0) return;
    const iceServers = /** @type {RTCIceServer[]} */ (list);
    this.rtcConfig = { ...this.rtcConfig, iceServers };
    for (const pc of [this._pub, this._sub]) {
      try { pc?.setConfiguration({ ...pc.getConfiguration(), iceServers }); } catch { /* closed */ }
    }
  }

  /**
   * A transport failed (or did not survive a network change): restart its ICE with fresh
   * credentials (RFC 8445 section 9): the publisher by our own offer, the subscriber by asking the
   * server. If it is not connected again in time, rejoin from scratch.
   * @param {number} gen @param {Target} target
   */
  _restartIce(gen, target) {
    if (gen !== this._gen || !this._ws || this._ws.readyState !== 1 || this._awaitingJoin) return; // after the resume
    if (target === 'publisher') {
      this._iceRestart = true;
      this._renegotiate();
    } else {
      this._send({ type: 'restart_ice', target: 'subscriber' });
    }
    const timer = target === 'publisher' ? 'restartPub' : 'restartSub';
    clearTimeout(this._timers[timer]);
    this._timers[timer] = setTimeout(() => {
      const pc = target === 'publisher' ? this._pub : this._sub;
      if (gen === this._gen && pc && pc.connectionState !== 'connected') {
        this._resume = null; // the transports are beyond saving: a fresh join
        this._connectionLost(gen, new Error(`the media connection (${target}) did not recover`));
      }
    }, TIMING.iceRestartMs);
  }

  /**
   * A transport went `disconnected` (no answer to its checks: a blip, or a network change). Probe
   * the socket at once (see {@link _probe}); if it answers and the transport is still
   * `disconnected` {@link TIMING.disconnectedMs} after it went so, restart its ICE rather than
   * wait for `failed` (~30 s in Chromium).
   * @param {number} mg @param {Target} target @param {RTCPeerConnection} pc
   */
  _watchDisconnected(mg, target, pc) {
    const key = target === 'publisher' ? 'pubDown' : 'subDown';
    clearTimeout(this._timers[key]);
    if (pc.connectionState !== 'disconnected') return;
    this._probe(this._gen);
    this._timers[key] = setTimeout(() => {
      if (mg === this._mediaGen && pc.connectionState === 'disconnected') this._restartIce(this._gen, target);
    }, TIMING.disconnectedMs);
  }

  /**
   * Media stopped answering: if the network changed, the socket is probably dead too (its TCP
   * connection is bound to the old address) but will not notice for a long time. Ping it: silence
   * for {@link TIMING.probeMs} plus two round trips resumes on a new socket (whose `resumed`
   * restarts ICE on every transport). A probe already under way covers this one.
   * @param {number} gen @param {number} [graceMs] how long an answer may take besides two round trips
   */
  _probe(gen, graceMs = TIMING.probeMs) {
    if (gen !== this._gen || this._awaitingJoin || this._timers.probe || !this._ws) return;
    const sentAt = Date.now();
    this._send({ type: 'ping', ts: sentAt });
    const rtt = Number.isFinite(this.rttMs) ? this.rttMs : 500;
    this._timers.probe = setTimeout(() => {
      this._timers.probe = 0;
      if (gen === this._gen && this._lastMessageAt < sentAt) {
        // A socket that goes silent without closing: most likely the network changed under it,
        // and the transports' ICE pairs are dead too (or soon will be).
        this._networkChanged = true;
        this._connectionLost(gen, new Error('the server stopped answering'));
      }
    }, graceMs + 2 * Math.min(rtt, 2_000));
  }

  /**
   * Another node of the deployment hosts the room (docs/protocol.md, `redirect`): join there,
   * with the same token. At most 3 in a row, so two nodes that disagree cannot bounce us forever.
   * @param {number} gen @param {any} msg
   */
  _onRedirect(gen, msg) {
    if (gen !== this._gen) return;
    let node;
    try {
      const u = new URL(String(msg.url));
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(u.protocol);
      node = u.origin;
    } catch {
      return this._connectionLost(gen, new Error('the server sent us to an invalid address'));
    }
    this._redirects += 1;
    if (this._redirects > 3) {
      return this._connectionLost(gen, new Error('the servers keep sending us to each other'));
    }
    this._awaitingJoin = false;
    clearTimeout(this._timers.join);
    this._nodeOrigin = node;
    this._connect();
  }

  /** @param {number} gen @param {any} msg */
  _onServerError(gen, msg) {
    const code = String(msg.code || 'internal');
    const message = String(msg.message || code);
    this._emit('server-error', { code, message });
    if (code === 'resume_failed') {
      this._resume = null; // gone on the server (grace over): join afresh
      this._connectionLost(gen, new Error('could not resume; joining again'));
      return;
    }
    if (this._paidPending && PAID_ERRORS.has(code)) {
      this._paidPending = false; // the refusal of our session_started
      return;
    }
    if (!this.participantId && FATAL_JOIN_ERRORS.has(code)) {
      this._connectionLost(gen, new FatalError(`${code}: ${message}`));
    } else if (code === 'removed') {
      // A host removed us: the server closes the socket; coming back is not ours to try.
      this._resume = null;
      this._connectionLost(gen, new FatalError(`${code}: ${message}`));
    } else if (this._pendingAnswer && OFFER_ERRORS.has(code)) {
      this._pendingAnswer.reject(new Error(`the server refused our offer: ${code}: ${message}`));
      this._pendingAnswer = null;
    }
  }

  // ---------------------------------------------------------------- publisher transport

  /** @param {number} gen */
  _createPublisher(gen) {
    const pc = new RTCPeerConnection(this.rtcConfig);
    this._pub = pc;
    // Created before the first offer so the offer carries the SCTP m-line; chat uses it later.
    const chat = pc.createDataChannel('chat', { ordered: true });
    this.chatChannel = chat;
    this._emit('datachannel', { channel: chat });
    const mg = this._mediaGen;
    pc.onicecandidate = (ev) => this._onLocalCandidate('publisher', ev.candidate);
    pc.onconnectionstatechange = () => {
      if (mg !== this._mediaGen) return;
      if (pc.connectionState === 'connected') {
        clearTimeout(this._timers.media);
        this._attempt = 0;
        if (!this._awaitingJoin && this._ws?.readyState === 1) this._setState('connected', '');
      } else if (pc.connectionState === 'failed') {
        this._restartIce(this._gen, 'publisher');
      }
      this._watchDisconnected(mg, 'publisher', pc);
    };
    const stream = new MediaStream();
    for (const source of /** @type {Source[]} */ (['microphone', 'camera'])) {
      const track = this.local[source];
      if (!track) continue;
      stream.addTrack(track);
      this._slots[source] = pc.addTransceiver(track, sendInit(source, [stream]));
    }
    if (this.local.screen) {
      this._slots.screen = pc.addTransceiver(this.local.screen, { direction: 'sendonly' });
    }
  }

  /**
   * Put a track on the publisher transport: reuse the source's transceiver or add one and renegotiate.
   * @param {Source} source @param {MediaStreamTrack} track
   */
  async _publishSource(source, track) {
    const pc = this._pub;
    if (!pc || pc.signalingState === 'closed') return; // published at the next (re)connect
    const slot = this._slots[source];
    if (slot) {
      await slot.sender.replaceTrack(track);
      if (slot.direction !== 'sendonly') { slot.direction = 'sendonly'; await this._renegotiate(); }
    } else {
      this._slots[source] = pc.addTransceiver(track, sendInit(source, []));
      await this._renegotiate();
    }
  }

  /** Run publisher offer/answer rounds until nothing changed meanwhile. One offer in flight at a time. */
  async _renegotiate() {
    this._pubDirty = true;
    if (this._pubBusy) return;
    this._pubBusy = true;
    const gen = this._gen;
    try {
      while (this._pubDirty && gen === this._gen && this._pub) {
        this._pubDirty = false;
        await this._offerOnce(gen, this._pub);
      }
    } catch (e) {
      this._fault(gen, e);
    } finally {
      if (gen === this._gen) this._pubBusy = false;
    }
  }

  /** @param {number} gen @param {RTCPeerConnection} pc */
  async _offerOnce(gen, pc) {
    const offer = await pc.createOffer(this._iceRestart ? { iceRestart: true } : undefined);
    this._iceRestart = false;
    await pc.setLocalDescription(offer);
    if (gen !== this._gen) return;
    /** @type {{mid: string, kind: Kind, source: Source}[]} */
    const tracks = [];
    for (const source of /** @type {Source[]} */ (['microphone', 'camera', 'screen'])) {
      const t = this._slots[source];
      if (t && t.mid != null && (t.direction === 'sendonly' || t.direction === 'sendrecv')) {
        tracks.push({ mid: t.mid, kind: source === 'microphone' ? 'audio' : 'video', source });
      }
    }
    const answer = new Promise((resolve, reject) => {
      this._pendingAnswer = { resolve, reject };
      setTimeout(() => reject(new Error('the server did not answer our publish offer')), TIMING.answerTimeoutMs);
    });
    this._send({ type: 'publish_offer', sdp: pc.localDescription?.sdp, tracks });
    this._openCandidateGate('publisher');
    const sdp = /** @type {string} */ (await answer);
    if (gen !== this._gen || pc.signalingState === 'closed') return;
    await pc.setRemoteDescription({ type: 'answer', sdp });
  }

  // ---------------------------------------------------------------- subscriber transport

  /** @param {number} gen */
  _ensureSubscriber(gen) {
    if (this._sub) return this._sub;
    const pc = new RTCPeerConnection(this.rtcConfig);
    this._sub = pc;
    const mg = this._mediaGen;
    pc.onicecandidate = (ev) => this._onLocalCandidate('subscriber', ev.candidate);
    pc.ontrack = (ev) => {
      if (mg !== this._mediaGen) return;
      // Normally bound by mid in _bindRemoteTracks; this is the msid fallback (a=msid:<participant> <track>).
      const mid = ev.transceiver.mid;
      if (mid == null || this.remote.has(mid)) return;
      const participantId = ev.streams[0]?.id;
      const p = participantId && this.participants.get(participantId);
      if (!p) return;
      const meta = p.tracks.get(ev.track.id);
      const source = meta?.source || (ev.track.kind === 'audio' ? 'microphone' : 'camera');
      this.remote.set(mid, { mid, participantId: p.id, trackId: ev.track.id, source,
        kind: /** @type {Kind} */ (ev.track.kind), track: ev.track });
      this._emit('media', { participantId: p.id });
    };
    pc.onconnectionstatechange = () => {
      if (mg !== this._mediaGen) return;
      if (pc.connectionState === 'failed') this._restartIce(this._gen, 'subscriber');
      this._watchDisconnected(mg, 'subscriber', pc);
    };
    return pc;
  }

  /** @param {number} gen @param {any} msg */
  async _onSubscribeOffer(gen, msg) {
    if (gen !== this._gen) return;
    const pc = this._ensureSubscriber(gen);
    // The same offer again (sent anew after a resume, or after the server's answer timeout): it
    // is applied already; send the same answer again (the server ignores one it has).
    if (pc.signalingState === 'stable' && pc.currentRemoteDescription?.sdp === msg.sdp && pc.currentLocalDescription) {
      this._send({ type: 'subscribe_answer', sdp: pc.currentLocalDescription.sdp });
      return;
    }
    /** @type {Map<string, RemoteBinding>} */
    const next = new Map();
    for (const t of msg.tracks || []) {
      if (t.mid == null) continue;
      next.set(String(t.mid), { mid: String(t.mid), participantId: t.participant_id, trackId: t.track_id,
        source: t.source, kind: t.kind, track: null });
    }
    const before = this.remote;
    this.remote = next;
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    if (gen !== this._gen) return;
    this._send({ type: 'subscribe_answer', sdp: pc.localDescription?.sdp });
    this._openCandidateGate('subscriber');
    this._bindRemoteTracks(pc, before, msg.tracks?.length ? null : msidBindings(msg.sdp));
  }

  /**
   * Attach each m-line's receiver track to its binding and tell the UI which participants changed.
   * @param {RTCPeerConnection} pc @param {Map<string, RemoteBinding>} before
   * @param {Map<string, {participantId: string, trackId: string}>|null} msid  fallback when `tracks` is empty
   */
  _bindRemoteTracks(pc, before, msid) {
    const changed = new Set();
    for (const tr of pc.getTransceivers()) {
      const mid = tr.mid;
      if (mid == null || tr.currentDirection === 'inactive' || tr.currentDirection === 'stopped') continue;
      let b = this.remote.get(mid);
      if (!b && msid?.has(mid)) {
        const m = /** @type {{participantId: string, trackId: string}} */ (msid.get(mid));
        const meta = this.participants.get(m.participantId)?.tracks.get(m.trackId);
        const kind = /** @type {Kind} */ (tr.receiver.track.kind);
        b = { mid, ...m, kind, source: meta?.source || (kind === 'audio' ? 'microphone' : 'camera'), track: null };
        this.remote.set(mid, b);
      }
      if (b) b.track = tr.receiver.track;
    }
    for (const [mid, b] of this.remote) {
      const old = before.get(mid);
      if (!old || old.participantId !== b.participantId || old.trackId !== b.trackId) changed.add(b.participantId);
    }
    for (const [mid, old] of before) {
      const now = this.remote.get(mid);
      if (!now || now.participantId !== old.participantId || now.trackId !== old.trackId) changed.add(old.participantId);
    }
    for (const participantId of changed) this._emit('media', { participantId });
  }

  // ---------------------------------------------------------------- ICE candidates

  /** @param {Target} target @param {RTCIceCandidate|null} c */
  _onLocalCandidate(target, c) {
    if (!c) return; // end of gathering is signalled by Chromium with an empty-string candidate first
    /** @type {RTCIceCandidateInit} */
    const init = { candidate: c.candidate, sdpMid: c.sdpMid ?? '0', sdpMLineIndex: c.sdpMLineIndex ?? 0 };
    if (this._candidateGate[target]) this._send({ type: 'candidate', target, candidate: init });
    else this._candidateQueue[target].push(init);
  }

  /** The offer/answer of `target` was sent: flush the candidates gathered meanwhile. @param {Target} target */
  _openCandidateGate(target) {
    this._candidateGate[target] = true;
    const queued = this._candidateQueue[target];
    this._candidateQueue[target] = [];
    for (const candidate of queued) this._send({ type: 'candidate', target, candidate });
  }

  // ---------------------------------------------------------------- helpers

  /** @param {Record<string, unknown>} msg */
  _send(msg) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) this._ws.send(JSON.stringify(msg));
  }

  /**
   * Host controls (docs/protocol.md, `host_mute`, `host_remove`, `host_lock`): only a `host` token
   * may use them; the server checks and answers anyone else with `not_allowed` (a `server-error`).
   * @param {string} participantId @param {Source} source
   */
  hostMute(participantId, source) { this._send({ type: 'host_mute', participant_id: participantId, source }); }

  /** Removes a participant from the room; its user may not come back while the room is open. @param {string} participantId */
  hostRemove(participantId) { this._send({ type: 'host_remove', participant_id: participantId }); }

  /** Locks (or unlocks) the room: nobody new joins. @param {boolean} locked */
  hostLock(locked) { this._send({ type: 'host_lock', locked }); }

  /**
   * Whether we want a remote track forwarded to us, and the size (CSS px) we render it at: a hidden
   * tile or audio-only mode turns a camera off, and the server stops sending it (video comes back
   * on a keyframe when turned on). Sent only on a change (the size when it moves by a quarter).
   * @param {string} trackId @param {boolean} enabled @param {number} [width] @param {number} [height]
   */
  setTrackWanted(trackId, enabled, width = 0, height = 0) {
    const w = Math.round(width);
    const h = Math.round(height);
    const prev = this._wants.get(trackId);
    const moved = !prev || Math.abs(prev.w - w) > prev.w / 4 || Math.abs(prev.h - h) > prev.h / 4;
    if (prev && prev.enabled === enabled && !moved) return;
    this._wants.set(trackId, { enabled, w, h });
    if (!this.participantId) return;
    this._send({ type: 'track_settings', track_id: trackId, enabled, ...(w > 0 && h > 0 ? { width: w, height: h } : {}) });
  }

  /**
   * The server says nobody receives our `source` now (everyone turned it off): stop encoding it, or
   * start again. Only the sender's encodings change (no renegotiation); the preview stays.
   * @param {Source} source @param {boolean} paused
   */
  async _onPublisherPaused(source, paused) {
    this.publisherPaused[source] = paused;
    await this._applySendState(source);
  }

  /**
   * Applies what the server asked of `source`'s sender: every encoding off while paused
   * (`publisher_paused`), else only the simulcast layers some subscriber wants (`publisher_layers`).
   * @param {Source} source
   */
  async _applySendState(source) {
    const sender = this._slots[source]?.sender;
    if (!sender) return;
    const paused = !!this.publisherPaused[source];
    const rids = this._activeRids[source];
    try {
      const params = sender.getParameters();
      if (!params.encodings?.length) return;
      for (const e of params.encodings) e.active = !paused && (!rids || !e.rid || rids.includes(e.rid));
      await sender.setParameters(params);
    } catch (e) {
      console.warn('confab: could not change the sender', e);
    }
  }

  /** `mute` is only valid once joined; before that the state goes out with the next join. @param {Source} source @param {boolean} muted */
  _sendMute(source, muted) {
    if (this.participantId) this._send({ type: 'mute', source, muted });
  }

  /** @param {SessionState} state @param {string} reason */
  _setState(state, reason) {
    if (this.state === state && this.reason === reason) return;
    this.state = state;
    this.reason = reason;
    this._emit('statechange', { state, reason });
  }

  /** @param {string} message @param {'info'|'warning'|'error'} level */
  _notice(message, level) { this._emit('notice', { message, level }); }

  /** @param {string} type @param {Record<string, unknown>} detail */
  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}
