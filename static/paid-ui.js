// confab paid-session display (LangDAO): a top-bar badge with the elapsed time and running cost of the
// room's paid session, an "End session" button for its student and tutor, and after the session (or
// after leaving) the settlement status, polled from `GET /api/rooms/{room}/paid-session` every 2 s
// until it is final. The session (protocol.js) does the talking; this module only renders.
//
// Integration hook: a room URL with `?paid=1&tutor=0x…&language=N` sends `session_started` once joined
// (the LangDAO dapp opens the room that way after its startSession transaction). `&decimals=N` shows
// amounts in tokens instead of raw token units.
//
// Starting from the page: a participant signed in with a wallet (token `sub` = an address) whose
// browser has an EIP-1193 provider gets "Start paid session" when the page knows the contract
// (the `contract` of the REST answer, the one the server settles on; else `&contract=0x…`). The
// dialog (tutor, language, prepaid minutes; `&tutor=` and `&language=` prefill it) runs langdao.js's
// `startOnChain` (the wallet switched to the answer's `chain_id` first, then approve and deposit
// when needed, then `startSession`, each receipt awaited) and then sends `session_started`.
// Both parties get `paid_session` when a session starts (the server pushes it to every party in the
// room); a page asks the REST route on join and after each reconnect for one it may have missed.

import { icon } from '/icons.js';

/** @typedef {import('/types.js').PaidSession} PaidSession */

/** How often the settlement is polled, and for how long at most. */
export const PAID_TIMING = Object.freeze({ pollMs: 2000, pollForMs: 15 * 60_000, tickMs: 1000 });
/** Settlement states after which polling stops. */
const FINAL = new Set(['settled', 'ended_elsewhere', 'failed']);

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * @param {Object} opts
 * @param {import('/protocol.js').ConfabSession} opts.session
 * @param {(message: string, level?: string, code?: string, ms?: number) => HTMLElement} opts.toast
 * @param {any} [opts.provider]   the page's EIP-1193 provider (`window.ethereum`), if any
 */
export function initPaidUI({ session, toast, provider = null }) {
  const badge = $('paid-badge');
  const elapsedEl = $('paid-elapsed');
  const costEl = $('paid-cost');
  const endBtn = /** @type {HTMLButtonElement} */ ($('paid-end'));
  const card = $('settlement');
  const params = new URLSearchParams(location.search);
  const decimalsParam = params.get('decimals');
  const decimals = decimalsParam != null && /^\d{1,2}$/.test(decimalsParam) ? Number(decimalsParam) : null;

  /** @type {PaidSession|null} */
  let current = null;
  /** a paid session was seen in this room during this page's life */
  let seen = false;
  let tick = 0;
  let pollTimer = 0;
  let pollUntil = 0;
  let polling = false;
  /** @type {Set<string>} ids of sessions that ended while this page watched (a late poll must not show them again) */
  const ended = new Set();
  /** the LangDAO contract address, for starting a session from the page */
  let contract = /^0x[0-9a-fA-F]{40}$/.test(params.get('contract') || '') ? String(params.get('contract')) : '';
  /** @type {number|null} the contract's chain (EIP-155), from the server: the wallet must be on it */
  let chainId = null;

  $('paid-icon').innerHTML = icon('coin', 'icon icon-sm');
  endBtn.addEventListener('click', () => {
    if (!session.endPaidSession()) { toast('Not connected to the room: try again in a moment.', 'warning'); return; }
    endBtn.disabled = true;
    endBtn.textContent = 'Ending…';
    // `paid_session_ended` normally follows at once; if not, let the user press again.
    setTimeout(() => {
      if (current && endBtn.disabled) { endBtn.disabled = false; endBtn.textContent = 'End session'; }
    }, 10_000);
  });
  $('settlement-close').addEventListener('click', () => { card.hidden = true; });

  session.addEventListener('paid-session', (ev) => show(/** @type {CustomEvent} */ (ev).detail.session));
  session.addEventListener('paid-session-ended', (ev) => {
    const { id, reason } = /** @type {CustomEvent} */ (ev).detail;
    if (id) ended.add(id);
    hideBadge();
    seen = true;
    renderSettlement({ state: 'pending' }, null, reason);
    startPolling();
  });
  let firstJoin = true;
  let announced = false;
  session.addEventListener('joined', () => {
    if (!firstJoin) return;
    firstJoin = false;
    // Whoever joins a room with a running paid session (the tutor, a reload) learns of it here.
    checkRunning();
  });
  session.addEventListener('statechange', (ev) => {
    const { state } = /** @type {CustomEvent} */ (ev).detail;
    // A session that started while this page was away (a reconnect, a resume) was pushed to a
    // socket it no longer had: ask.
    if (state === 'connected' && !current && !firstJoin && isAddress(session.userId)) checkRunning();
    if (state === 'connected' && !announced) {
      announced = true;
      // The URL hook of integrations: the student's page announces the on-chain session once the
      // call is up (not while the first publisher offer is in flight).
      if (params.get('paid') === '1' && params.get('tutor')) {
        session.startPaidSession({ tutor: String(params.get('tutor')), language: Number(params.get('language') || 0) });
      }
    }
    renderStart();
    if (state !== 'left') return;
    hideBadge();
    if (seen) startPolling();
  });

  async function checkRunning() {
    const { status, body } = await session.fetchPaidSession();
    if (status !== 200 || !body) return;
    // The server's contract is the one it settles on: it wins over the link's.
    if (typeof body.contract === 'string' && isAddress(body.contract) && body.contract !== contract) { contract = body.contract; renderStart(); }
    if (Number.isSafeInteger(body.chain_id) && body.chain_id > 0) chainId = body.chain_id;
    if (body.running && body.session && !current && !ended.has(String(body.session.id))) {
      show({ ...body.session, rate_per_second: body.session.rate_per_second ?? '' });
    }
  }

  // ---------------------------------------------------------------- running session

  /** @param {PaidSession} s */
  function show(s) {
    if (!s) return;
    current = s;
    seen = true;
    badge.hidden = false;
    card.hidden = true;
    const me = (session.userId || '').toLowerCase();
    const party = !!me && (me === String(s.student).toLowerCase() || me === String(s.tutor).toLowerCase());
    endBtn.hidden = !party;
    endBtn.disabled = false;
    endBtn.textContent = 'End session';
    badge.title = `Paid session ${s.chain_session_id ? `#${s.chain_session_id} ` : ''}· tutor ${short(s.tutor)} · student ${short(s.student)}`
      + (s.rate_per_second ? ` · ${formatAmount(s.rate_per_second, decimals)} per second` : '');
    clearInterval(tick);
    update();
    tick = setInterval(update, PAID_TIMING.tickMs);
  }

  function update() {
    if (!current) return;
    const elapsed = Math.max(0, Math.floor(Date.now() / 1000) - Number(current.started_at || 0));
    elapsedEl.textContent = formatDuration(elapsed);
    costEl.textContent = current.rate_per_second ? formatAmount(multiply(current.rate_per_second, elapsed), decimals) : '';
    costEl.hidden = !current.rate_per_second;
  }

  function hideBadge() {
    current = null;
    clearInterval(tick);
    badge.hidden = true;
    renderStart();
  }

  // ---------------------------------------------------------------- starting one from the page

  const startBtn = /** @type {HTMLButtonElement} */ ($('paid-start'));
  const dialog = /** @type {HTMLDialogElement} */ ($('paid-dialog'));
  const tutorIn = /** @type {HTMLInputElement} */ ($('paid-tutor'));
  const langIn = /** @type {HTMLInputElement} */ ($('paid-language'));
  const minutesIn = /** @type {HTMLInputElement} */ ($('paid-minutes'));
  const submitBtn = /** @type {HTMLButtonElement} */ ($('paid-submit'));
  const statusEl = $('paid-status');
  /** the session runs on chain; the server was not told yet (a retry only tells it) */
  /** @type {{tutor: string, language: number}|null} */
  let onChain = null;
  /** a `session_started` from this dialog awaits its answer */
  let announcing = false;
  const STEPS = /** @type {Record<string, string>} */ ({
    check: 'Checking the tutor and your deposit…',
    approve: 'Approve the token spend in your wallet…',
    deposit: 'Confirm the deposit in your wallet…',
    start: 'Confirm the session in your wallet…',
    confirm: 'Waiting for the transaction to be mined…',
  });

  function renderStart() {
    startBtn.hidden = !(provider && contract && isAddress(session.userId) && !current && session.state === 'connected');
  }

  /** @param {string} text @param {string} [code] an error code: shown, and kept in `data-code` */
  function setStatus(text, code = '') {
    statusEl.textContent = code ? `${text} (${code})` : text;
    statusEl.classList.toggle('error', !!code);
    if (code) statusEl.dataset.code = code; else delete statusEl.dataset.code;
  }

  startBtn.addEventListener('click', () => {
    if (!tutorIn.value) tutorIn.value = params.get('tutor') || '';
    if (params.get('language')) langIn.value = String(params.get('language'));
    setStatus('');
    submitBtn.disabled = false;
    dialog.showModal();
    showRate();
  });
  $('paid-cancel').addEventListener('click', () => dialog.close());
  tutorIn.addEventListener('change', showRate);
  langIn.addEventListener('change', showRate);
  minutesIn.addEventListener('change', showRate);
  $('paid-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    startFromPage();
  });

  /** The tutor's rate and what the prepaid time costs, under the fields. */
  async function showRate() {
    const rateEl = $('paid-rate');
    rateEl.textContent = '';
    if (!provider || !contract || !isAddress(tutorIn.value.trim())) return;
    try {
      const { tutorRate } = await import('/langdao.js');
      const rate = await tutorRate(provider, contract, tutorIn.value.trim(), Number(langIn.value));
      const prepay = BigInt(Math.max(1, Math.floor(Number(minutesIn.value) || 0)) * 60);
      rateEl.textContent = rate === 0n
        ? 'This tutor does not teach that language.'
        : `${formatAmount(String(rate), decimals)} per second · ${formatAmount(String(rate * prepay), decimals)} prepaid`;
    } catch { /* the wallet will say when starting */ }
  }

  async function startFromPage() {
    const tutor = tutorIn.value.trim();
    const language = Number(langIn.value);
    submitBtn.disabled = true;
    if (!onChain || onChain.tutor.toLowerCase() !== tutor.toLowerCase() || onChain.language !== language) {
      const { startOnChain } = await import('/langdao.js');
      try {
        await startOnChain({
          provider, contract, chainId, tutor, language,
          prepaySeconds: Math.max(1, Math.floor(Number(minutesIn.value) || 60)) * 60,
          onStep: (step) => setStatus(STEPS[step] || step),
        });
      } catch (e) {
        const err = /** @type {any} */ (e);
        setStatus(String(err?.message || e), String(err?.code || 'wallet_error'));
        submitBtn.disabled = false;
        return;
      }
      onChain = { tutor, language };
    }
    setStatus('Started on chain · telling the room…');
    announcing = true;
    if (!session.startPaidSession({ tutor, language })) {
      announcing = false;
      setStatus('Not connected to the room: press Start again in a moment.', 'not_connected');
      submitBtn.disabled = false;
    }
  }

  session.addEventListener('paid-session', () => {
    if (!announcing) return;
    announcing = false;
    onChain = null;
    setStatus('');
    if (dialog.open) dialog.close();
  });
  session.addEventListener('server-error', (ev) => {
    const { code, message } = /** @type {CustomEvent} */ (ev).detail;
    if (!announcing || !PAID_CODES.has(code)) return;
    announcing = false;
    setStatus(`The room refused the session: ${message}`, code);
    submitBtn.disabled = false;
  });

  // ---------------------------------------------------------------- settlement

  function startPolling() {
    pollUntil = Date.now() + PAID_TIMING.pollForMs;
    if (!polling) poll();
  }

  async function poll() {
    clearTimeout(pollTimer);
    polling = true;
    const { status, body } = await session.fetchPaidSession();
    if (status === 200 && body && !body.session) {
      // No paid session in this room (or none on this server): nothing to show.
      polling = false;
      card.hidden = true;
      return;
    }
    if (status === 200 && body) {
      if (body.running && body.session && session.state !== 'left') {
        // Still running (ended elsewhere not yet recorded): keep showing it.
        if (!current) show(body.session);
      } else {
        const s = body.settlement;
        renderSettlement(s || { state: 'pending' }, body.session, body.session?.end_reason || '');
        if (s && FINAL.has(s.state)) { polling = false; return; }
      }
    } else if (status === 404 || status === 409 || status === 401 || status === 403) {
      polling = false;
      if (status !== 404) card.hidden = true;
      return;
    }
    if (Date.now() > pollUntil) { polling = false; return; }
    pollTimer = setTimeout(poll, PAID_TIMING.pollMs);
  }

  /**
   * @param {{state: string, tx_hash?: string|null, duration_s?: number|null, total_paid?: string|null,
   *   last_error?: string|null, attempts?: number}} s
   * @param {any} paid   the `session` of the REST answer, if any
   * @param {string} reason
   */
  function renderSettlement(s, paid, reason) {
    card.hidden = false;
    card.dataset.state = s.state;
    const title = $('settlement-title');
    const body = $('settlement-body');
    const TITLES = /** @type {Record<string, string>} */ ({
      pending: 'Paid session ended · settling on chain…',
      submitted: 'Paid session ended · settlement submitted…',
      settled: 'Paid session settled',
      ended_elsewhere: 'Paid session was ended elsewhere',
      failed: 'Settlement failed',
    });
    title.textContent = TITLES[s.state] || `Settlement: ${s.state}`;
    /** @type {[string, string][]} */
    const rows = [];
    if (s.tx_hash) rows.push(['Transaction', short(s.tx_hash)]);
    const duration = s.duration_s ?? (paid?.ended_at && paid?.started_at ? paid.ended_at - paid.started_at : null);
    if (duration != null) rows.push(['Duration', formatDuration(Number(duration))]);
    if (s.total_paid != null) rows.push(['Amount paid', formatAmount(String(s.total_paid), decimals)]);
    if (s.state === 'failed' && s.last_error) rows.push(['Error', String(s.last_error)]);
    else if (s.last_error && !FINAL.has(s.state)) rows.push(['Last attempt', `${s.last_error}${s.attempts ? ` (attempt ${s.attempts})` : ''}`]);
    if (reason && !FINAL.has(s.state)) rows.push(['Ended by', REASONS[reason] || reason]);
    body.replaceChildren(...rows.map(([k, v]) => {
      const row = document.createElement('div');
      row.className = 'settlement-row';
      const dt = document.createElement('span');
      dt.className = 'settlement-key';
      dt.textContent = k;
      const dd = document.createElement('span');
      dd.className = 'settlement-value';
      dd.textContent = v;
      if (k === 'Transaction' && s.tx_hash) dd.title = s.tx_hash;
      row.append(dt, dd);
      return row;
    }));
  }

  return { show, renderSettlement, poll: startPolling };
}

/** `error` codes that answer `session_started` (docs/protocol.md). */
const PAID_CODES = new Set(['paid_sessions_disabled', 'paid_session_not_found', 'chain_unavailable', 'not_a_party',
  'unavailable', 'tutor_busy', 'bad_json', 'paid_session_running']);

/** @param {string} s */
const isAddress = (s) => /^0x[0-9a-fA-F]{40}$/.test(String(s || ''));

const REASONS = /** @type {Record<string, string>} */ ({
  participant_ended: 'a participant pressed End',
  disconnected: 'a participant left',
  heartbeat_timeout: 'a participant lost connection',
  shutdown: 'server shutdown',
});

/** `0x1234…abcd`. @param {string} s */
export function short(s) {
  const t = String(s || '');
  return t.length > 14 ? `${t.slice(0, 6)}…${t.slice(-4)}` : t;
}

/** h:mm:ss or m:ss. @param {number} s */
export function formatDuration(s) {
  const n = Math.max(0, Math.floor(Number(s) || 0));
  const h = Math.floor(n / 3600), m = Math.floor((n % 3600) / 60), sec = n % 60;
  const two = (/** @type {number} */ x) => String(x).padStart(2, '0');
  return h ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
}

/** Exact decimal-string × integer (token amounts exceed 2^53). @param {string} rate @param {number} seconds */
export function multiply(rate, seconds) {
  try { return (BigInt(String(rate).trim()) * BigInt(Math.max(0, Math.floor(seconds)))).toString(); }
  catch { return String(Math.round(Number(rate) * seconds)); }
}

/**
 * An integer amount of token units, grouped; in tokens with `decimals` when known.
 * @param {string} units @param {number|null} decimals
 */
export function formatAmount(units, decimals) {
  const raw = String(units ?? '').trim();
  if (!/^\d+$/.test(raw)) return raw;
  const group = (/** @type {string} */ s) => s.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  if (decimals == null || decimals === 0) return `${group(raw.replace(/^0+(?=\d)/, ''))} units`;
  const padded = raw.padStart(decimals + 1, '0');
  const int = padded.slice(0, -decimals).replace(/^0+(?=\d)/, '');
  const frac = padded.slice(-decimals).slice(0, 4).replace(/0+$/, '');
  return `${group(int)}${frac ? `.${frac}` : ''} tokens`;
}
