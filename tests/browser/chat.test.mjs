// Chat through the real server's `chat` DataChannel: a message typed in one page appears in the others;
// a page that joins later shows it in its history; edits and deletions show live. Also the paid-session
// display, driven by dispatching the session's events (no chain in this test).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, openRoom, eventually, randomRoom } from './helpers.mjs';

/** The texts of the chat list's message bubbles. */
const bubbles = (page) => page.locator('#chat-list .msg:not(.msg-system) .msg-text').allTextContents();

/** Opens the chat panel (button) and waits until the channel delivered its history. */
async function openChat(page, who) {
  if (await page.locator('#chat-panel').isHidden()) await page.click('#chat-btn');
  await eventually(() => page.evaluate(() => {
    const c = window.confabChat;
    return c && c.open && !c.loading;
  }), 30_000, `${who}'s chat channel to open with its history`);
}

function dump(pages) {
  for (const p of pages) console.log((p.logs || []).slice(-30).join('\n'));
}

test('chat: live messages, history for a late joiner, edit and delete', { timeout: 90_000 }, async () => {
  const browser = await launch();
  const pages = [];
  try {
    const room = randomRoom('chat');
    const [a, b] = [await openRoom(browser, room, 'Ada'), await openRoom(browser, room, 'Bob')];
    pages.push(a, b);
    await openChat(a, 'Ada');
    await openChat(b, 'Bob');

    // Bob's panel is closed: the message counts as unread on his chat button.
    await b.click('#chat-close');
    const text = `hello from Ada ${Date.now()}`;
    await a.fill('#chat-input', text);
    await a.press('#chat-input', 'Enter');
    await eventually(async () => (await bubbles(a)).includes(text), 15_000, 'Ada to see her own message');
    await eventually(() => a.locator('#chat-list .msg-own:not(.msg-pending) .msg-text', { hasText: text }).count(),
      15_000, "Ada's message to be acknowledged");
    await eventually(async () => (await b.locator('#chat-badge').textContent()) === '1', 15_000, "Bob's unread badge to show 1");
    await b.click('#chat-btn');
    await eventually(async () => (await bubbles(b)).includes(text), 15_000, "Bob to see Ada's message");
    assert.equal(await b.locator('#chat-badge').isHidden(), true, 'opening the panel clears the unread badge');
    const bobRow = b.locator('#chat-list .msg-other', { hasText: text });
    assert.equal(await bobRow.count(), 1, "Ada's message is on the others' side for Bob");
    assert.match(await b.locator('#chat-list .msg-other.msg-head .msg-author').first().textContent(), /Ada/);

    // Bob answers; Ada sees it on the left.
    await b.fill('#chat-input', 'hi Ada');
    await b.press('#chat-input', 'Enter');
    await eventually(() => a.locator('#chat-list .msg-other .msg-text', { hasText: 'hi Ada' }).count(), 15_000, "Ada to see Bob's answer");

    // The database is down when Bob sends (simulated: the send is dropped and the server's answer
    // is chat_unavailable): "not delivered — retrying", then the resend with the same
    // client_msg_id arrives once.
    await b.evaluate(() => { const ch = window.confabChat.channel; ch.send = () => {}; });
    await b.fill('#chat-input', 'retry me');
    await b.press('#chat-input', 'Enter');
    const cmid = await b.evaluate(() => [...window.confabChat.pending.keys()][0]);
    assert.ok(cmid, 'the send is pending');
    const shown = await b.evaluate((id) => {
      window.confabChat._onMessage({ type: 'error', code: 'chat_unavailable', message: 'database down', client_msg_id: id });
      delete window.confabChat.channel.send; // the database is back
      return document.querySelector('#chat-list .msg-retrying .msg-state')?.textContent;
    }, cmid);
    assert.match(shown || '', /not delivered — retrying/i, 'the retrying state is shown');
    await eventually(async () => (await bubbles(a)).includes('retry me'), 15_000, "Ada to get Bob's resent message");
    await eventually(() => b.evaluate(() => window.confabChat.pending.size === 0), 15_000, "Bob's resend to be acknowledged");
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await bubbles(a)).filter((t) => t === 'retry me').length, 1, 'the resent message is shown once');

    // A late joiner gets both from the history.
    const c = await openRoom(browser, room, 'Cy');
    pages.push(c);
    await openChat(c, 'Cy');
    await eventually(async () => {
      const t = await bubbles(c);
      return t.includes(text) && t.includes('hi Ada');
    }, 15_000, "Cy's history to show the earlier messages");
    const order = await bubbles(c);
    assert.ok(order.indexOf(text) < order.indexOf('hi Ada'), `history in order: ${JSON.stringify(order)}`);
    assert.ok(await c.locator('#chat-list .msg-system', { hasText: 'Cy joined' }).count() >= 0);

    // Ada edits her message: Bob and Cy see the new text, marked edited.
    const own = a.locator('#chat-list .msg-own', { hasText: text });
    await own.hover();
    await own.locator('button[data-act="edit"]').click();
    await a.fill('#chat-input', `${text} (fixed)`);
    await a.press('#chat-input', 'Enter');
    for (const [p, who] of [[b, 'Bob'], [c, 'Cy']]) {
      await eventually(async () => (await bubbles(p)).includes(`${text} (fixed)`), 15_000, `${who} to see the edit`);
      await eventually(() => p.locator('#chat-list .msg', { hasText: `${text} (fixed)` }).locator('.msg-edited').count(),
        5_000, `${who} to see the edited mark`);
    }

    // Ada deletes it: the others show "message deleted".
    const edited = a.locator('#chat-list .msg-own', { hasText: `${text} (fixed)` });
    await edited.hover();
    await edited.locator('button[data-act="delete"]').click();
    for (const [p, who] of [[a, 'Ada'], [b, 'Bob'], [c, 'Cy']]) {
      await eventually(async () => {
        const t = await bubbles(p);
        return !t.some((x) => x.startsWith(text)) && t.includes('message deleted');
      }, 15_000, `${who} to show the deletion`);
    }
  } catch (e) {
    dump(pages);
    throw e;
  } finally {
    await browser.close();
  }
});

test('paid session: badge with elapsed time and cost, settlement after the end', { timeout: 60_000 }, async () => {
  const browser = await launch();
  const pages = [];
  try {
    // The integration's URL hook sends session_started once connected; this server has no chain
    // (and a guest is no party), so the refusal shows as a toast and the call goes on.
    const page = await openRoom(browser, randomRoom('paid'), 'Stu', { query: `&paid=1&tutor=0x${'11'.repeat(20)}&language=1` });
    pages.push(page);
    await eventually(() => page.evaluate(() => window.confab && window.confab.state === 'connected'), 30_000, 'Stu to connect');
    await eventually(async () => /paid_sessions_disabled|not_a_party/.test(await page.locator('#toasts .toast-error').allTextContents()),
      10_000, 'the refusal toast');
    assert.equal(await page.evaluate(() => window.confab.state), 'connected', 'a refused session_started does not break the call');

    // The server's `paid_session`, as the student sees it.
    const student = '0x' + 'aB'.repeat(20);
    await page.evaluate((student) => {
      window.confab.userId = student;
      window.confab.dispatchEvent(new CustomEvent('paid-session', { detail: { session: {
        id: 's1', student, tutor: '0x' + '22'.repeat(20), language: 1, chain_session_id: '7',
        rate_per_second: '1000', started_at: Math.floor(Date.now() / 1000) - 65 } } }));
    }, student);
    await eventually(() => page.locator('#paid-badge').isVisible(), 5_000, 'the paid badge');
    await eventually(async () => /^1:0[5-9]$/.test(await page.locator('#paid-elapsed').textContent()), 5_000, 'elapsed 1:05');
    assert.match(await page.locator('#paid-cost').textContent(), /^6[5-9],000 units$/);
    assert.equal(await page.locator('#paid-end').isVisible(), true, 'the student gets an End button');
    await page.evaluate(() => {
      const s = window.confab;
      window.__sent = [];
      const orig = s._send.bind(s);
      s._send = (m) => { window.__sent.push(m.type); orig(m); };
    });
    await page.click('#paid-end');
    assert.ok((await page.evaluate(() => window.__sent)).includes('end_session'), 'End sends end_session');

    // The end, then the settlement as the REST endpoint reports it (stubbed: no chain here).
    await page.evaluate(() => {
      let calls = 0;
      window.confab.fetchPaidSession = async () => {
        calls++;
        const settlement = calls < 2
          ? { state: 'submitted', attempts: 1, tx_hash: null }
          : { state: 'settled', attempts: 1, tx_hash: '0x' + 'ab'.repeat(32), duration_s: 125, total_paid: '125000' };
        return { status: 200, body: { running: false, session: { started_at: 1, ended_at: 126 }, settlement } };
      };
      window.confab.dispatchEvent(new CustomEvent('paid-session-ended', { detail: { id: 's1', reason: 'participant_ended' } }));
    });
    await eventually(() => page.locator('#paid-badge').isHidden(), 5_000, 'the badge to go');
    await eventually(async () => (await page.locator('#settlement').getAttribute('data-state')) === 'settled', 10_000, 'settled');
    const card = await page.locator('#settlement').textContent();
    assert.match(card, /Paid session settled/);
    assert.match(card, /0xabab…abab/);
    assert.match(card, /2:05/);
    assert.match(card, /125,000 units/);
  } catch (e) {
    dump(pages);
    throw e;
  } finally {
    await browser.close();
  }
});
