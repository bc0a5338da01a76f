/*! Chatty chat frame: the chat UI served at /v1/sites/{site}/rooms/{room}/frame, usually
 * inside the iframe that widget.js adds to a host page, same-origin with the API.
 *
 * Flow: nickname (remembered per site in localStorage) -> POST join -> render -> poll
 * messages every ~2 s with If-None-Match (304 = nothing new) and members every other tick,
 * heartbeat every 10 s, leave by sendBeacon on pagehide. Sends go through an outbox kept in
 * sessionStorage; each message keeps one client_id for all its retries, so a retry never
 * duplicates it. All user text is rendered with textContent, never as HTML.
 */
(() => {
  'use strict';

  const POLL_MS = 2000;
  const HEARTBEAT_MS = 10000;
  const TIME_REFRESH_MS = 30000;
  const MAX_BACKOFF_MS = 30000;
  const MAX_MESSAGES = 500;
  const MAX_PAGES_PER_TICK = 50;

  const $ = (id) => document.getElementById(id);
  const ui = {
    app: $('app'),
    roomName: $('room-name'),
    memberCount: $('member-count'),
    nickChange: $('nick-change'),
    myNick: $('my-nick'),
    close: $('close'),
    members: $('members'),
    messages: $('messages'),
    empty: $('empty'),
    jump: $('jump'),
    status: $('status'),
    form: $('send-form'),
    composer: $('composer'),
    send: $('send'),
    dialog: $('nick-dialog'),
    nickForm: $('nick-form'),
    nickInput: $('nick-input'),
    nickError: $('nick-error'),
    nickSubmit: $('nick-submit'),
    nickCancel: $('nick-cancel'),
  };

  // ---------------------------------------------------------------- small helpers

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const jitter = (ms) => Math.round(ms * (0.8 + Math.random() * 0.4));
  const backoff = (attempt) =>
    jitter(Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, Math.max(0, attempt - 1))));
  const secs = (ms) => Math.max(1, Math.round(ms / 1000)) + ' s';

  const store = (area) => ({
    get(key) {
      try {
        return window[area].getItem(key);
      } catch (e) {
        return null;
      }
    },
    set(key, value) {
      try {
        if (value === null) window[area].removeItem(key);
        else window[area].setItem(key, value);
      } catch (e) {
        // Storage blocked or full: the chat still works, it just forgets on reload.
      }
    },
  });
  const local = store('localStorage');
  const session = store('sessionStorage');

  const readJson = (area, key) => {
    const raw = area.get(key);
    if (!raw) return null;
    try {
      return JSON.parse(raw);
    } catch (e) {
      return null;
    }
  };

  const CLIENT_ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';
  const newClientId = () => {
    const bytes = new Uint8Array(22);
    crypto.getRandomValues(bytes);
    let id = '';
    for (const b of bytes) id += CLIENT_ID_ALPHABET[b & 63];
    return id;
  };

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

  const relTime = (ms, now) => {
    const s = Math.max(0, now - ms) / 1000;
    if (s < 45) return 'just now';
    if (s < 3600) return Math.max(1, Math.round(s / 60)) + ' min ago';
    if (s < 86400) return Math.round(s / 3600) + ' h ago';
    const days = Math.round(s / 86400);
    if (days === 1) return 'yesterday';
    if (days < 7) return days + ' days ago';
    return new Date(ms).toLocaleDateString();
  };

  // ---------------------------------------------------------------- where we are

  const match = /^\/v1\/sites\/([^/]+)\/rooms\/([^/]+)\/frame\/?$/.exec(location.pathname);
  const decode = (s) => {
    try {
      return decodeURIComponent(s);
    } catch (e) {
      return s;
    }
  };
  if (!match) {
    ui.status.dataset.state = 'error';
    ui.status.textContent = 'This address is not a chat room.';
    ui.composer.disabled = true;
    ui.send.disabled = true;
    return;
  }
  const site = decode(match[1]);
  const room = decode(match[2]);
  const base = '/v1/sites/' + match[1] + '/rooms/' + match[2];
  const NICK_KEY = 'chatty.nick.' + site;
  const SESSION_KEY = 'chatty.session.' + site + '/' + room;
  const OUTBOX_KEY = 'chatty.outbox.' + site + '/' + room;

  ui.roomName.textContent = room;
  document.title = '#' + room + ' \u00b7 Chatty';

  const embedded = window.parent !== window;
  const parentOrigin = (() => {
    try {
      if (location.ancestorOrigins && location.ancestorOrigins.length) {
        return location.ancestorOrigins[0];
      }
    } catch (e) {
      // fall through
    }
    try {
      if (document.referrer) return new URL(document.referrer).origin;
    } catch (e) {
      // fall through
    }
    return '*';
  })();

  // ---------------------------------------------------------------- state

  let auth = null; // {token, member: {id, nick}, expires_ms}
  let nick = local.get(NICK_KEY) || '';
  let synced = false; // the first join's messages are on screen and polling runs
  let banned = false;
  let stopped = false; // a fatal error (unknown site): nothing more to do
  let paused = false; // page hidden by pagehide (possibly into the back/forward cache)

  let lastSeq = 0; // poll cursor: only ever advanced by join and poll answers
  let msgEtag = null; // If-None-Match for the next messages poll, null for none
  let knownEpoch = null;
  let membersEtag = null;
  let members = [];

  const msgEls = new Map(); // seq -> li
  const deleted = new Set(); // seqs of deleted messages
  const myIds = new Set(); // member ids this tab has been (a re-join may give a new one)
  const outbox = []; // [{client_id, text, li, done}]
  const pendingByCid = new Map();

  let pollTimer = null;
  let pollFailures = 0;
  let tick = 0;
  let heartbeatTimer = null;
  let refreshTimer = null;
  let timeTimer = null;
  let sending = false;

  // The widget creates the frame when the chat is first opened; it says so again on load.
  let open = true;
  let unread = 0;

  const saved = readJson(session, SESSION_KEY);
  if (saved && Array.isArray(saved.my_ids)) {
    for (const id of saved.my_ids) if (typeof id === 'string') myIds.add(id);
  }

  const saveSession = () => {
    if (!auth) return;
    session.set(
      SESSION_KEY,
      JSON.stringify({
        token: auth.token,
        member: auth.member,
        expires_ms: auth.expires_ms,
        my_ids: Array.from(myIds).slice(-20),
      }),
    );
  };

  const saveOutbox = () => {
    const items = outbox.filter((i) => !i.done && !i.failed);
    session.set(
      OUTBOX_KEY,
      items.length ? JSON.stringify(items.map((i) => ({ client_id: i.client_id, text: i.text }))) : null,
    );
  };

  // ---------------------------------------------------------------- HTTP

  const api = async (method, path, opts = {}) => {
    const headers = {};
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    const token = opts.token || (opts.auth && auth ? auth.token : null);
    if (token) headers.Authorization = 'Bearer ' + token;
    if (opts.etag) headers['If-None-Match'] = opts.etag;
    let res;
    let data = null;
    try {
      res = await fetch(base + path, {
        method,
        headers,
        body,
        cache: 'no-store',
        credentials: 'same-origin',
      });
      if (res.status !== 204 && res.status !== 304) {
        const text = await res.text();
        if (text) {
          try {
            data = JSON.parse(text);
          } catch (e) {
            data = null;
          }
        }
      }
    } catch (e) {
      const err = new Error('network error');
      err.network = true;
      throw err;
    }
    return { status: res.status, data, headers: res.headers };
  };

  const DEFAULT_ERRORS = {
    400: 'That was not accepted.',
    401: 'Your session expired.',
    403: 'You are not allowed to do that here.',
    404: 'This chat room does not exist.',
    413: 'That message is too long.',
    429: 'You are going a bit fast. Please wait a moment.',
    503: 'The chat is busy right now.',
  };
  const errorMessage = (res) => {
    const e = res && res.data && res.data.error;
    if (e && typeof e.message === 'string' && e.message) return e.message;
    if (res && DEFAULT_ERRORS[res.status]) return DEFAULT_ERRORS[res.status];
    return 'Something went wrong.';
  };
  const errorCode = (res) => {
    const e = res && res.data && res.data.error;
    return e && typeof e.code === 'string' ? e.code : '';
  };
  const retryAfterMs = (res) => {
    const h = res && res.headers && res.headers.get('Retry-After');
    if (!h) return null;
    let ms = null;
    if (/^\s*\d+\s*$/.test(h)) ms = Number(h) * 1000;
    else {
      const at = Date.parse(h);
      if (!Number.isNaN(at)) ms = at - Date.now();
    }
    if (ms === null) return null;
    return Math.min(300000, Math.max(1000, ms));
  };
  const httpError = (res) => {
    const err = new Error('HTTP ' + res.status);
    err.res = res;
    err.retryAfter = res.status === 429 || res.status === 503 ? retryAfterMs(res) : null;
    return err;
  };
  const transient = (res) => res.status === 429 || res.status >= 500;

  // ---------------------------------------------------------------- status line

  const setStatus = (state, text) => {
    if (banned && state !== 'banned') return;
    if (stopped && state !== 'error') return;
    ui.status.dataset.state = state;
    ui.status.textContent = text || '';
  };

  const becomeBanned = (res) => {
    banned = true;
    const text =
      errorCode(res) === 'banned'
        ? errorMessage(res) + ' You can still read this room, but you can no longer send messages.'
        : errorMessage(res);
    ui.status.dataset.state = 'banned';
    ui.status.textContent = text;
    ui.composer.disabled = true;
    ui.send.disabled = true;
    clearInterval(heartbeatTimer);
    heartbeatTimer = null;
    for (const item of outbox) if (!item.done) markFailed(item, 'Not sent.', false);
    outbox.length = 0;
    saveOutbox();
  };

  const stopAll = (text) => {
    setStatus('error', text);
    stopped = true;
    clearTimeout(pollTimer);
    clearInterval(heartbeatTimer);
    clearTimeout(refreshTimer);
    ui.composer.disabled = true;
    ui.send.disabled = true;
  };

  // ---------------------------------------------------------------- unread / parent

  const postUnread = () => {
    if (!embedded) return;
    try {
      window.parent.postMessage({ type: 'chatty:unread', count: unread }, parentOrigin);
    } catch (e) {
      // The parent is gone or has another origin now.
    }
  };

  const setOpen = (value) => {
    const wasOpen = open;
    open = value;
    if (open) {
      if (unread) {
        unread = 0;
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
  });

  const focusMain = () => {
    if (!ui.dialog.hidden) ui.nickInput.focus();
    else if (!ui.composer.disabled) ui.composer.focus();
  };

  if (embedded) {
    ui.close.hidden = false;
    ui.close.addEventListener('click', () => {
      try {
        window.parent.postMessage({ type: 'chatty:close' }, parentOrigin);
      } catch (e) {
        // nothing to close
      }
    });
  }

  // ---------------------------------------------------------------- rendering: members

  const renderMembers = (list) => {
    members = list
      .filter((m) => m && typeof m.id === 'string' && typeof m.nick === 'string')
      .sort((a, b) => a.nick.localeCompare(b.nick) || a.id.localeCompare(b.id));
    const frag = document.createDocumentFragment();
    for (const m of members) {
      const li = el('li', 'member ' + hueClass(m.id));
      li.dataset.id = m.id;
      li.appendChild(el('span', 'member-nick', m.nick));
      if (auth && m.id === auth.member.id) {
        li.classList.add('me');
        li.appendChild(el('span', 'member-you', ' (you)'));
      }
      frag.appendChild(li);
    }
    ui.members.replaceChildren(frag);
    ui.memberCount.textContent = String(members.length);
  };

  // ---------------------------------------------------------------- rendering: messages

  const isOwn = (ev) => myIds.has(ev.member_id);

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
    timeEl.title = at.toLocaleString();
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
    if (own) meta.appendChild(el('span', 'visually-hidden', ' (you)'));
    meta.appendChild(document.createTextNode(' '));
    const time = el('time', 'time');
    setTime(time, Number(ev.at_ms) || Date.now(), Date.now());
    meta.appendChild(time);
    li.appendChild(meta);
    li.appendChild(el('p', 'text', ev.text));
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
    while (msgEls.size > MAX_MESSAGES) {
      const first = ui.messages.querySelector('li.message[data-seq]');
      if (!first) break;
      msgEls.delete(Number(first.dataset.seq));
      first.remove();
    }
  };

  const removeMessage = (seq) => {
    deleted.add(seq);
    const li = msgEls.get(seq);
    if (li) {
      li.remove();
      msgEls.delete(seq);
    }
  };

  const confirmItem = (item, ev) => {
    if (item.done) return;
    item.done = true;
    pendingByCid.delete(item.client_id);
    const i = outbox.indexOf(item);
    if (i >= 0) outbox.splice(i, 1);
    saveOutbox();
    if (msgEls.has(ev.seq) || deleted.has(ev.seq)) {
      item.li.remove();
      return;
    }
    const stick = nearBottom();
    fillMessage(item.li, ev, true);
    msgEls.set(ev.seq, item.li);
    insertBySeq(item.li, ev.seq);
    if (stick) scrollToBottom();
  };

  // Adds one message event. `live` is true for events that arrive after the first sync.
  const addMessage = (ev, live) => {
    if (msgEls.has(ev.seq) || deleted.has(ev.seq)) return false;
    if (ev.client_id && pendingByCid.has(ev.client_id)) {
      confirmItem(pendingByCid.get(ev.client_id), ev);
      return false;
    }
    const own = isOwn(ev);
    const li = document.createElement('li');
    fillMessage(li, ev, own);
    msgEls.set(ev.seq, li);
    insertBySeq(li, ev.seq);
    return live && !own;
  };

  const validEvent = (ev) =>
    ev && typeof ev === 'object' && Number.isSafeInteger(ev.seq) && ev.seq > 0;

  const applyEvents = (events, live) => {
    const stick = nearBottom();
    let fresh = 0;
    for (const raw of events) {
      if (!validEvent(raw)) continue;
      if (raw.kind === 'deletion') {
        if (Number.isSafeInteger(raw.deletes)) removeMessage(raw.deletes);
      } else if (raw.kind === 'message') {
        const ev = {
          seq: raw.seq,
          member_id: String(raw.member_id || ''),
          nick: String(raw.nick || ''),
          text: String(raw.text || ''),
          client_id: typeof raw.client_id === 'string' ? raw.client_id : null,
          at_ms: raw.at_ms,
        };
        if (addMessage(ev, live)) fresh++;
      }
      // Unknown kinds are skipped: a newer server may add some.
      if (raw.seq > lastSeq) lastSeq = raw.seq;
    }
    trimMessages();
    updateEmpty();
    if (fresh) {
      if (stick) scrollToBottom();
      else ui.jump.hidden = false;
      if (!open) {
        unread += fresh;
        postUnread();
      }
    } else if (stick) {
      scrollToBottom();
    }
  };

  const clearHistory = () => {
    for (const li of msgEls.values()) li.remove();
    msgEls.clear();
    deleted.clear();
    lastSeq = 0;
    msgEtag = null;
    updateEmpty();
  };

  const refreshTimes = () => {
    const now = Date.now();
    for (const t of ui.messages.querySelectorAll('time.time[data-ms]')) {
      t.textContent = relTime(Number(t.dataset.ms), now);
    }
  };

  ui.messages.addEventListener('scroll', () => {
    if (nearBottom()) ui.jump.hidden = true;
  });
  ui.jump.addEventListener('click', () => {
    scrollToBottom();
    ui.composer.focus();
  });

  // ---------------------------------------------------------------- join

  const showNickDialog = (canCancel) => {
    ui.nickInput.value = nick;
    ui.nickError.textContent = '';
    ui.nickCancel.hidden = !canCancel;
    ui.nickSubmit.disabled = false;
    ui.nickSubmit.textContent = canCancel ? 'Change' : 'Join chat';
    ui.dialog.hidden = false;
    ui.app.inert = true;
    ui.app.setAttribute('aria-hidden', 'true');
    ui.nickInput.focus();
    ui.nickInput.select();
  };
  const hideNickDialog = () => {
    ui.dialog.hidden = true;
    ui.app.inert = false;
    ui.app.removeAttribute('aria-hidden');
  };

  const showMe = () => {
    if (!auth) return;
    ui.myNick.textContent = auth.member.nick;
    ui.nickChange.hidden = false;
  };

  const scheduleRefresh = (ttlSecs) => {
    clearTimeout(refreshTimer);
    const ttl = Number(ttlSecs);
    if (!Number.isFinite(ttl) || ttl <= 0) return;
    const ms = Math.max(30, ttl * 0.8) * 1000;
    refreshTimer = setTimeout(() => {
      rejoin();
    }, Math.min(ms, 2147483000));
  };

  const applyJoin = (data) => {
    auth = {
      token: data.token,
      member: { id: String(data.member.id), nick: String(data.member.nick) },
      expires_ms: Date.now() + (Number(data.token_ttl_secs) || 0) * 1000,
    };
    myIds.add(auth.member.id);
    saveSession();
    scheduleRefresh(data.token_ttl_secs);
    if (Array.isArray(data.members)) {
      renderMembers(data.members);
      membersEtag = typeof data.members_etag === 'string' ? data.members_etag : null;
    }
    if (!synced) {
      // The first sync: take the history and the cursor. Later joins (token refresh, 401,
      // nickname change) keep the poll cursor so no deletion in between is skipped.
      ui.messages.setAttribute('aria-busy', 'true');
      clearHistory();
      applyEvents(Array.isArray(data.messages) ? data.messages : [], false);
      lastSeq = Math.max(lastSeq, Number(data.seq) || 0);
      msgEtag = typeof data.etag === 'string' ? data.etag : null;
      const parsed = parseEtag(msgEtag);
      knownEpoch = parsed ? parsed.epoch : null;
      ui.messages.removeAttribute('aria-busy');
      scrollToBottom();
      synced = true;
      startLoops();
    }
    showMe();
    setStatus('ok', '');
    if (!banned) {
      ui.composer.disabled = false;
      ui.send.disabled = false;
    }
    processOutbox();
  };

  // One join at a time. Resolves to {ok: true}, {ok: false, message} (e.g. a refused nick)
  // or {ok: false, fatal: true}; network errors, 5xx, 429 and 503 are retried with back-off.
  const join = async (wanted) => {
    let attempt = 0;
    for (;;) {
      if (stopped || banned) return { ok: false, fatal: true };
      let res;
      try {
        res = await api('POST', '/join', { body: { nick: wanted } });
      } catch (e) {
        attempt++;
        const wait = backoff(attempt);
        setStatus('offline', 'Cannot reach the chat. Retrying in ' + secs(wait) + '\u2026');
        await sleep(wait);
        continue;
      }
      if (res.status === 200 && res.data && typeof res.data.token === 'string' && res.data.member) {
        applyJoin(res.data);
        return { ok: true };
      }
      if (transient(res)) {
        attempt++;
        const wait = retryAfterMs(res) || backoff(attempt);
        setStatus('offline', errorMessage(res) + ' Retrying in ' + secs(wait) + '\u2026');
        await sleep(wait);
        continue;
      }
      if (res.status === 403) {
        becomeBanned(res);
        return { ok: false, fatal: true };
      }
      if (res.status === 404) {
        stopAll(errorMessage(res));
        return { ok: false, fatal: true };
      }
      return { ok: false, message: errorMessage(res) };
    }
  };

  let joining = null;
  const joinOnce = (wanted) => {
    if (!joining) {
      joining = join(wanted).finally(() => {
        joining = null;
      });
    }
    return joining;
  };

  // Gets a fresh token with the current nickname; asks for a new nickname if it is refused.
  const rejoin = async () => {
    if (!nick) {
      showNickDialog(false);
      return { ok: false };
    }
    const result = await joinOnce(nick);
    if (!result.ok && !result.fatal) {
      showNickDialog(false);
      ui.nickError.textContent = result.message;
    }
    return result;
  };

  ui.nickForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const wanted = ui.nickInput.value.trim();
    if (!wanted) {
      ui.nickError.textContent = 'Please enter a nickname.';
      ui.nickInput.focus();
      return;
    }
    ui.nickError.textContent = '';
    ui.nickSubmit.disabled = true;
    if (joining) await joining;
    const previous = auth;
    const result = await joinOnce(wanted);
    ui.nickSubmit.disabled = false;
    if (result.ok) {
      nick = wanted;
      local.set(NICK_KEY, wanted);
      hideNickDialog();
      if (previous && previous.token !== auth.token) {
        api('POST', '/leave', { token: previous.token }).catch(() => {});
      }
      ui.composer.focus();
    } else if (result.fatal) {
      hideNickDialog();
    } else {
      ui.nickError.textContent = result.message;
      ui.nickInput.focus();
    }
  });
  ui.nickCancel.addEventListener('click', () => {
    hideNickDialog();
    ui.nickChange.focus();
  });
  ui.nickChange.addEventListener('click', () => showNickDialog(true));

  // ---------------------------------------------------------------- polling

  const parseEtag = (etag) => {
    const m = /^(?:W\/)?"r(\d+)\.(\d+)"$/.exec(etag || '');
    return m ? { epoch: m[1], seq: Number(m[2]) } : null;
  };

  const pollMessages = async () => {
    for (let page = 0; page < MAX_PAGES_PER_TICK; page++) {
      const res = await api('GET', '/messages?after=' + lastSeq, { etag: msgEtag });
      if (res.status === 304) return;
      if (res.status !== 200 || !res.data || !Array.isArray(res.data.events)) {
        throw httpError(res);
      }
      const etag = res.headers.get('ETag');
      const parsed = parseEtag(etag);
      if (parsed && knownEpoch !== null && parsed.epoch !== knownEpoch && knownEpoch !== '0' && lastSeq > 0) {
        // The room's history was reset: start again from the beginning.
        knownEpoch = parsed.epoch;
        clearHistory();
        continue;
      }
      if (parsed) knownEpoch = parsed.epoch;
      applyEvents(res.data.events, true);
      const seq = Number(res.data.seq);
      if (Number.isSafeInteger(seq) && seq > lastSeq) lastSeq = seq;
      if (res.data.more === true) {
        // The ETag names the room's current version, which this page does not reach yet.
        msgEtag = null;
        continue;
      }
      if (parsed && parsed.seq < lastSeq) {
        clearHistory();
        continue;
      }
      // Only keep an ETag that matches what is on screen, so a 304 can never hide an event.
      msgEtag = etag && (!parsed || parsed.seq === lastSeq) ? etag : null;
      return;
    }
  };

  const pollMembers = async () => {
    const res = await api('GET', '/members', { etag: membersEtag });
    if (res.status === 304) return;
    if (res.status === 200 && res.data && Array.isArray(res.data.members)) {
      renderMembers(res.data.members);
      membersEtag = res.headers.get('ETag');
      return;
    }
    throw httpError(res);
  };

  const pollLoop = async () => {
    pollTimer = null;
    if (stopped || paused) return;
    let delay = jitter(POLL_MS) * (document.hidden ? 3 : 1);
    try {
      await pollMessages();
      tick++;
      if (tick % 2 === 0) {
        try {
          await pollMembers();
        } catch (e) {
          // The members list is refreshed again on the next turn.
        }
      }
      if (pollFailures) {
        pollFailures = 0;
        setStatus('ok', '');
      }
    } catch (e) {
      if (e.res && e.res.status === 404) {
        stopAll(errorMessage(e.res));
        return;
      }
      pollFailures++;
      delay = e.retryAfter || backoff(pollFailures);
      if (pollFailures >= 2 || e.retryAfter) {
        setStatus('offline', 'Connection problem. Retrying in ' + secs(delay) + '\u2026');
      }
    }
    if (!stopped && !paused) pollTimer = setTimeout(pollLoop, delay);
  };

  const heartbeat = async () => {
    if (!auth || banned || stopped || paused) return;
    try {
      const res = await api('POST', '/heartbeat', { auth: true });
      if (res.status === 401) rejoin();
      else if (res.status === 403) becomeBanned(res);
    } catch (e) {
      // The next heartbeat tries again; presence lasts several of them.
    }
  };

  const startLoops = () => {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(pollLoop, jitter(POLL_MS));
    clearInterval(heartbeatTimer);
    if (!banned) heartbeatTimer = setInterval(heartbeat, HEARTBEAT_MS);
    if (!timeTimer) timeTimer = setInterval(refreshTimes, TIME_REFRESH_MS);
  };

  // ---------------------------------------------------------------- sending

  const itemNote = (item, text, actions) => {
    let note = item.li.querySelector('.note');
    if (!note) {
      note = el('p', 'note');
      item.li.appendChild(note);
    }
    note.replaceChildren(document.createTextNode(text));
    if (actions) {
      for (const [label, cls, fn] of actions) {
        const b = el('button', cls, label);
        b.type = 'button';
        b.addEventListener('click', fn);
        note.appendChild(document.createTextNode(' '));
        note.appendChild(b);
      }
    }
  };

  const pendingLi = (item) => {
    const li = el('li', 'message own pending');
    li.dataset.clientId = item.client_id;
    const meta = el('div', 'meta');
    meta.appendChild(el('span', 'nick ' + hueClass(auth ? auth.member.id : nick), auth ? auth.member.nick : nick));
    meta.appendChild(document.createTextNode(' '));
    meta.appendChild(el('span', 'time', 'sending\u2026'));
    li.appendChild(meta);
    li.appendChild(el('p', 'text', item.text));
    return li;
  };

  const markFailed = (item, reason, canRetry) => {
    item.failed = true;
    pendingByCid.delete(item.client_id);
    item.li.classList.add('failed');
    const actions = [];
    if (canRetry && !banned) {
      actions.push([
        'Retry',
        'link retry',
        () => {
          item.failed = false;
          item.li.classList.remove('failed');
          const n = item.li.querySelector('.note');
          if (n) n.remove();
          pendingByCid.set(item.client_id, item);
          outbox.push(item);
          saveOutbox();
          processOutbox();
        },
      ]);
    }
    actions.push([
      'Remove',
      'link discard',
      () => {
        item.li.remove();
        updateEmpty();
        ui.composer.focus();
      },
    ]);
    itemNote(item, reason, actions);
  };

  // Delivers one outbox item, retrying with the same client_id. Returns when it is stored,
  // refused or the sender is banned.
  const deliver = async (item) => {
    let attempt = 0;
    let unauthorized = 0;
    for (;;) {
      if (item.done) return;
      if (banned || stopped) {
        markFailed(item, 'Not sent.', false);
        return;
      }
      if (!auth) {
        const r = await rejoin();
        if (!r.ok) {
          markFailed(item, 'Not sent: you are not in the room.', true);
          return;
        }
      }
      let res;
      try {
        res = await api('POST', '/messages', {
          auth: true,
          body: { text: item.text, client_id: item.client_id },
        });
      } catch (e) {
        attempt++;
        const wait = backoff(attempt);
        itemNote(item, 'Cannot reach the chat. Retrying in ' + secs(wait) + '\u2026');
        await sleep(wait);
        continue;
      }
      if ((res.status === 201 || res.status === 200) && res.data && validEvent(res.data)) {
        const n = item.li.querySelector('.note');
        if (n) n.remove();
        confirmItem(item, {
          seq: res.data.seq,
          member_id: String(res.data.member_id || ''),
          nick: String(res.data.nick || ''),
          text: String(res.data.text || ''),
          client_id: item.client_id,
          at_ms: res.data.at_ms,
        });
        updateEmpty();
        return;
      }
      if (res.status === 401) {
        unauthorized++;
        if (unauthorized > 2) await sleep(backoff(unauthorized));
        const r = await rejoin();
        if (!r.ok) {
          markFailed(item, 'Not sent: you are not in the room.', true);
          return;
        }
        continue;
      }
      if (res.status === 403) {
        becomeBanned(res);
        return;
      }
      if (transient(res)) {
        attempt++;
        const wait = retryAfterMs(res) || backoff(attempt);
        itemNote(item, errorMessage(res) + ' Retrying in ' + secs(wait) + '\u2026');
        await sleep(wait);
        continue;
      }
      // 400, 413 and the like: sending it again would not help.
      markFailed(item, 'Not sent: ' + errorMessage(res), false);
      if (!ui.composer.value) {
        ui.composer.value = item.text;
        autosize();
      }
      return;
    }
  };

  const processOutbox = async () => {
    if (sending || !auth || banned || stopped) return;
    sending = true;
    try {
      while (outbox.length && !banned && !stopped) {
        const item = outbox[0];
        await deliver(item);
        const i = outbox.indexOf(item);
        if (i >= 0) outbox.splice(i, 1);
        saveOutbox();
      }
    } finally {
      sending = false;
    }
  };

  const enqueue = (text, clientId) => {
    const item = { client_id: clientId || newClientId(), text, li: null, done: false, failed: false };
    item.li = pendingLi(item);
    ui.messages.appendChild(item.li);
    pendingByCid.set(item.client_id, item);
    outbox.push(item);
    saveOutbox();
    updateEmpty();
    return item;
  };

  const submit = () => {
    if (banned || stopped) return;
    const text = ui.composer.value.trim();
    if (!text) return;
    enqueue(text);
    ui.composer.value = '';
    autosize();
    scrollToBottom();
    processOutbox();
  };

  const autosize = () => {
    const c = ui.composer;
    c.style.height = 'auto';
    const border = c.offsetHeight - c.clientHeight;
    c.style.height = Math.min(c.scrollHeight + border, 160) + 'px';
  };

  ui.form.addEventListener('submit', (e) => {
    e.preventDefault();
    submit();
    ui.composer.focus();
  });
  ui.composer.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      submit();
    }
  });
  ui.composer.addEventListener('input', autosize);

  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return;
    if (!ui.dialog.hidden) {
      if (!ui.nickCancel.hidden) {
        hideNickDialog();
        ui.nickChange.focus();
      }
      return;
    }
    if (embedded) {
      try {
        window.parent.postMessage({ type: 'chatty:close' }, parentOrigin);
      } catch (err) {
        // nothing to close
      }
    }
  });

  // ---------------------------------------------------------------- leaving and coming back

  // sendBeacon cannot set Authorization, so the token goes in the body: {"token": "..."},
  // as text/plain (a type sendBeacon accepts everywhere); the API reads the body as JSON.
  window.addEventListener('pagehide', () => {
    paused = true;
    clearTimeout(pollTimer);
    pollTimer = null;
    clearInterval(heartbeatTimer);
    heartbeatTimer = null;
    if (!auth) return;
    const body = JSON.stringify({ token: auth.token });
    let sent = false;
    try {
      sent = !!(navigator.sendBeacon &&
        navigator.sendBeacon(base + '/leave', new Blob([body], { type: 'text/plain;charset=UTF-8' })));
    } catch (e) {
      sent = false;
    }
    if (!sent) {
      try {
        fetch(base + '/leave', {
          method: 'POST',
          keepalive: true,
          headers: { Authorization: 'Bearer ' + auth.token, 'Content-Type': 'application/json' },
          body,
        }).catch(() => {});
      } catch (e) {
        // The guest expires from the members list after the presence TTL anyway.
      }
    }
  });

  window.addEventListener('pageshow', (e) => {
    if (!e.persisted || !paused) return;
    paused = false;
    if (stopped) return;
    if (synced) {
      startLoops();
      if (nick && !banned) rejoin();
    }
  });

  // ---------------------------------------------------------------- start

  updateEmpty();
  const restored = readJson(session, OUTBOX_KEY);
  if (Array.isArray(restored)) {
    for (const r of restored) {
      if (r && typeof r.text === 'string' && typeof r.client_id === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(r.client_id)) {
        enqueue(r.text, r.client_id);
      }
    }
  }
  if (nick) {
    setStatus('connecting', 'Connecting\u2026');
    rejoin();
  } else {
    setStatus('connecting', '');
    showNickDialog(false);
  }
})();
