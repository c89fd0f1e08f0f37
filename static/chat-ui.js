// confab chat panel: the DOM of the in-call chat (room.html `#chat-panel`), driven by a ChatClient
// (chat.js, no DOM). Own messages right, others left with name and time, system messages centered
// and dim; pending / "not delivered — retrying" states; edit and delete of own messages; auto-scroll
// unless the user scrolled up; unread badge on the chat button while the panel is closed; "load older".

import { ChatClient } from '/chat.js';
import { icon } from '/icons.js';

/** @typedef {import('/chat.js').ChatItem} ChatItem */

/** Closer than this to the bottom counts as "at the bottom" (auto-scroll stays on). */
const STICKY_PX = 48;
/** Messages of one sender closer than this share one name/time header. */
const GROUP_MS = 5 * 60_000;

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * @param {Object} opts
 * @param {import('/protocol.js').ConfabSession} opts.session
 * @param {(message: string, level?: string, code?: string, ms?: number) => HTMLElement} opts.toast
 * @param {(open: boolean) => void} [opts.onToggle]   the panel opened or closed (layout, other panels)
 */
export function initChatUI({ session, toast, onToggle }) {
  const chat = new ChatClient(session);
  const panel = $('chat-panel');
  const list = $('chat-list');
  const older = /** @type {HTMLButtonElement} */ ($('chat-older'));
  const input = /** @type {HTMLTextAreaElement} */ ($('chat-input'));
  const form = /** @type {HTMLFormElement} */ ($('chat-form'));
  const sendBtn = /** @type {HTMLButtonElement} */ ($('chat-send'));
  const status = $('chat-status');
  const editBar = $('chat-editing');
  const jump = $('chat-jump');
  const btn = $('chat-btn');
  const badge = $('chat-badge');

  /** @type {Map<string, {el: HTMLElement, sig: string}>} rendered rows by item key */
  const rows = new Map();
  let unread = 0;
  /** @type {string|null} the id of the own message being edited */
  let editing = null;
  /** the user is at the bottom of the list (auto-scroll on) */
  let stick = true;

  $('chat-close').addEventListener('click', () => setOpen(false));
  btn.addEventListener('click', () => setOpen(panel.hidden));
  older.addEventListener('click', () => { chat.loadOlder(); renderOlder(); });
  jump.addEventListener('click', () => { scrollToEnd(); });
  $('chat-edit-cancel').addEventListener('click', () => cancelEdit());
  list.addEventListener('scroll', () => {
    stick = list.scrollHeight - list.scrollTop - list.clientHeight < STICKY_PX;
    if (stick) jump.hidden = true;
  }, { passive: true });
  form.addEventListener('submit', (ev) => { ev.preventDefault(); submit(); });
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); submit(); }
    else if (ev.key === 'Escape') {
      if (editing) cancelEdit(); else { input.blur(); setOpen(false); }
    }
  });
  input.addEventListener('input', () => { autoGrow(); sendBtn.disabled = !input.value.trim(); });
  list.addEventListener('click', (ev) => {
    const target = /** @type {HTMLElement} */ (ev.target);
    const b = /** @type {HTMLElement|null} */ (target.closest('button[data-act]'));
    const row = /** @type {HTMLElement|null} */ (target.closest('.msg'));
    const id = row?.dataset.id;
    if (!b || !id) return;
    if (b.dataset.act === 'edit') startEdit(id);
    else if (b.dataset.act === 'delete') {
      if (editing === id) cancelEdit();
      chat.remove(id);
    }
  });

  chat.addEventListener('change', (ev) => {
    const { reason, added } = /** @type {CustomEvent} */ (ev).detail;
    const wasAtEnd = stick;
    const fromBottom = list.scrollHeight - list.scrollTop;
    render();
    renderOlder();
    if (reason === 'older') {
      // Keep what the user looks at in place while older messages appear above it.
      list.scrollTop = list.scrollHeight - fromBottom;
    } else if (wasAtEnd || reason === 'send') {
      scrollToEnd();
    } else if (/** @type {any[]} */ (added).length) {
      jump.hidden = false;
    }
    const news = /** @type {import('/chat.js').ChatMessage[]} */ (added).filter((m) => m.message_type !== 'system');
    if (news.length && (panel.hidden || document.hidden)) {
      if (panel.hidden) unread += news.length;
      renderBadge();
    }
  });
  chat.addEventListener('status', () => renderStatus());
  chat.addEventListener('chat-error', (ev) => {
    const { code, message, clientMsgId, text } = /** @type {CustomEvent} */ (ev).detail;
    toast(message, code === 'rate_limited' ? 'warning' : 'error', code);
    // A send refused for good: give the text back so it is not lost.
    if (clientMsgId && text && !input.value) { input.value = text; autoGrow(); sendBtn.disabled = false; }
  });

  renderStatus();
  render();
  renderBadge();
  sendBtn.disabled = true;

  // ---------------------------------------------------------------- panel

  /** @param {boolean} open */
  function setOpen(open) {
    if (open === !panel.hidden) return;
    panel.hidden = !open;
    btn.setAttribute('aria-pressed', String(open));
    btn.classList.toggle('active', open);
    if (open) {
      unread = 0;
      renderBadge();
      scrollToEnd();
      input.focus();
    }
    onToggle?.(open);
  }

  function renderBadge() {
    badge.textContent = unread > 99 ? '99+' : String(unread);
    badge.hidden = unread === 0;
    btn.dataset.tip = unread ? `Chat with everyone (H) · ${unread} unread` : 'Chat with everyone (H)';
    btn.setAttribute('aria-label', btn.dataset.tip);
  }

  function renderStatus() {
    if (!chat.open) {
      status.hidden = false;
      status.textContent = chat.channel ? 'Connecting the chat…' : 'The chat connects when you are in the call.';
    } else if (chat.loading) {
      status.hidden = false;
      status.textContent = 'Loading messages…';
    } else {
      status.hidden = true;
    }
    renderOlder();
  }

  function renderOlder() {
    older.hidden = !chat.hasMore;
    older.disabled = chat.loadingOlder || !chat.open;
    older.textContent = chat.loadingOlder ? 'Loading…' : 'Load older messages';
  }

  function scrollToEnd() {
    list.scrollTop = list.scrollHeight;
    stick = true;
    jump.hidden = true;
  }

  // ---------------------------------------------------------------- composer

  function submit() {
    const text = input.value;
    if (!text.trim()) return;
    if (editing) {
      const id = editing;
      const current = chat.messages.get(id);
      if (current && current.text === text) { cancelEdit(); return; }
      if (chat.edit(id, text)) cancelEdit();
      return;
    }
    if (chat.send(text)) {
      input.value = '';
      autoGrow();
      sendBtn.disabled = true;
    }
  }

  /** @param {string} id */
  function startEdit(id) {
    const m = chat.messages.get(id);
    if (!m || m.deleted) return;
    editing = id;
    editBar.hidden = false;
    input.value = m.text;
    autoGrow();
    sendBtn.disabled = false;
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
    render();
  }

  function cancelEdit() {
    editing = null;
    editBar.hidden = true;
    input.value = '';
    autoGrow();
    sendBtn.disabled = true;
    render();
  }

  function autoGrow() {
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight, 140)}px`;
  }

  // ---------------------------------------------------------------- list

  function render() {
    const items = chat.items();
    /** @type {HTMLElement[]} */
    const nodes = [];
    /** @type {ChatItem|null} */
    let prev = null;
    const keep = new Set();
    for (const it of items) {
      const head = it.type === 'system' || !prev || prev.type === 'system' || prev.userId !== it.userId
        || prev.own !== it.own || it.createdAt.getTime() - prev.createdAt.getTime() > GROUP_MS;
      const sig = [it.text, it.status, it.deleted, it.editedAt?.getTime() ?? '', head, it.own, editing === it.id,
        it.userName].join('\u0000');
      let row = rows.get(it.key);
      // An acknowledged send replaces its pending row: reuse the node so nothing jumps.
      if (!row && it.id && it.clientMsgId) {
        const p = rows.get(`pending:${it.clientMsgId}`);
        if (p) { rows.delete(`pending:${it.clientMsgId}`); row = p; rows.set(it.key, row); }
      }
      if (!row) { row = { el: document.createElement('li'), sig: '' }; rows.set(it.key, row); }
      if (row.sig !== sig) { fillRow(row.el, it, head); row.sig = sig; }
      keep.add(it.key);
      nodes.push(row.el);
      prev = it;
    }
    for (const [key, row] of rows) if (!keep.has(key)) { row.el.remove(); rows.delete(key); }
    // Reorder in place (keeps the scroll position, unlike re-adding every node).
    let cursor = older.nextSibling;
    for (const el of nodes) {
      if (cursor === el) { cursor = el.nextSibling; continue; }
      list.insertBefore(el, cursor);
    }
    $('chat-empty').hidden = items.length > 0 || !chat.open || chat.loading;
  }

  /** @param {HTMLElement} el @param {ChatItem} it @param {boolean} head */
  function fillRow(el, it, head) {
    el.className = `msg ${it.type === 'system' ? 'msg-system' : it.own ? 'msg-own' : 'msg-other'}${head ? ' msg-head' : ''}`
      + `${it.deleted ? ' msg-deleted' : ''}${it.status !== 'sent' ? ` msg-${it.status}` : ''}${editing && editing === it.id ? ' msg-editing' : ''}`;
    el.dataset.id = it.id || '';
    el.dataset.key = it.key;
    el.title = '';
    const time = formatTime(it.createdAt);
    const full = it.createdAt.toLocaleString();
    if (it.type === 'system') {
      el.innerHTML = `<span class="msg-system-text"></span> <time datetime="${it.createdAt.toISOString()}" title="${full}">${time}</time>`;
      /** @type {HTMLElement} */ (el.querySelector('.msg-system-text')).textContent = it.text;
      return;
    }
    const header = head
      ? `<div class="msg-meta"><span class="msg-author"></span><time datetime="${it.createdAt.toISOString()}" title="${full}">${time}</time></div>`
      : '';
    const state = it.status === 'pending' ? '<div class="msg-state">Sending…</div>'
      : it.status === 'retrying' ? '<div class="msg-state msg-state-warn">Not delivered — retrying</div>' : '';
    const actions = it.own && it.id && !it.deleted
      ? `<div class="msg-actions">
          <button type="button" class="msg-edit" data-act="edit" title="Edit" aria-label="Edit message">${icon('edit', 'icon icon-xs')}</button>
          <button type="button" class="msg-delete" data-act="delete" title="Delete" aria-label="Delete message">${icon('trash', 'icon icon-xs')}</button>
        </div>`
      : '';
    el.innerHTML = `${header}<div class="msg-row">${actions}<div class="msg-bubble"><span class="msg-text"></span>${
      it.editedAt && !it.deleted ? '<span class="msg-edited" title="edited">(edited)</span>' : ''}</div></div>${state}`;
    if (head) /** @type {HTMLElement} */ (el.querySelector('.msg-author')).textContent = it.own ? 'You' : it.userName;
    /** @type {HTMLElement} */ (el.querySelector('.msg-text')).textContent = it.deleted ? 'message deleted' : it.text;
    if (!head) el.title = `${it.own ? 'You' : it.userName} · ${full}`;
  }

  /** @param {Date} d */
  function formatTime(d) {
    return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  return {
    chat,
    /** @param {boolean} [open] */
    toggle(open) { setOpen(open ?? panel.hidden); },
    isOpen: () => !panel.hidden,
  };
}
