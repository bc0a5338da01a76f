// What the guest sees: the status line, members and messages; the panel's unread count and close.

const MAX_MESSAGES = 500;

// ---------------------------------------------------------------- building blocks

const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};

const hueClass = (key) => {
  let h = 0;
  for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) >>> 0;
  return 'hue-' + (h % 8);
};

const relFormat = (() => {
  try {
    return new Intl.RelativeTimeFormat(lang, { numeric: 'auto' });
  } catch (e) {
    return null;
  }
})();
const relTime = (ms, now) => {
  const s = Math.max(0, now - ms) / 1000;
  if (s < 45) return t('justNow');
  const days = Math.round(s / 86400);
  if (days >= 7 || !relFormat) return new Date(ms).toLocaleDateString(lang);
  if (s < 3600) return relFormat.format(-Math.max(1, Math.round(s / 60)), 'minute');
  if (s < 86400) return relFormat.format(-Math.round(s / 3600), 'hour');
  return relFormat.format(-days, 'day');
};

// ---------------------------------------------------------------- status line

const showStatus = (kind, text) => {
  ui.status.dataset.state = kind;
  ui.status.textContent = text || '';
};

// The ordinary states (connecting, ok, offline); the explanation of a ban or a stop, which
// enter() shows, stays.
const setStatus = (kind, text) => {
  if (canSend()) showStatus(kind, text);
};

// ---------------------------------------------------------------- unread / parent

const postUnread = () => {
  if (!embedded) return;
  try {
    window.parent.postMessage({ type: 'chatty:unread', count: state.unread }, parentOrigin);
  } catch (e) {
    // The parent is gone or has another origin now.
  }
};

const setOpen = (value) => {
  const wasOpen = state.open;
  state.open = value;
  if (state.open) {
    if (state.unread) {
      state.unread = 0;
      postUnread();
    }
    if (!wasOpen || document.activeElement === document.body) focusMain();
  }
};

window.addEventListener('message', (e) => {
  if (!embedded || e.source !== window.parent) return;
  const data = e.data;
  if (!data || typeof data !== 'object') return;
  if (data.type === 'chatty:visibility') setOpen(data.open === true);
  else if (data.type === 'chatty:user-token') signIn(data.token);
});

const focusMain = () => {
  if (!ui.dialog.hidden) ui.nickInput.focus();
  else if (!ui.composer.disabled) ui.composer.focus();
};

const askToClose = () => {
  try {
    window.parent.postMessage({ type: 'chatty:close' }, parentOrigin);
  } catch (e) {
    // nothing to close
  }
};

if (embedded) {
  ui.close.hidden = false;
  ui.close.addEventListener('click', askToClose);
}

// Escape cancels the nickname dialog (when it can be cancelled), or asks the host page to close.
document.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape') return;
  if (!ui.modDialog.hidden) {
    closeModDialog();
    return;
  }
  if (!ui.dialog.hidden) {
    if (!ui.nickCancel.hidden) cancelNickDialog();
    return;
  }
  if (embedded) askToClose();
});

// ---------------------------------------------------------------- rendering: members

// The mark of a user the host site signed in: drawn from the member id (only the API gives
// out `u_` ids), never from a name, so no nickname can imitate it.
const verifiedMark = (id) => {
  if (!id.startsWith('u_')) return null;
  const mark = el('span', 'verified', '\u2713');
  mark.setAttribute('role', 'img');
  mark.setAttribute('aria-label', t('verified'));
  mark.title = t('verified');
  return mark;
};

// The last list drawn, drawn again when the controls of a moderator come or go.
const lastMembers = { list: null, count: 0 };

// `count`: how many the room has (a list names at most the first 100).
const renderMembers = (list, count) => {
  lastMembers.list = list;
  lastMembers.count = count;
  const members = list
    .filter((m) => m && typeof m.id === 'string' && typeof m.nick === 'string')
    .sort((a, b) => a.nick.localeCompare(b.nick) || a.id.localeCompare(b.id));
  const frag = document.createDocumentFragment();
  for (const m of members) {
    const li = el('li', 'member ' + hueClass(m.id));
    li.dataset.id = m.id;
    li.appendChild(el('span', 'member-nick', m.nick));
    const mark = verifiedMark(m.id);
    if (mark) li.appendChild(mark);
    rememberNick(m.id, m.nick);
    if (me.auth && m.id === me.auth.member.id) {
      li.classList.add('me');
      li.appendChild(document.createTextNode(' '));
      li.appendChild(el('span', 'member-you', t('you')));
    } else if (me.moderator) {
      li.appendChild(modButton(t('modMember', { nick: m.nick })));
    }
    frag.appendChild(li);
  }
  ui.members.replaceChildren(frag);
  const total = Number.isInteger(count) && count >= members.length ? count : members.length;
  ui.memberCount.dataset.count = String(total);
  ui.memberCount.textContent = t('here', { n: formatNumber(lang, total) });
};

// ---------------------------------------------------------------- rendering: messages

const isOwn = (ev) => me.ids.has(ev.member_id);

const nearBottom = () =>
  ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 48;
const scrollToBottom = () => {
  ui.messages.scrollTop = ui.messages.scrollHeight;
  ui.jump.hidden = true;
};

const updateEmpty = () => {
  ui.empty.hidden = ui.messages.firstElementChild !== null;
};

const setTime = (timeEl, ms, now) => {
  const at = new Date(ms);
  timeEl.dataset.ms = String(ms);
  timeEl.dateTime = at.toISOString();
  timeEl.title = at.toLocaleString(lang);
  timeEl.textContent = relTime(ms, now);
};

const fillMessage = (li, ev, own) => {
  li.className = 'message' + (own ? ' own' : '');
  li.dataset.seq = String(ev.seq);
  li.dataset.memberId = ev.member_id;
  delete li.dataset.clientId;
  li.replaceChildren();
  const meta = el('div', 'meta');
  const nickEl = el('span', 'nick ' + hueClass(ev.member_id), ev.nick);
  meta.appendChild(nickEl);
  const mark = verifiedMark(ev.member_id);
  if (mark) meta.appendChild(mark);
  if (own) meta.appendChild(el('span', 'visually-hidden', ' ' + t('you')));
  meta.appendChild(document.createTextNode(' '));
  const time = el('time', 'time');
  setTime(time, Number(ev.at_ms) || Date.now(), Date.now());
  meta.appendChild(time);
  li.appendChild(meta);
  li.appendChild(el('p', 'text', ev.text));
  rememberNick(ev.member_id, ev.nick);
  decorateMessage(li);
};

// Keeps confirmed messages in seq order, with unconfirmed (pending) ones after them.
const insertBySeq = (li, seq) => {
  let ref = null;
  for (let n = ui.messages.lastElementChild; n; n = n.previousElementSibling) {
    if (n === li) continue;
    if (!n.dataset.seq || Number(n.dataset.seq) > seq) {
      ref = n;
      continue;
    }
    break;
  }
  if (ref !== li) ui.messages.insertBefore(li, ref);
};

const trimMessages = () => {
  while (shown.bySeq.size > MAX_MESSAGES) {
    const first = ui.messages.querySelector('li.message[data-seq]');
    if (!first) break;
    shown.bySeq.delete(Number(first.dataset.seq));
    first.remove();
  }
};

const removeMessage = (seq) => {
  shown.deleted.add(seq);
  const li = shown.bySeq.get(seq);
  if (li) {
    li.remove();
    shown.bySeq.delete(seq);
  }
};

const confirmItem = (item, ev) => {
  if (item.done) return;
  item.done = true;
  outbox.byCid.delete(item.client_id);
  const i = outbox.items.indexOf(item);
  if (i >= 0) outbox.items.splice(i, 1);
  saveOutbox();
  if (shown.bySeq.has(ev.seq) || shown.deleted.has(ev.seq)) {
    item.li.remove();
    return;
  }
  const stick = nearBottom();
  fillMessage(item.li, ev, true);
  shown.bySeq.set(ev.seq, item.li);
  insertBySeq(item.li, ev.seq);
  if (stick) scrollToBottom();
};

// Adds one message event. `live` is true for events that arrive after the first sync.
const addMessage = (ev, live) => {
  if (shown.bySeq.has(ev.seq) || shown.deleted.has(ev.seq)) return false;
  if (ev.client_id && outbox.byCid.has(ev.client_id)) {
    confirmItem(outbox.byCid.get(ev.client_id), ev);
    return false;
  }
  const own = isOwn(ev);
  const li = document.createElement('li');
  fillMessage(li, ev, own);
  shown.bySeq.set(ev.seq, li);
  insertBySeq(li, ev.seq);
  // Read out by screen readers: the list is no live region, so a history is not read out.
  if (live && !own) ui.announce.textContent = ev.nick + ': ' + ev.text;
  return live && !own;
};

const validEvent = (ev) =>
  ev && typeof ev === 'object' && Number.isSafeInteger(ev.seq) && ev.seq > 0;

// A message event as the frame keeps it, from the API's JSON.
const toMessage = (raw) => ({
  seq: raw.seq,
  member_id: String(raw.member_id || ''),
  nick: String(raw.nick || ''),
  text: String(raw.text || ''),
  client_id: typeof raw.client_id === 'string' ? raw.client_id : null,
  at_ms: raw.at_ms,
});

const applyEvents = (events, live) => {
  const stick = nearBottom();
  let fresh = 0;
  for (const raw of events) {
    if (!validEvent(raw)) continue;
    if (raw.kind === 'deletion') {
      if (Number.isSafeInteger(raw.deletes)) removeMessage(raw.deletes);
    } else if (raw.kind === 'message') {
      if (addMessage(toMessage(raw), live)) fresh++;
    } else if (raw.kind === 'moderation') {
      // A line of its own for every viewer; read out, not counted as unread.
      const line = addModeration(toMessage(raw));
      if (line && live) ui.announce.textContent = line;
    }
    // Unknown kinds are skipped: a newer server may add some.
    if (raw.seq > cursor.seq) cursor.seq = raw.seq;
  }
  trimMessages();
  updateEmpty();
  if (fresh) {
    if (stick) scrollToBottom();
    else ui.jump.hidden = false;
    if (!state.open) {
      state.unread += fresh;
      postUnread();
    }
  } else if (stick) {
    scrollToBottom();
  }
};

const clearHistory = () => {
  for (const li of shown.bySeq.values()) li.remove();
  shown.bySeq.clear();
  shown.deleted.clear();
  cursor.seq = 0;
  cursor.etag = null;
  updateEmpty();
};

const refreshTimes = () => {
  const now = Date.now();
  for (const time of ui.messages.querySelectorAll('time.time[data-ms]')) {
    time.textContent = relTime(Number(time.dataset.ms), now);
  }
};

ui.messages.addEventListener('scroll', () => {
  if (nearBottom()) ui.jump.hidden = true;
});
ui.jump.addEventListener('click', () => {
  scrollToBottom();
  ui.composer.focus();
});
