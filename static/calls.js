// The calls page (calls.html): who is online, ringing them, answering, and your call history.
//
// One "lobby" WebSocket (docs/protocol.md, "Presence and calls") keeps the user online: it asks
// `watch_presence` and handles `call_*` messages. An answered call is the ordinary room page in an
// iframe, joined with the same token (`/rooms/{room}#token=…`), so the lobby socket stays open
// through the call; hanging up (here, or leaving inside the room) ends it for both sides. The
// token is a guest token for the name given here, or the one the room page holds for this tab
// (`sessionStorage` `confab.token`: a wallet sign-in or a backend's link). Exposed for tests as
// `window.confabCalls`.

import { jwtSubject } from '/wire.js';

const TOKEN_KEY = 'confab.token';
const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** @type {{token: string, sub: string, name: string, expiresAt: number}|null} */
let me = null;
/** @type {WebSocket|null} */
let ws = null;
/** @type {Map<string, {user_id: string, name: string, available: boolean}>} */
const online = new Map();
/** The live call: its id, the other side, and where it is. */
/** @type {{id: string, other: string, otherName: string, phase: 'calling'|'ringing'|'ongoing'}|null} */
let call = null;
let retry = 0;

const state = { calls: 0, log: /** @type {string[]} */ ([]) };
/** @type {any} */ (window).confabCalls = { state, get me() { return me; }, get call() { return call; }, online };

function status(text) { $('status').textContent = text; }

/** A held token with more than a minute left, else null. */
function heldToken() {
  try {
    const t = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || 'null');
    if (t && typeof t.token === 'string' && t.expiresAt > Date.now() + 60_000 && !t.room) return t;
  } catch { /* none */ }
  return null;
}

/** @param {string} name */
async function guestToken(name) {
  const res = await fetch('/api/guest-token', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok || typeof body.token !== 'string') throw new Error(body.message || `HTTP ${res.status}`);
  const t = { token: body.token, sub: jwtSubject(body.token), name, expiresAt: Date.now() + (Number(body.expires_in) || 7200) * 1000, source: 'link', room: '' };
  try { sessionStorage.setItem(TOKEN_KEY, JSON.stringify(t)); } catch { /* memory only */ }
  return t;
}

function connect() {
  if (!me) return;
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const sock = new WebSocket(`${proto}://${location.host}/ws?token=${encodeURIComponent(me.token)}`);
  ws = sock;
  sock.onopen = () => {
    retry = 0;
    status('online');
    send({ type: 'watch_presence' });
    loadHistory();
  };
  sock.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    onMessage(msg);
  };
  sock.onclose = () => {
    if (ws !== sock) return;
    ws = null;
    status('offline: reconnecting…');
    online.clear();
    renderPeople();
    setTimeout(connect, Math.min(10_000, 500 * 2 ** retry++));
  };
}

/** @param {object} m */
function send(m) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(m));
}

/** @param {any} msg */
function onMessage(msg) {
  state.log.push(msg.type);
  switch (msg.type) {
    case 'presence_snapshot':
      online.clear();
      for (const u of msg.users || []) online.set(u.user_id, u);
      renderPeople();
      break;
    case 'presence':
      if (msg.online) online.set(msg.user.user_id, msg.user); else online.delete(msg.user.user_id);
      renderPeople();
      break;
    case 'call_ringing':
      if (call && call.phase === 'calling') call.id = msg.call_id;
      break;
    case 'call_incoming':
      call = { id: msg.call_id, other: msg.caller, otherName: msg.caller_name, phase: 'ringing' };
      showRing(`${msg.caller_name}`, 'is calling you', true);
      break;
    case 'call_accepted':
      if (call && call.id === msg.call_id) startCall(msg.room);
      break;
    case 'call_ended':
      if (call && (call.id === msg.call_id || !call.id)) endCall(outcome(msg));
      loadHistory(msg.call_id);
      break;
    case 'error':
      if (call && call.phase === 'calling' && !call.id) endCall(`${msg.message} (${msg.code})`);
      else status(`${msg.message} (${msg.code})`);
      break;
    default:
  }
}

/** @param {any} msg */
function outcome(msg) {
  const why = {
    hangup: 'Call ended', disconnected: 'Call dropped', rejected: 'Declined', busy: 'Busy in another call',
    no_answer: 'No answer', cancelled: 'Cancelled', offline: 'Not online', caller_gone: 'Caller left', callee_gone: 'They left',
  };
  return /** @type {any} */ (why)[msg.reason] || msg.reason;
}

function renderPeople() {
  const list = $('people');
  list.replaceChildren();
  const others = [...online.values()].filter((u) => u.user_id !== me?.sub);
  $('nobody').hidden = others.length > 0;
  for (const u of others) {
    const li = document.createElement('li');
    li.dataset.user = u.user_id;
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = u.name;
    li.append(who);
    if (u.available) {
      const b = document.createElement('button');
      b.className = 'btn btn-primary call-btn';
      b.type = 'button';
      b.textContent = 'Call';
      b.disabled = !!call;
      b.addEventListener('click', () => invite(u.user_id, u.name));
      li.append(b);
    } else {
      const busy = document.createElement('span');
      busy.className = 'busy';
      busy.textContent = 'in a call';
      li.append(busy);
    }
    list.append(li);
  }
}

/** @param {string} user @param {string} name */
function invite(user, name) {
  if (call) return;
  call = { id: '', other: user, otherName: name, phase: 'calling' };
  showRing(name, 'Calling…', false);
  send({ type: 'call_invite', callee: user });
  renderPeople();
}

/** @param {string} who @param {string} what @param {boolean} incoming */
function showRing(who, what, incoming) {
  $('ring-who').textContent = who;
  $('ring-what').textContent = what;
  $('ring-accept').hidden = !incoming;
  $('ring-reject').hidden = !incoming;
  $('ring-cancel').hidden = incoming;
  const d = /** @type {HTMLDialogElement} */ ($('ringing'));
  d.dataset.ringing = String(incoming);
  if (!d.open) d.showModal();
}

function hideRing() {
  const d = /** @type {HTMLDialogElement} */ ($('ringing'));
  if (d.open) d.close();
}

/** @param {string} room */
function startCall(room) {
  if (!call || !me) return;
  call.phase = 'ongoing';
  state.calls += 1;
  hideRing();
  $('call-with').textContent = `In a call with ${call.otherName}`;
  const frame = /** @type {HTMLIFrameElement} */ ($('call-frame'));
  frame.src = `/rooms/${encodeURIComponent(room)}#token=${encodeURIComponent(me.token)}`;
  $('call').hidden = false;
  $('lobby').hidden = true;
}

/** @param {string} why */
function endCall(why) {
  call = null;
  hideRing();
  const frame = /** @type {HTMLIFrameElement} */ ($('call-frame'));
  frame.src = 'about:blank';
  $('call').hidden = true;
  $('lobby').hidden = false;
  status(why);
  renderPeople();
}

/**
 * Shows the newest 20 calls. `ended`: a call that just ended, whose record the server writes a
 * moment later: asked again until it shows its end (at most 10 times, 300 ms apart).
 * @param {string} [ended]
 */
async function loadHistory(ended) {
  if (!me) return;
  /** @type {any[]} */
  let rows = [];
  for (let i = 0; i < 10; i += 1) {
    const res = await fetch('/api/calls?limit=20', { headers: { authorization: `Bearer ${me.token}` } }).catch(() => null);
    if (!res || !res.ok) return;
    rows = (await res.json()).calls || [];
    if (!ended || rows.some((c) => c.id === ended && c.ended_at)) break;
    await new Promise((r) => setTimeout(r, 300));
  }
  const tbody = /** @type {HTMLTableElement} */ ($('history')).tBodies[0];
  tbody.replaceChildren();
  for (const c of rows) {
    const tr = document.createElement('tr');
    tr.dataset.status = c.status;
    const other = c.caller === me.sub ? c.callee : c.caller;
    const cells = [
      `${c.caller === me.sub ? '→' : '←'} ${online.get(other)?.name || other}`,
      new Date(c.created_at).toLocaleString(),
      `${c.status}${c.end_reason ? ` (${c.end_reason})` : ''}`,
      c.duration_s == null ? '—' : `${Math.floor(c.duration_s / 60)}:${String(c.duration_s % 60).padStart(2, '0')}`,
    ];
    for (const text of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    tr.cells[3].className = 'duration';
    tbody.append(tr);
  }
}

$('ring-accept').addEventListener('click', () => { if (call) send({ type: 'call_accept', call_id: call.id }); });
$('ring-reject').addEventListener('click', () => { if (call) send({ type: 'call_reject', call_id: call.id }); });
$('ring-cancel').addEventListener('click', () => {
  if (call?.id) send({ type: 'call_cancel', call_id: call.id });
  else endCall('Cancelled');
});
$('ringing').addEventListener('cancel', (ev) => ev.preventDefault()); // Escape does not hide a live call
$('hangup').addEventListener('click', () => { if (call) send({ type: 'call_hangup', call_id: call.id }); });
setInterval(() => send({ type: 'ping', ts: Date.now() }), 15_000);

async function start() {
  const params = new URLSearchParams(location.search);
  me = heldToken();
  if (me) {
    $('me').textContent = me.name;
    $('lobby').hidden = false;
    connect();
    return;
  }
  const form = /** @type {HTMLFormElement} */ ($('name-form'));
  const input = /** @type {HTMLInputElement} */ ($('name'));
  input.value = params.get('name') || localStorage.getItem('confab.name') || '';
  const go = async () => {
    const name = input.value.trim();
    if (!name) { input.focus(); return; }
    try {
      localStorage.setItem('confab.name', name);
      me = await guestToken(name);
    } catch (e) {
      status(`could not get a token: ${/** @type {Error} */ (e).message}`);
      return;
    }
    form.hidden = true;
    $('me').textContent = name;
    $('lobby').hidden = false;
    connect();
  };
  form.addEventListener('submit', (ev) => { ev.preventDefault(); go(); });
  if (params.get('name')) go(); else form.hidden = false;
}

start();
