// confab chat protocol client (docs/protocol.md, "Chat"): no DOM.
//
// A ChatClient follows the `chat` DataChannel of a ConfabSession (a new one per connection, announced
// by the session's `datachannel` event) and keeps the room's messages: the history the server sends
// when the channel opens (parts until `done: true`), live `message` / `edited` / `deleted`, our own
// sends until their `ack`, and older pages fetched with `history {before}`. Everything is merged by
// message id (UUID v7, so sorting by id sorts by time).
//
// Sending: each message gets a `client_msg_id` (crypto.randomUUID()). It stays `pending` until the
// server's `ack`; it is resent with the same id (the server deduplicates) when no ack came in time,
// when the server answered `chat_unavailable` or `rate_limited` (then `retrying`, with back-off), and
// on every new channel after a reconnect.
//
// Events (CustomEvent, data in `detail`):
//   change    {reason, added}   the list changed; `reason`: history|older|message|ack|edited|deleted|send|retry
//                               `added`: the messages of others that are new since the last event (unread counting)
//   status    {open, loading}   the channel opened or closed; `loading` while the initial history arrives
//   chat-error {code, message, clientMsgId}   a refusal the user should see (rate_limited, too_long, ...)

/**
 * @typedef {Object} ChatMessage   as the server sends it
 * @property {string} id
 * @property {string} user_id
 * @property {string} user_name
 * @property {string} text
 * @property {'text'|'system'|'file'} message_type
 * @property {string|null} [client_msg_id]
 * @property {string} created_at     RFC 3339
 * @property {string|null} [edited_at]
 * @property {boolean} deleted
 */

/**
 * @typedef {Object} ChatItem   one row of the chat as the UI shows it
 * @property {string} key          message id, or `pending:<client_msg_id>` before the ack
 * @property {string|null} id
 * @property {string|null} clientMsgId
 * @property {string} userId
 * @property {string} userName
 * @property {string} text
 * @property {'text'|'system'|'file'} type
 * @property {Date} createdAt
 * @property {Date|null} editedAt
 * @property {boolean} deleted
 * @property {boolean} own
 * @property {'sent'|'pending'|'retrying'} status
 */

/**
 * @typedef {Object} Pending   one of our sends not yet acknowledged
 * @property {string} clientMsgId
 * @property {string} text
 * @property {Date} createdAt
 * @property {'pending'|'retrying'} status
 * @property {number} attempts
 * @property {number} timer
 */

/** Timers of the chat, and why. */
export const CHAT_TIMING = Object.freeze({
  /** no `ack` this long after a send: resend the same client_msg_id */
  ackTimeoutMs: 8000,
  /** resend delays after `chat_unavailable` (and ack time-outs), one per attempt, the last repeats */
  retryBackoffMs: [1000, 2000, 4000, 8000, 15000, 30000],
  /** the least we wait after `rate_limited` (10 messages in 10 s) */
  rateLimitedMinMs: 4000,
});

/** Server limits (docs/protocol.md). */
export const CHAT_LIMITS = Object.freeze({ maxBytes: 4096, historyPage: 50 });

const utf8 = new TextEncoder();

export class ChatClient extends EventTarget {
  /**
   * @param {import('/protocol.js').ConfabSession} session
   */
  constructor(session) {
    super();
    this.session = session;
    /** @type {Map<string, ChatMessage>} stored messages, by id */
    this.messages = new Map();
    /** @type {Map<string, Pending>} our sends awaiting `ack`, by client_msg_id */
    this.pending = new Map();
    /** @type {Set<string>} client_msg_ids we sent: marks our messages even under a new token */
    this.sentIds = new Set();
    /** @type {RTCDataChannel|null} */
    this.channel = null;
    this.open = false;
    /** the initial history of the current channel is still arriving */
    this.loading = false;
    /** the server has older messages than the oldest we hold */
    this.hasMore = false;
    /** a `history {before}` request is in flight */
    this.loadingOlder = false;
    /** a channel delivered its initial history before: later replays may hold messages missed meanwhile */
    this._wasConnectedBefore = false;
    /** @type {string[]} ids added by the history part being received (for `added` accounting) */
    this._historySeen = [];
    session.addEventListener('datachannel', (ev) => this._attach(/** @type {CustomEvent} */ (ev).detail.channel));
    if (session.chatChannel) this._attach(session.chatChannel);
  }

  /** Our user id (JWT `sub` of the session's token). */
  get userId() { return this.session.userId || ''; }

  /** @param {ChatMessage} m */
  isOwn(m) {
    return (!!m.client_msg_id && this.sentIds.has(m.client_msg_id)) || (!!this.userId && m.user_id === this.userId)
      || this.session.userIds?.has(m.user_id) === true;
  }

  /**
   * The chat as the UI shows it: stored messages by id, then our unacknowledged sends.
   * @returns {ChatItem[]}
   */
  items() {
    const stored = [...this.messages.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    /** @type {ChatItem[]} */
    const out = stored.map((m) => ({
      key: m.id, id: m.id, clientMsgId: m.client_msg_id || null, userId: m.user_id, userName: m.user_name,
      text: m.deleted ? '' : m.text, type: m.message_type || 'text', createdAt: new Date(m.created_at),
      editedAt: m.edited_at ? new Date(m.edited_at) : null, deleted: !!m.deleted,
      own: m.message_type !== 'system' && this.isOwn(m), status: 'sent',
    }));
    for (const p of this.pending.values()) {
      out.push({ key: `pending:${p.clientMsgId}`, id: null, clientMsgId: p.clientMsgId, userId: this.userId,
        userName: this.session.name, text: p.text, type: 'text', createdAt: p.createdAt, editedAt: null,
        deleted: false, own: true, status: p.status });
    }
    return out;
  }

  // ---------------------------------------------------------------- commands

  /**
   * Send a message. Returns the client_msg_id, or null when the text was refused locally
   * (a `chat-error` with `empty` / `too_long` tells why).
   * @param {string} text
   */
  send(text) {
    const t = String(text ?? '');
    if (!t.trim()) { this._error('empty', 'A message needs some text.', null); return null; }
    if (utf8.encode(t).length > CHAT_LIMITS.maxBytes) {
      this._error('too_long', `A message has at most ${CHAT_LIMITS.maxBytes} bytes.`, null);
      return null;
    }
    const clientMsgId = crypto.randomUUID();
    /** @type {Pending} */
    const p = { clientMsgId, text: t, createdAt: new Date(), status: 'pending', attempts: 0, timer: 0 };
    this.pending.set(clientMsgId, p);
    this.sentIds.add(clientMsgId);
    this._transmit(p);
    this._changed('send', []);
    return clientMsgId;
  }

  /** Edit one of our messages. @param {string} id @param {string} text */
  edit(id, text) {
    const t = String(text ?? '');
    if (!t.trim()) { this._error('empty', 'A message needs some text.', null); return false; }
    if (utf8.encode(t).length > CHAT_LIMITS.maxBytes) {
      this._error('too_long', `A message has at most ${CHAT_LIMITS.maxBytes} bytes.`, null);
      return false;
    }
    return this._command({ type: 'edit', id, text: t });
  }

  /** Delete one of our messages. @param {string} id */
  remove(id) { return this._command({ type: 'delete', id }); }

  /** Ask for the page of messages before the oldest we hold. */
  loadOlder() {
    if (!this.open || this.loadingOlder || !this.hasMore) return false;
    const oldest = [...this.messages.keys()].sort()[0];
    this.loadingOlder = true;
    this._historySeen = [];
    /** @type {Record<string, unknown>} */
    const req = { type: 'history', limit: CHAT_LIMITS.historyPage };
    if (oldest) req.before = oldest;
    if (!this._raw(req)) { this.loadingOlder = false; return false; }
    this._changed('older', []);
    return true;
  }

  /** Test hook / diagnostics: what the chat holds. */
  snapshot() {
    return { open: this.open, loading: this.loading, hasMore: this.hasMore,
      items: this.items().map((i) => ({ id: i.id, user: i.userName, text: i.text, type: i.type, own: i.own,
        status: i.status, deleted: i.deleted, edited: !!i.editedAt })) };
  }

  // ---------------------------------------------------------------- channel

  /** @param {RTCDataChannel} ch */
  _attach(ch) {
    if (this.channel === ch) return;
    this.channel = ch;
    this.open = ch.readyState === 'open';
    this.loadingOlder = false;
    ch.addEventListener('open', () => {
      if (this.channel !== ch) return;
      this.open = true;
      this.loading = true; // the server sends the latest messages on open
      this._historySeen = [];
      this._status();
      // Resend everything unacknowledged: the server deduplicates by client_msg_id.
      for (const p of this.pending.values()) { clearTimeout(p.timer); this._transmit(p); }
    });
    ch.addEventListener('close', () => {
      if (this.channel !== ch) return;
      this.open = false;
      this.loading = false;
      this.loadingOlder = false;
      this._status();
    });
    ch.addEventListener('message', (ev) => {
      if (this.channel !== ch || typeof ev.data !== 'string') return;
      /** @type {any} */
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      this._onMessage(msg);
    });
    this._status();
  }

  /** @param {any} msg */
  _onMessage(msg) {
    switch (msg.type) {
      case 'history': {
        const added = [];
        for (const m of msg.messages || []) {
          if (!this.messages.has(m.id)) added.push(m);
          this._store(m);
        }
        this._historySeen.push(...added.map((m) => m.id));
        if (msg.done) {
          if (this.loadingOlder) {
            this.loadingOlder = false;
            this.hasMore = !!msg.has_more;
            this._changed('older', []);
          } else {
            this.loading = false;
            // The initial page tells whether older messages exist (only when we had none older).
            this.hasMore = !!msg.has_more || (this.hasMore && this.messages.size > 0);
            this._status();
            // History replays are not unread; but messages of others that arrived while we were
            // disconnected are new to the user.
            this._changed('history', this._wasConnectedBefore ? added.filter((m) => !this.isOwn(m)) : []);
            this._wasConnectedBefore = true;
          }
        } else {
          this._changed(this.loadingOlder ? 'older' : 'history', []);
        }
        return;
      }
      case 'ack': {
        const id = String(msg.client_msg_id || '');
        const p = this.pending.get(id);
        if (p) { clearTimeout(p.timer); this.pending.delete(id); }
        this.sentIds.add(id);
        if (msg.message) this._store(msg.message);
        this._changed('ack', []);
        return;
      }
      case 'message': {
        if (!msg.message) return;
        const isNew = !this.messages.has(msg.message.id);
        this._store(msg.message);
        this._changed('message', isNew && !this.isOwn(msg.message) ? [msg.message] : []);
        return;
      }
      case 'edited': {
        if (!msg.message) return;
        this._store(msg.message);
        this._changed('edited', []);
        return;
      }
      case 'deleted': {
        const m = this.messages.get(String(msg.id));
        if (m) { m.deleted = true; m.text = ''; this._changed('deleted', []); }
        return;
      }
      case 'error': return this._onError(msg);
      default:
        console.warn('confab chat: unknown message type', msg.type);
    }
  }

  /** @param {any} msg */
  _onError(msg) {
    const code = String(msg.code || 'internal');
    const message = String(msg.message || code);
    const clientMsgId = msg.client_msg_id ? String(msg.client_msg_id) : null;
    const p = clientMsgId ? this.pending.get(clientMsgId) : undefined;
    if (p && (code === 'chat_unavailable' || code === 'rate_limited')) {
      // Nothing was stored: resend the same client_msg_id later.
      p.status = 'retrying';
      this._schedule(p, code === 'rate_limited' ? CHAT_TIMING.rateLimitedMinMs : 0);
      this._changed('retry', []);
      if (code === 'rate_limited') this._error(code, 'You are sending messages too fast; retrying shortly.', clientMsgId);
      return;
    }
    if (p) {
      // Refused for good (empty, too_long, bad_request): drop it, tell the user.
      clearTimeout(p.timer);
      this.pending.delete(p.clientMsgId);
      this._changed('send', []);
      this._error(code, `${describeChatError(code, message)}`, clientMsgId, p.text);
      return;
    }
    if (code === 'rate_limited' && this.loadingOlder) this.loadingOlder = false;
    this._error(code, describeChatError(code, message), clientMsgId);
  }

  /** @param {ChatMessage} m */
  _store(m) {
    if (!m || typeof m.id !== 'string') return;
    const prev = this.messages.get(m.id);
    // A late copy must not undo a deletion or an edit we already hold.
    if (prev?.deleted && !m.deleted) return;
    if (prev?.edited_at && m.edited_at && prev.edited_at > m.edited_at) return;
    this.messages.set(m.id, { ...m, deleted: !!m.deleted, text: m.deleted ? '' : String(m.text ?? '') });
    if (m.client_msg_id && this.pending.has(m.client_msg_id) && this.isOwn(m)) {
      clearTimeout(/** @type {Pending} */ (this.pending.get(m.client_msg_id)).timer);
      this.pending.delete(m.client_msg_id);
    }
  }

  /** Put a pending send on the channel (if open) and arm its ack time-out. @param {Pending} p */
  _transmit(p) {
    clearTimeout(p.timer);
    if (!this.pending.has(p.clientMsgId)) return;
    if (this._raw({ type: 'send', client_msg_id: p.clientMsgId, text: p.text })) {
      p.attempts++;
      p.timer = setTimeout(() => {
        if (!this.pending.has(p.clientMsgId)) return;
        p.status = 'retrying';
        this._changed('retry', []);
        this._transmit(p);
      }, CHAT_TIMING.ackTimeoutMs);
    }
    // Not open: the channel's `open` handler resends it.
  }

  /** @param {Pending} p @param {number} minMs */
  _schedule(p, minMs) {
    clearTimeout(p.timer);
    const b = CHAT_TIMING.retryBackoffMs;
    const delay = Math.max(minMs, b[Math.min(p.attempts - 1, b.length - 1)] || b[0]);
    p.timer = setTimeout(() => this._transmit(p), delay);
  }

  /** @param {Record<string, unknown>} msg */
  _command(msg) {
    if (this._raw(msg)) return true;
    this._error('offline', 'The chat is not connected; try again in a moment.', null);
    return false;
  }

  /** @param {Record<string, unknown>} msg @returns {boolean} sent */
  _raw(msg) {
    const ch = this.channel;
    if (!ch || ch.readyState !== 'open') return false;
    try { ch.send(JSON.stringify(msg)); return true; } catch { return false; }
  }

  /** @param {string} reason @param {ChatMessage[]} added */
  _changed(reason, added) { this._emit('change', { reason, added }); }

  _status() { this._emit('status', { open: this.open, loading: this.loading }); }

  /** @param {string} code @param {string} message @param {string|null} clientMsgId @param {string} [text] */
  _error(code, message, clientMsgId, text) { this._emit('chat-error', { code, message, clientMsgId, text }); }

  /** @param {string} type @param {Record<string, unknown>} detail */
  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}

/** A chat error code in words. @param {string} code @param {string} fallback */
export function describeChatError(code, fallback) {
  switch (code) {
    case 'rate_limited': return 'You are sending messages too fast.';
    case 'too_long': return `That message is too long (at most ${CHAT_LIMITS.maxBytes} bytes).`;
    case 'empty': return 'A message needs some text.';
    case 'not_author': return 'You can only change your own messages.';
    case 'not_found': return 'That message no longer exists.';
    case 'deleted': return 'That message was deleted.';
    case 'chat_unavailable': return 'The chat is unavailable right now.';
    case 'internal': return 'The server could not store that message.';
    default: return fallback || code;
  }
}
