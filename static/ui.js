// confab room page UI. Owns the DOM of room.html; everything about signaling and WebRTC lives in
// protocol.js (ConfabSession), which this module drives and listens to.
//
// What it renders: a grid of participant tiles (ours mirrored first), screen-share tiles in a
// presentation area, a control bar, a people panel, a connection banner/status pill and toasts.
// The test hook is `window.confab`, the session (see ConfabSession#stats).
//
// Who the page joins as (first that applies): a `#token=<jwt>` in the URL fragment (minted by another
// backend with the shared secret; taken off the address bar at once and kept for this tab), a
// wallet sign-in ("Sign in with wallet", EIP-4361, kept for this tab until it expires), else a guest
// token as before. Tokens live in sessionStorage (`confab.token`), never in the URL or the logs.

import { ConfabSession } from '/protocol.js';
import { icon } from '/icons.js';
import { initChatUI } from '/chat-ui.js';
import { initPaidUI } from '/paid-ui.js';
import { signInWithWallet, shortAddress, tokenClaims, WalletError } from '/wallet.js';

/** @typedef {import('/types.js').Source} Source */

/**
 * @typedef {Object} Tile
 * @property {HTMLElement} el
 * @property {HTMLVideoElement} video
 * @property {HTMLElement} name
 * @property {HTMLElement} mic
 * @property {HTMLElement} note
 * @property {MediaStreamTrack|null} videoTrack   what `video.srcObject` currently shows
 */

const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
const LEVEL_POLL_MS = 300;
const SPEAKING_LEVEL = 0.04;
/** from this many tiles on, the dominant speaker is shown large (a 3×3 grid and more) */
const SPOTLIGHT_FROM = 7;

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const roomId = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() || '');
/** @type {ConfabSession|null} */
let session = null;
/** @type {Map<string, Tile>} participant tiles; key 'local' or a participant id */
const tiles = new Map();
/** @type {Map<string, Tile>} screen-share tiles; key 'local' or a participant id */
const screenTiles = new Map();
/** @type {Map<string, HTMLAudioElement>} one audio element per remote participant */
const audios = new Map();
let blockedAudio = false;
/** @type {ReturnType<typeof initChatUI>|null} */
let chatUI = null;

// ------------------------------------------------------------------ start-up

function boot() {
  takeLinkToken(); // first: the fragment leaves the address bar before anything else runs
  document.title = `${roomId} · confab`;
  $('room-id').textContent = roomId;
  $('controls-room').textContent = roomId;
  $('name-room').textContent = roomId;
  for (const el of document.querySelectorAll('[data-icon]')) {
    el.innerHTML = icon(/** @type {any} */ (el.getAttribute('data-icon')));
  }
  wireControls();
  // The first time format loads ICU's locale data (40–60 ms of main thread, profiled): after
  // the join, not in its way.
  setTimeout(startClock, 3000);
  new ResizeObserver(() => layout()).observe($('stage'));

  if (!ROOM_RE.test(roomId)) {
    showState('failed', 'This room link is not valid: a room id is 1–64 letters, digits, "-" or "_".');
    return;
  }
  renderWallet();
  const held = heldToken();
  const name = (new URLSearchParams(location.search).get('name') || '').trim()
    // A backend's link names its user: straight in, no name to type.
    || (held?.source === 'link' ? held.name || shortAddress(held.sub) : '');
  if (name) start(name.slice(0, 64));
  else askForName();
}

function askForName() {
  const overlay = $('name-overlay');
  const input = /** @type {HTMLInputElement} */ ($('name-input'));
  input.value = localStorage.getItem('confab.name') || '';
  overlay.hidden = false;
  input.focus();
  let joining = false;
  const join = (/** @type {string} */ name) => {
    if (joining) return;
    joining = true;
    localStorage.setItem('confab.name', name);
    const url = new URL(location.href);
    url.searchParams.set('name', name);
    history.replaceState(null, '', url);
    overlay.hidden = true;
    start(name);
  };
  $('name-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = input.value.trim().slice(0, 64);
    if (name) join(name);
  });
  // With a wallet in the browser: sign in here, then join as that address.
  const held = heldToken();
  const box = $('name-wallet');
  const status = $('name-wallet-status');
  const btn = /** @type {HTMLButtonElement} */ ($('name-wallet-btn'));
  box.hidden = !walletProvider() && !held;
  if (held && isAddress(held.sub)) {
    btn.textContent = `Signed in as ${shortAddress(held.sub)}`;
    btn.disabled = true;
    if (!input.value) input.value = held.name || shortAddress(held.sub);
  }
  btn.addEventListener('click', async () => {
    btn.disabled = true;
    status.textContent = 'Check your wallet…';
    delete status.dataset.code;
    const r = await walletSignIn(input.value.trim().slice(0, 64));
    if (!r.ok) {
      btn.disabled = false;
      status.textContent = `Sign-in failed: ${r.message} (${r.code})`;
      status.dataset.code = r.code;
      return;
    }
    status.textContent = `Signed in as ${shortAddress(r.address)}`;
    join(input.value.trim().slice(0, 64) || shortAddress(r.address));
  });
}

// ------------------------------------------------------------------ identity: which token to join with

const TOKEN_KEY = 'confab.token';
/**
 * A token the page holds instead of a guest token.
 * @typedef {{token: string, sub: string, name: string, expiresAt: number, source: 'link'|'wallet', room: string}} HeldToken
 */
/** @type {HeldToken|null} the same, for browsers that refuse sessionStorage */
let heldInMemory = null;

/**
 * Takes `#token=<jwt>` out of the URL (history.replaceState: not in the address bar, the history, a
 * copied link or a bookmark) and holds it for this tab. Never logs it.
 */
function takeLinkToken() {
  if (!location.hash.includes('token=')) return;
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
  params.delete('token');
  const rest = params.toString();
  history.replaceState(history.state, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`);
  const c = token ? tokenClaims(token) : null;
  if (!token || !c) { toast('This link carries no valid sign-in: you join as a guest.', 'warning'); return; }
  if (c.room && c.room !== roomId) { toast('This link signs you in to another room: you join as a guest.', 'warning'); return; }
  const expiresAt = c.exp ? c.exp * 1000 : Date.now() + 2 * 3600_000;
  if (expiresAt < Date.now() + 60_000) { toast('This link\'s sign-in has expired: you join as a guest.', 'warning'); return; }
  holdToken({ token, sub: c.sub, name: c.name, expiresAt, source: 'link', room: c.room });
}

/** @param {HeldToken} t */
function holdToken(t) {
  heldInMemory = t;
  try { sessionStorage.setItem(TOKEN_KEY, JSON.stringify(t)); } catch { /* memory only */ }
}

/**
 * The token to join with, if the page holds one with more than a minute left (synchronous: the
 * session asks before each connection, and a guest's join must not wait for it).
 * @returns {HeldToken|null}
 */
function heldToken() {
  /** @type {HeldToken|null} */
  let t = heldInMemory;
  if (!t) {
    try { t = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || 'null'); } catch { t = null; }
  }
  if (!t || typeof t.token !== 'string' || !(t.expiresAt > Date.now() + 60_000)) return null;
  if (t.room && t.room !== roomId) return null;
  return t;
}

/** The page's EIP-1193 provider, if a wallet injected one. @returns {any} */
function walletProvider() {
  const eth = /** @type {any} */ (window).ethereum;
  return eth && typeof eth.request === 'function' ? eth : null;
}

/** @param {string} s */
const isAddress = (s) => /^0x[0-9a-fA-F]{40}$/.test(String(s || ''));

/**
 * Signs in with the wallet and holds the token.
 * @param {string} name display name for the token ('' = the short address)
 * @returns {Promise<{ok: true, address: string} | {ok: false, code: string, message: string}>}
 */
async function walletSignIn(name) {
  try {
    const r = await signInWithWallet({ provider: walletProvider(), name: name || undefined });
    const c = tokenClaims(r.token);
    holdToken({ token: r.token, sub: r.address, name: c?.name || name, expiresAt: Date.now() + r.expiresIn * 1000,
      source: 'wallet', room: '' });
    return { ok: true, address: r.address };
  } catch (e) {
    const err = /** @type {any} */ (e);
    return { ok: false, code: e instanceof WalletError ? err.code : 'wallet_error', message: String(err?.message || e) };
  }
}

/** The top bar's wallet chip: the short address when signed in, else "Sign in with wallet". */
function renderWallet() {
  const btn = /** @type {HTMLButtonElement} */ ($('wallet-btn'));
  const label = $('wallet-label');
  const held = heldToken();
  if (held && isAddress(held.sub)) {
    btn.hidden = false;
    btn.disabled = true;
    btn.classList.add('signed-in');
    label.textContent = shortAddress(held.sub);
    btn.title = `Signed in as ${held.sub}${held.source === 'link' ? ' (by your link)' : ' (wallet)'}`;
    btn.dataset.address = held.sub;
    return;
  }
  btn.hidden = !walletProvider();
  btn.disabled = false;
  btn.classList.remove('signed-in');
  label.textContent = 'Sign in with wallet';
  btn.title = 'Join as your wallet address (Sign-In with Ethereum)';
}

/** In the call as a guest: sign in, then rejoin as the wallet's address. */
async function walletFromTopBar() {
  const btn = /** @type {HTMLButtonElement} */ ($('wallet-btn'));
  if (btn.disabled) return;
  btn.disabled = true;
  delete btn.dataset.error;
  $('wallet-label').textContent = 'Check your wallet…';
  const r = await walletSignIn(session?.name || '');
  if (!r.ok) {
    btn.dataset.error = r.code;
    renderWallet();
    toast(`Wallet sign-in failed: ${r.message}`, 'error', r.code, 10_000);
    return;
  }
  renderWallet();
  // A new identity is a new participant: leave on purpose, then join again with the wallet's token.
  toast(`Signed in as ${shortAddress(r.address)}: rejoining…`, 'info');
  session?.leave();
  setTimeout(() => location.reload(), 200); // the `leave` frame goes out first
}

/** @param {string} name */
function start(name) {
  const s = new ConfabSession({ room: roomId, name, tokenSource: heldToken });
  session = s;
  /** @type {any} */ (window).confab = s;
  ensureLocalTile();
  // Before start(): the chat follows the session's `datachannel` events from the first connection on.
  chatUI = initChatUI({ session: s, toast, onToggle: (open) => { if (open) setPeopleOpen(false); layout(); } });
  /** @type {any} */ (window).confabChat = chatUI.chat;
  initPaidUI({ session: s, toast, provider: walletProvider() });
  s.addEventListener('statechange', (ev) => showState(detail(ev).state, detail(ev).reason));
  s.addEventListener('joined', () => { renderPeople(); layout(); });
  s.addEventListener('participant-joined', (ev) => {
    const { participant, initial } = detail(ev);
    renderParticipant(participant.id);
    if (!initial) toast(`${participant.name} joined`, 'info');
  });
  s.addEventListener('participant-left', (ev) => {
    const { participantId, name: who, silent } = detail(ev);
    removeParticipant(participantId);
    if (!silent && who) toast(`${who} left`, 'info');
  });
  s.addEventListener('participant-updated', (ev) => renderParticipant(detail(ev).participantId));
  s.addEventListener('media', (ev) => renderParticipant(detail(ev).participantId));
  s.addEventListener('local-media', () => { renderLocal(); renderControls(); });
  s.addEventListener('server-error', (ev) => toast(`${detail(ev).message}`, 'error', detail(ev).code));
  s.addEventListener('notice', (ev) => toast(detail(ev).message, detail(ev).level, '', 10_000));
  s.addEventListener('muted-by-host', (ev) => toast(`A host muted your ${detail(ev).source}. Unmute it when you want to speak.`, 'warning', '', 10_000));
  s.addEventListener('active-speakers', () => showActiveSpeakers());
  s.addEventListener('room-locked', (ev) => {
    toast(detail(ev).locked ? 'A host locked the room: nobody new can join.' : 'A host unlocked the room.', 'info');
    renderPeople();
  });
  renderControls();
  s.start().catch((e) => showState('failed', e?.message || String(e)));
  setInterval(pollLevels, LEVEL_POLL_MS);
}

/** @param {Event} ev @returns {any} */
const detail = (ev) => /** @type {CustomEvent} */ (ev).detail;

// ------------------------------------------------------------------ tiles

/**
 * @param {string} key @param {boolean} screen
 * @returns {Tile}
 */
function makeTile(key, screen) {
  const el = document.createElement('div');
  el.className = screen ? 'tile tile-screen' : 'tile';
  el.dataset.key = key;
  el.innerHTML = `
    <video autoplay playsinline muted></video>
    <div class="avatar" aria-hidden="true"><span class="avatar-initials"></span></div>
    <div class="tile-note"></div>
    <div class="tile-label">
      <span class="tile-mic"></span>
      <span class="tile-name"></span>
      <span class="meter" aria-hidden="true"><i></i><i></i><i></i></span>
    </div>`;
  const tile = {
    el,
    video: /** @type {HTMLVideoElement} */ (el.querySelector('video')),
    name: /** @type {HTMLElement} */ (el.querySelector('.tile-name')),
    mic: /** @type {HTMLElement} */ (el.querySelector('.tile-mic')),
    note: /** @type {HTMLElement} */ (el.querySelector('.tile-note')),
    videoTrack: null,
  };
  tile.video.addEventListener('loadeddata', () => el.classList.add('has-frames'));
  return tile;
}

/**
 * Show `track` in the tile's video element, or the avatar when there is none.
 * @param {Tile} tile @param {MediaStreamTrack|null} track
 */
function setTileVideo(tile, track) {
  if (tile.videoTrack !== track) {
    tile.videoTrack = track;
    tile.el.classList.remove('has-frames');
    tile.video.srcObject = track ? new MediaStream([track]) : null;
    if (track) {
      tile.video.play().catch(() => {});
      track.addEventListener('unmute', () => tile.el.classList.toggle('video-stalled', track.muted));
      track.addEventListener('mute', () => tile.el.classList.toggle('video-stalled', track.muted));
    }
  }
  tile.el.classList.toggle('video-off', !track);
  tile.el.classList.toggle('video-stalled', !!track && track.muted);
}

/** @param {Tile} tile @param {string} label @param {string} [name] whose initials the avatar shows */
function setTileName(tile, label, name = label) {
  tile.name.textContent = label;
  const initials = name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => [...w][0].toUpperCase()).join('');
  const av = /** @type {HTMLElement} */ (tile.el.querySelector('.avatar-initials'));
  av.textContent = initials || '?';
  av.style.background = colorFor(name);
}

/** @param {Tile} tile @param {boolean} muted */
function setTileMic(tile, muted) {
  tile.el.classList.toggle('mic-off', muted);
  tile.mic.innerHTML = muted ? icon('micOff', 'icon icon-sm') : '';
  tile.mic.title = muted ? 'Microphone off' : '';
}

function ensureLocalTile() {
  if (tiles.has('local')) return /** @type {Tile} */ (tiles.get('local'));
  const tile = makeTile('local', false);
  tile.el.classList.add('tile-local');
  tiles.set('local', tile);
  $('grid').prepend(tile.el);
  renderLocal();
  return tile;
}

function renderLocal() {
  if (!session) return;
  const tile = ensureLocalTile();
  const { local } = session;
  setTileName(tile, `${session.name} (You)`, session.name);
  setTileVideo(tile, local.cameraOff ? null : local.camera);
  setTileMic(tile, local.micMuted || !local.microphone);
  tile.note.textContent = local.mediaError && !local.camera ? local.mediaError : '';
  // Our own screen share, as others see it.
  if (local.screen) {
    const st = screenTiles.get('local') || addScreenTile('local');
    setTileName(st, 'You are presenting', session.name);
    setTileVideo(st, local.screen);
  } else {
    dropScreenTile('local');
  }
  layout();
}

/** @param {string} id */
function renderParticipant(id) {
  if (!session) return;
  const p = session.participants.get(id);
  if (!p) { removeParticipant(id); return; }
  let tile = tiles.get(id);
  if (!tile) {
    tile = makeTile(id, false);
    tile.el.classList.add('tile-remote');
    tile.el.dataset.participantId = id;
    tiles.set(id, tile);
    $('grid').append(tile.el);
    tileObserver?.observe(tile.el);
    tileSizes?.observe(tile.el);
  }
  applyWants(id);
  const media = session.mediaOf(id);
  setTileName(tile, p.reconnecting ? `${p.name} · reconnecting…` : p.name, p.name);
  tile.el.classList.toggle('reconnecting', !!p.reconnecting);
  const camOff = !media.camera || isMuted(id, 'camera');
  setTileVideo(tile, camOff ? null : media.camera);
  setTileMic(tile, !media.microphone || isMuted(id, 'microphone'));
  setAudio(id, media.microphone);

  if (media.screen && !isMuted(id, 'screen')) {
    const st = screenTiles.get(id) || addScreenTile(id);
    setTileName(st, `${p.name} is presenting`, p.name);
    setTileVideo(st, media.screen);
  } else {
    dropScreenTile(id);
  }
  renderPeople();
  layout();
}

/** A published track of `source` exists and is marked muted. @param {string} id @param {Source} source */
function isMuted(id, source) {
  const p = session?.participants.get(id);
  if (!p) return true;
  for (const t of p.tracks.values()) if (t.source === source && t.muted) return true;
  return false;
}

/** @param {string} id */
function removeParticipant(id) {
  const el = tiles.get(id)?.el;
  if (el) { tileObserver?.unobserve(el); tileSizes?.unobserve(el); el.remove(); }
  tiles.delete(id);
  tileVisible.delete(id);
  dropScreenTile(id);
  setAudio(id, null);
  renderPeople();
  layout();
}

/** @param {string} key */
function addScreenTile(key) {
  const tile = makeTile(key, true);
  screenTiles.set(key, tile);
  $('screens').append(tile.el);
  return tile;
}

/** @param {string} key */
function dropScreenTile(key) {
  const t = screenTiles.get(key);
  if (!t) return;
  t.video.srcObject = null;
  t.el.remove();
  screenTiles.delete(key);
}

/** @param {string} id @param {MediaStreamTrack|null} track */
function setAudio(id, track) {
  let el = audios.get(id);
  if (!track) {
    if (el) { el.srcObject = null; el.remove(); audios.delete(id); }
    return;
  }
  if (!el) {
    el = document.createElement('audio');
    el.autoplay = true;
    audios.set(id, el);
    $('audio-sink').append(el);
  }
  const current = /** @type {MediaStream|null} */ (el.srcObject);
  if (current?.getAudioTracks()[0] !== track) {
    el.srcObject = new MediaStream([track]);
    el.play().catch(() => offerSoundUnlock());
  }
}

/** Autoplay refused our audio (no user gesture yet): one click brings it back. */
function offerSoundUnlock() {
  if (blockedAudio) return;
  blockedAudio = true;
  const t = toast('Your browser blocked the sound of this call.', 'warning', '', 0);
  const btn = document.createElement('button');
  btn.className = 'toast-action';
  btn.textContent = 'Turn on sound';
  btn.addEventListener('click', () => {
    for (const a of audios.values()) a.play().catch(() => {});
    blockedAudio = false;
    t.remove();
  });
  t.append(btn);
}

// ------------------------------------------------------------------ layout

/**
 * Size tiles so `n` of them fill `box` as large as possible at 16:9 (like Meet's auto layout).
 * @param {HTMLElement} box @param {number} n
 */
function fitTiles(box, n) {
  if (n === 0) return;
  const gap = 10;
  const W = box.clientWidth - 2;
  const H = box.clientHeight - 2;
  const size = (/** @type {number} */ cols) => {
    const rows = Math.ceil(n / cols);
    let w = (W - gap * (cols - 1)) / cols;
    let h = w * 9 / 16;
    const maxH = (H - gap * (rows - 1)) / rows;
    if (h > maxH) { h = maxH; w = h * 16 / 9; }
    return { w, h, cols };
  };
  let best = { w: 0, h: 0, cols: 1 };
  if (W >= H && box.id === 'grid') {
    // Landscape: Meet's grid — 2 side by side, 3–4 as 2×2, 5–9 as 3 columns, 10–16 as 4×4 —
    // unless another column count gives clearly larger tiles (a very wide or very flat stage).
    best = size(n <= 1 ? 1 : n <= 4 ? 2 : n <= 9 ? 3 : n <= 16 ? 4 : Math.ceil(Math.sqrt(n)));
    for (let cols = 1; cols <= n; cols++) {
      const s = size(cols);
      if (s.w > best.w * 1.2) best = s;
    }
  } else {
    // Portrait (phones) and the presentation area: the column count that makes tiles largest.
    for (let cols = 1; cols <= n; cols++) {
      const s = size(cols);
      if (s.w > best.w) best = s;
    }
  }
  box.style.setProperty('--tile-w', `${Math.max(60, Math.floor(best.w))}px`);
  box.style.setProperty('--tile-h', `${Math.max(34, Math.floor(best.h))}px`);
  box.style.setProperty('--cols', String(Math.max(2, best.cols)));
}

let layoutQueued = false;
function layout() {
  if (layoutQueued) return;
  layoutQueued = true;
  requestAnimationFrame(() => {
    layoutQueued = false;
    const presenting = screenTiles.size > 0;
    $('stage').classList.toggle('presenting', presenting);
    $('grid').dataset.count = String(tiles.size);
    // Past a screenful of small tiles, the dominant speaker's tile takes four cells.
    const spotlight = !presenting && tiles.size >= SPOTLIGHT_FROM && [...tiles.values()].some((t) => t.el.classList.contains('dominant'));
    $('grid').classList.toggle('spotlight', spotlight);
    fitTiles($('grid'), spotlight ? tiles.size + 3 : tiles.size);
    if (presenting) fitTiles($('screens'), screenTiles.size);
  });
}

// ------------------------------------------------------------------ what we receive

/** Audio-only mode: the others' cameras are turned off at the server (screen shares stay). */
let audioOnly = false;
/** @type {Map<string, boolean>} remote participant id → its tile is on screen */
const tileVisible = new Map();

/** Tiles scrolled out of view (the presenter's strip) or gone: their cameras are not needed. */
const tileObserver = typeof IntersectionObserver === 'function'
  ? new IntersectionObserver((entries) => {
    for (const e of entries) {
      const id = /** @type {HTMLElement} */ (e.target).dataset.participantId;
      if (!id) continue;
      tileVisible.set(id, e.isIntersecting);
      applyWants(id);
    }
  }, { threshold: 0 })
  : null;
/** A tile's new size goes to the server (for layer choice), when it moved by a quarter. */
const tileSizes = typeof ResizeObserver === 'function'
  ? new ResizeObserver((entries) => {
    for (const e of entries) {
      const id = /** @type {HTMLElement} */ (e.target).dataset.participantId;
      if (id) applyWants(id);
    }
  })
  : null;

/** Tells the server whether we want participant `id`'s camera, and its tile's size. @param {string} id */
function applyWants(id) {
  const p = session?.participants.get(id);
  const tile = tiles.get(id);
  if (!session || !p || !tile) return;
  const want = !audioOnly && tileVisible.get(id) !== false;
  tile.el.classList.toggle('not-received', audioOnly);
  for (const [trackId, t] of p.tracks) {
    // Device pixels: what the subscriber's screen can show decides the simulcast layer.
    const dpr = window.devicePixelRatio || 1;
    if (t.source === 'camera') session.setTrackWanted(trackId, want, tile.el.clientWidth * dpr, tile.el.clientHeight * dpr);
  }
}

function toggleAudioOnly() {
  audioOnly = !audioOnly;
  const btn = $('audio-only-btn');
  btn.setAttribute('aria-pressed', String(audioOnly));
  btn.classList.toggle('active', audioOnly);
  for (const id of tiles.keys()) if (id !== 'local') applyWants(id);
  toast(audioOnly ? "Audio only: you no longer receive the others' cameras." : "You receive the others' cameras again.", 'info');
}

/** Marks the tiles of the server's active speakers (`active-speaker`; the first `dominant`). */
function showActiveSpeakers() {
  if (!session) return;
  const list = session.activeSpeakers.map((id) => (id === session?.participantId ? 'local' : id));
  for (const [key, tile] of tiles) {
    const at = list.indexOf(key);
    tile.el.classList.toggle('active-speaker', at >= 0);
    tile.el.classList.toggle('dominant', at === 0);
  }
  layout();
}

// ------------------------------------------------------------------ people panel

function renderPeople() {
  if (!session) return;
  const list = $('people-list');
  const count = session.participants.size + 1;
  $('people-count').textContent = String(count);
  $('people-badge').textContent = String(count);
  /** @type {string[]} */
  const rows = [];
  const row = (/** @type {string} */ name, /** @type {boolean} */ micOff, /** @type {boolean} */ camOff,
    /** @type {string} */ extra, controls = '') => `
    <li class="person">
      <span class="person-avatar" style="background:${colorFor(name)}">${escapeHtml(initialOf(name))}</span>
      <span class="person-name">${escapeHtml(name)}${extra}</span>
      <span class="person-icons">${icon(micOff ? 'micOff' : 'mic', `icon icon-sm${micOff ? ' off' : ''}`)}${
        icon(camOff ? 'camOff' : 'cam', `icon icon-sm${camOff ? ' off' : ''}`)}</span>${controls}
    </li>`;
  const l = session.local;
  const host = session.role === 'host';
  if (host) {
    rows.push(`<li class="host-row"><button type="button" class="host-btn" data-host="lock" aria-pressed="${session.locked}">${
      session.locked ? 'Unlock room' : 'Lock room'}</button></li>`);
  }
  rows.push(row(session.name, l.micMuted || !l.microphone, l.cameraOff || !l.camera, ' <span class="you">(You)</span>'));
  const others = [...session.participants.values()].sort((a, b) => a.name.localeCompare(b.name));
  for (const p of others) {
    const m = session.mediaOf(p.id);
    const presenting = !!m.screen && !isMuted(p.id, 'screen');
    const micOff = !m.microphone || isMuted(p.id, 'microphone');
    const camOff = !m.camera || isMuted(p.id, 'camera');
    // A host's controls for each of the others: what the server enforces (docs/protocol.md).
    const controls = host ? `<span class="host-controls" data-pid="${escapeHtml(p.id)}">${
      micOff ? '' : '<button type="button" class="host-btn" data-host="mute-mic">Mute</button>'}${
      camOff ? '' : '<button type="button" class="host-btn" data-host="mute-cam">Stop video</button>'}<button type="button" class="host-btn danger" data-host="remove">Remove</button></span>` : '';
    rows.push(row(p.name, micOff, camOff, presenting ? ' <span class="you">· presenting</span>' : '', controls));
  }
  list.innerHTML = rows.join('');
}

/** A click on one of the host controls in the people panel. @param {MouseEvent} ev */
function onHostControl(ev) {
  const btn = /** @type {HTMLElement|null} */ (/** @type {HTMLElement} */ (ev.target).closest('[data-host]'));
  if (!btn || !session) return;
  const action = btn.dataset.host;
  if (action === 'lock') { session.hostLock(!session.locked); return; }
  const pid = /** @type {HTMLElement|null} */ (btn.closest('[data-pid]'))?.dataset.pid;
  if (!pid) return;
  const who = session.participants.get(pid)?.name || 'them';
  if (action === 'mute-mic') session.hostMute(pid, 'microphone');
  else if (action === 'mute-cam') session.hostMute(pid, 'camera');
  else if (action === 'remove') { session.hostRemove(pid); toast(`You removed ${who} from the room.`, 'info'); }
}

// ------------------------------------------------------------------ controls

function wireControls() {
  $('leave-btn').innerHTML = icon('leave');
  $('mic-btn').addEventListener('click', toggleMic);
  $('cam-btn').addEventListener('click', toggleCam);
  $('screen-btn').addEventListener('click', toggleScreen);
  $('leave-btn').addEventListener('click', leave);
  $('people-btn').addEventListener('click', togglePeople);
  $('people-close').addEventListener('click', togglePeople);
  $('people-list').addEventListener('click', onHostControl);
  $('help-btn').addEventListener('click', () => /** @type {HTMLDialogElement} */ ($('help-dialog')).showModal());
  $('audio-only-btn').addEventListener('click', toggleAudioOnly);
  $('copy-link').addEventListener('click', copyLink);
  $('wallet-btn').addEventListener('click', walletFromTopBar);
  $('banner-retry').addEventListener('click', () => {
    if (session) session.retry(); else location.reload();
  });
  $('rejoin-btn').addEventListener('click', () => location.reload());
  if (!canShareScreen()) /** @type {HTMLButtonElement} */ ($('screen-btn')).disabled = true;
  document.addEventListener('keydown', onKey);
}

/** @param {KeyboardEvent} ev */
function onKey(ev) {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat) return;
  const t = /** @type {HTMLElement} */ (ev.target);
  if (t.closest('input, textarea, select, [contenteditable="true"]')) return;
  if (/** @type {HTMLDialogElement} */ ($('help-dialog')).open && ev.key !== '?') return;
  /** @type {Record<string, () => void>} */
  const actions = { m: toggleMic, v: toggleCam, s: toggleScreen, l: leave, p: togglePeople, c: copyLink, a: toggleAudioOnly,
    h: () => chatUI?.toggle(),
    '?': () => /** @type {HTMLDialogElement} */ ($('help-dialog')).showModal() };
  const action = actions[ev.key.toLowerCase()];
  if (!action || !session || session.state === 'left') return;
  ev.preventDefault();
  action();
}

/** A view-only page (a `viewer` token) publishes nothing: its device buttons stay off. */
function viewOnly() { return session?.role === 'viewer'; }

function toggleMic() { if (!viewOnly()) session?.toggleMic(); }

function toggleCam() { if (!viewOnly()) session?.toggleCamera(); }

function toggleScreen() { if (!viewOnly()) session?.toggleScreenShare(); }

function togglePeople() {
  setPeopleOpen($('people-panel').hidden);
}

/** One side panel at a time: opening people closes the chat. @param {boolean} open */
function setPeopleOpen(open) {
  const panel = $('people-panel');
  if (panel.hidden === !open) return;
  if (open) chatUI?.toggle(false);
  panel.hidden = !open;
  $('people-btn').setAttribute('aria-pressed', String(!panel.hidden));
  $('people-btn').classList.toggle('active', !panel.hidden);
  renderPeople();
  layout();
}

function leave() {
  if (!session || session.state === 'left') return;
  session.leave();
  for (const id of [...tiles.keys()]) if (id !== 'local') removeParticipant(id);
  for (const key of [...screenTiles.keys()]) dropScreenTile(key);
  $('left-detail').textContent = `You left room ${roomId}.`;
  $('left-overlay').hidden = false;
}

function renderControls() {
  if (!session) return;
  const l = session.local;
  const micOff = l.micMuted || !l.microphone;
  const camOff = l.cameraOff || !l.camera;
  const mic = $('mic-btn'), cam = $('cam-btn'), scr = $('screen-btn');
  mic.innerHTML = icon(micOff ? 'micOff' : 'mic');
  mic.classList.toggle('off', micOff);
  mic.setAttribute('aria-pressed', String(micOff));
  mic.dataset.tip = `${micOff ? 'Turn on' : 'Turn off'} microphone (M)`;
  mic.setAttribute('aria-label', mic.dataset.tip);
  cam.innerHTML = icon(camOff ? 'camOff' : 'cam');
  cam.classList.toggle('off', camOff);
  cam.setAttribute('aria-pressed', String(camOff));
  cam.dataset.tip = `${camOff ? 'Turn on' : 'Turn off'} camera (V)`;
  cam.setAttribute('aria-label', cam.dataset.tip);
  scr.innerHTML = icon(l.screen ? 'screenOff' : 'screen');
  scr.classList.toggle('active', !!l.screen);
  scr.setAttribute('aria-pressed', String(!!l.screen));
  scr.dataset.tip = l.screen ? 'Stop presenting (S)' : 'Present your screen (S)';
  scr.setAttribute('aria-label', scr.dataset.tip);
  $('leave-btn').setAttribute('aria-label', 'Leave the call (L)');
  for (const b of [mic, cam, scr]) /** @type {HTMLButtonElement} */ (b).disabled = viewOnly() || (b === scr && !canShareScreen());
  renderPeople();
}

/** The browser can capture a screen. */
function canShareScreen() { return !!navigator.mediaDevices && 'getDisplayMedia' in navigator.mediaDevices; }

async function copyLink() {
  const url = `${location.origin}/rooms/${encodeURIComponent(roomId)}`;
  try {
    await navigator.clipboard.writeText(url);
  } catch {
    const ta = document.createElement('textarea');
    ta.value = url;
    ta.style.position = 'fixed';
    ta.style.opacity = '0';
    document.body.append(ta);
    ta.select();
    const ok = document.execCommand('copy');
    ta.remove();
    if (!ok) { toast(`Copy this link: ${url}`, 'info', '', 10_000); return; }
  }
  toast('Room link copied to the clipboard', 'info');
}

// ------------------------------------------------------------------ connection state

const STATE_TEXT = /** @type {Record<string, string>} */ ({
  idle: 'Starting', connecting: 'Connecting', connected: 'Connected', reconnecting: 'Reconnecting',
  failed: 'Disconnected', left: 'Left',
});

/** @param {string} state @param {string} reason */
function showState(state, reason) {
  document.body.dataset.state = state;
  const pill = $('status-pill');
  pill.dataset.state = state;
  /** @type {HTMLElement} */ (pill.querySelector('.label')).textContent = STATE_TEXT[state] || state;
  pill.title = reason || STATE_TEXT[state] || state;

  const banner = $('banner');
  const text = /** @type {HTMLElement} */ (banner.querySelector('.banner-text'));
  const retry = $('banner-retry');
  banner.dataset.state = state;
  retry.hidden = state !== 'failed' || !session; // an invalid room link has nothing to retry
  if (state === 'connecting' || state === 'idle') {
    banner.hidden = false;
    text.textContent = reason ? `Connecting to the room… ${reason}` : 'Connecting to the room…';
  } else if (state === 'reconnecting') {
    banner.hidden = false;
    text.textContent = `Connection lost. Reconnecting… (${reason})`;
  } else if (state === 'failed') {
    banner.hidden = false;
    text.textContent = `Could not connect: ${reason || 'unknown reason'}`;
  } else {
    banner.hidden = true;
  }
  layout();
}

// ------------------------------------------------------------------ audio levels

let polling = false;
async function pollLevels() {
  if (!session || polling || session.state === 'left') return;
  polling = true;
  try {
    const [stats, own] = await Promise.all([session.stats(), session.localAudioLevel()]);
    setLevel(tiles.get('local'), own);
    for (const s of stats) setLevel(tiles.get(s.participantId), isMuted(s.participantId, 'microphone') ? 0 : s.audioLevel);
  } catch { /* transport closing */ }
  polling = false;
}

/** @param {Tile|undefined} tile @param {number} level 0..1 */
function setLevel(tile, level) {
  if (!tile) return;
  const speaking = level > SPEAKING_LEVEL;
  tile.el.classList.toggle('speaking', speaking);
  // perceptual scale: audioLevel is linear amplitude
  const v = Math.min(1, Math.sqrt(level) * 1.6);
  tile.el.style.setProperty('--level', v.toFixed(2));
}

// ------------------------------------------------------------------ toasts and helpers

/**
 * @param {string} message @param {string} level info|warning|error @param {string} [code]
 * @param {number} [ms] 0 = stays until closed
 */
function toast(message, level = 'info', code = '', ms = 5000) {
  const box = $('toasts');
  while (box.children.length >= 4) box.firstElementChild?.remove();
  const el = document.createElement('div');
  el.className = `toast toast-${level}`;
  el.setAttribute('role', level === 'error' ? 'alert' : 'status');
  el.innerHTML = `${icon(level === 'info' ? 'info' : 'warn', 'icon icon-sm')}<span class="toast-text"></span>
    <button class="toast-close" type="button" aria-label="Dismiss">${icon('close', 'icon icon-sm')}</button>`;
  /** @type {HTMLElement} */ (el.querySelector('.toast-text')).textContent = code ? `${message} (${code})` : message;
  /** @type {HTMLElement} */ (el.querySelector('.toast-close')).addEventListener('click', () => el.remove());
  box.append(el);
  if (ms > 0) setTimeout(() => el.remove(), ms);
  return el;
}

/** @type {Intl.DateTimeFormat|null} */
let clockFormat = null;

/** Shows the clock and keeps it current (once, 3 s after boot). */
function startClock() {
  if (clockFormat) return;
  tickClock();
  setInterval(tickClock, 15_000);
}

function tickClock() {
  clockFormat ??= new Intl.DateTimeFormat([], { hour: '2-digit', minute: '2-digit' });
  $('clock').textContent = clockFormat.format(new Date());
}

/** A stable, pleasant colour per name. @param {string} name */
function colorFor(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + (ch.codePointAt(0) ?? 0)) >>> 0;
  return `hsl(${h % 360} 45% 42%)`;
}

/** @param {string} name */
const initialOf = (name) => ([...name.trim()][0] || '?').toUpperCase();

/** @param {string} s */
function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

boot();
