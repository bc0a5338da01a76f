/*! Chatty chat frame: the chat UI served at /v1/sites/{site}/rooms/{room}/frame, usually
 * inside the iframe that widget.js adds to a host page, same-origin with the API.
 *
 * Flow: nickname (remembered per site in localStorage) -> POST join -> render -> poll
 * messages every ~2 s with If-None-Match (304 = nothing new) and members every other tick,
 * heartbeat every 10 s, leave by sendBeacon on pagehide. Sends go through an outbox kept in
 * sessionStorage; each message keeps one client_id for all its retries, so a retry never
 * duplicates it. All user text is rendered with textContent, never as HTML.
 *
 * The page's life is one phase (joining, live, banned, stopped) changed only by enter(), plus
 * a few facts any phase can have (paused, a send in flight, the panel open); see "state".
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
  const setComposer = (enabled) => {
    ui.composer.disabled = !enabled;
    ui.send.disabled = !enabled;
  };

  // ---------------------------------------------------------------- small helpers

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const jitter = (ms) => Math.round(ms * (0.8 + Math.random() * 0.4));
  const backoff = (attempt) =>
    jitter(Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, Math.max(0, attempt - 1))));
  const secs = (ms) => Math.max(1, Math.round(ms / 1000)) + ' s';
  const retrying = (why, ms) => why + ' Retrying in ' + secs(ms) + '\u2026';

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
    setComposer(false);
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

  // The frame's life is one phase, and enter() is the only place that changes it:
  //   joining  nothing on screen yet: the first join is under way, or the nickname dialog waits
  //   live     the room's history is on screen: the room is read, heartbeats and messages go out
  //   banned   the API refused this guest (403): the room is still read, nothing goes out
  //   stopped  nothing more to do: the room or site does not exist (404), or the first join
  //            was refused by a ban (with nothing on screen there is nothing to read either)
  // Phases only move forward, in this order; steps may be skipped.
  const PHASES = ['joining', 'live', 'banned', 'stopped'];
  const state = {
    phase: 'joining',
    // Facts any phase can have alongside it:
    paused: false, // hidden by pagehide (possibly into the back/forward cache): pause(), resume()
    sending: false, // processOutbox is delivering the outbox
    // The widget's panel shows this frame (setOpen()). The widget creates the frame when the
    // chat is first opened, so it starts open; the widget says so again on load.
    open: true,
    unread: 0, // messages that arrived while the panel was closed
  };
  // The guest may still write: while joining, messages wait in the outbox until the join.
  const canSend = () => state.phase === 'joining' || state.phase === 'live';

  // Who this tab is in the room.
  const me = {
    auth: null, // {token, member: {id, nick}, expires_ms}
    nick: local.get(NICK_KEY) || '',
    ids: new Set(), // member ids this tab has been (a re-join may give a new one)
    join: null, // the join under way (one at a time): joinOnce()
  };

  // Where the frame is in the room: only join and poll answers move it.
  const cursor = {
    seq: 0, // the last event applied
    etag: null, // If-None-Match for the next messages poll, null for none
    epoch: null, // the history's epoch from the last ETag: another one means a reset
    membersEtag: null, // If-None-Match for the next members poll
  };

  // The messages on screen.
  const shown = {
    bySeq: new Map(), // seq -> li
    deleted: new Set(), // seqs of deleted messages
  };

  // Messages on their way out, oldest first: {client_id, text, li, done, failed}; byCid holds
  // those still waiting for their event.
  const outbox = { items: [], byCid: new Map() };

  const timers = { heartbeat: null, refresh: null, times: null };

  const saved = readJson(session, SESSION_KEY);
  if (saved && Array.isArray(saved.my_ids)) {
    for (const id of saved.my_ids) if (typeof id === 'string') me.ids.add(id);
  }

  const saveSession = () => {
    if (!me.auth) return;
    session.set(
      SESSION_KEY,
      JSON.stringify({
        token: me.auth.token,
        member: me.auth.member,
        expires_ms: me.auth.expires_ms,
        my_ids: Array.from(me.ids).slice(-20),
      }),
    );
  };

  const saveOutbox = () => {
    const items = outbox.items.filter((i) => !i.done && !i.failed);
    session.set(
      OUTBOX_KEY,
      items.length ? JSON.stringify(items.map((i) => ({ client_id: i.client_id, text: i.text }))) : null,
    );
  };

  // ---------------------------------------------------------------- the frame's life

  // Moves the frame to a later phase and does what that phase starts and ends; a phase the
  // frame is in or past already is ignored. `res` is what moved it: the join's answer data for
  // live, the refusing answer for banned and stopped.
  const enter = (next, res) => {
    const from = state.phase;
    if (PHASES.indexOf(next) <= PHASES.indexOf(from)) return;
    if (next === 'live') {
      // The first sync takes the history and the cursor. Later joins (token refresh, 401,
      // nickname change) keep the poll cursor so no deletion in between is skipped.
      showHistory(res);
      state.phase = 'live';
      startLoops();
    } else if (next === 'banned') {
      // Banned by the first join: with nothing on screen there is nothing to read either.
      state.phase = from === 'joining' ? 'stopped' : 'banned';
      showStatus(
        'banned',
        errorCode(res) === 'banned'
          ? errorMessage(res) + ' You can still read this room, but you can no longer send messages.'
          : errorMessage(res),
      );
      setComposer(false);
      stopHeartbeats();
      for (const item of outbox.items) if (!item.done) markFailed(item, 'Not sent.', false);
      outbox.items.length = 0;
      saveOutbox();
    } else if (next === 'stopped') {
      state.phase = 'stopped';
      // A ban's explanation stays on the status line.
      if (from !== 'banned') showStatus('error', errorMessage(res));
      reader.stop();
      stopHeartbeats();
      clearTimeout(timers.refresh);
      setComposer(false);
    }
  };

  // pagehide: the page may be kept in the back/forward cache; nothing runs while it is.
  const pause = () => {
    state.paused = true;
    reader.stop();
    stopHeartbeats();
  };

  // pageshow from the back/forward cache: what ran before runs again, and a guest who may still
  // send joins again (the leave sent on pagehide took it out of the room).
  const resume = () => {
    state.paused = false;
    if (state.phase === 'live' || state.phase === 'banned') startLoops();
    if (state.phase === 'live' && me.nick) rejoin();
  };

  // Starts (again) what runs while the room is on screen: reading it, heartbeats (not for a
  // banned guest) and the refresh of relative times.
  const startLoops = () => {
    reader.start();
    clearInterval(timers.heartbeat);
    if (state.phase !== 'banned') timers.heartbeat = setInterval(heartbeat, HEARTBEAT_MS);
    if (!timers.times) timers.times = setInterval(refreshTimes, TIME_REFRESH_MS);
  };

  const stopHeartbeats = () => {
    clearInterval(timers.heartbeat);
    timers.heartbeat = null;
  };

  // ---------------------------------------------------------------- HTTP

  const api = async (method, path, opts = {}) => {
    const headers = {};
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    const token = opts.token || (opts.auth && me.auth ? me.auth.token : null);
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

  const showStatus = (kind, text) => {
    ui.status.dataset.state = kind;
    ui.status.textContent = text || '';
  };

  // The ordinary states (connecting, ok, offline); the explanation of a ban or a stop, which
  // enter() shows, stays.
  const setStatus = (kind, text) => {
    if (canSend()) showStatus(kind, text);
  };

  // After a failed try (a network error, or `res`, a 429 or 5xx answer): says through `say`
  // when the next one goes out and waits until then. `attempt` counts the failed tries.
  const waitToRetry = async (attempt, res, say) => {
    const wait = (res && retryAfterMs(res)) || backoff(attempt);
    say(retrying(res ? errorMessage(res) : 'Cannot reach the chat.', wait));
    await sleep(wait);
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

  // ---------------------------------------------------------------- rendering: members

  const renderMembers = (list) => {
    const members = list
      .filter((m) => m && typeof m.id === 'string' && typeof m.nick === 'string')
      .sort((a, b) => a.nick.localeCompare(b.nick) || a.id.localeCompare(b.id));
    const frag = document.createDocumentFragment();
    for (const m of members) {
      const li = el('li', 'member ' + hueClass(m.id));
      li.dataset.id = m.id;
      li.appendChild(el('span', 'member-nick', m.nick));
      if (me.auth && m.id === me.auth.member.id) {
        li.classList.add('me');
        li.appendChild(el('span', 'member-you', ' (you)'));
      }
      frag.appendChild(li);
    }
    ui.members.replaceChildren(frag);
    ui.memberCount.textContent = String(members.length);
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
    ui.nickInput.value = me.nick;
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
    if (!me.auth) return;
    ui.myNick.textContent = me.auth.member.nick;
    ui.nickChange.hidden = false;
  };

  const scheduleRefresh = (ttlSecs) => {
    clearTimeout(timers.refresh);
    const ttl = Number(ttlSecs);
    if (!Number.isFinite(ttl) || ttl <= 0) return;
    const ms = Math.max(30, ttl * 0.8) * 1000;
    timers.refresh = setTimeout(() => {
      rejoin();
    }, Math.min(ms, 2147483000));
  };

  // The first join's history and cursor (see enter('live')).
  const showHistory = (data) => {
    ui.messages.setAttribute('aria-busy', 'true');
    clearHistory();
    applyEvents(Array.isArray(data.messages) ? data.messages : [], false);
    cursor.seq = Math.max(cursor.seq, Number(data.seq) || 0);
    cursor.etag = typeof data.etag === 'string' ? data.etag : null;
    const parsed = parseEtag(cursor.etag);
    cursor.epoch = parsed ? parsed.epoch : null;
    ui.messages.removeAttribute('aria-busy');
    scrollToBottom();
  };

  const applyJoin = (data) => {
    me.auth = {
      token: data.token,
      member: { id: String(data.member.id), nick: String(data.member.nick) },
      expires_ms: Date.now() + (Number(data.token_ttl_secs) || 0) * 1000,
    };
    me.ids.add(me.auth.member.id);
    saveSession();
    scheduleRefresh(data.token_ttl_secs);
    if (Array.isArray(data.members)) {
      renderMembers(data.members);
      cursor.membersEtag = typeof data.members_etag === 'string' ? data.members_etag : null;
    }
    enter('live', data);
    showMe();
    setStatus('ok', '');
    if (canSend()) setComposer(true);
    processOutbox();
  };

  // One join at a time. Resolves to {ok: true}, {ok: false, message} (e.g. a refused nick)
  // or {ok: false, fatal: true}; network errors, 5xx, 429 and 503 are retried with back-off.
  const join = async (wanted) => {
    const offline = (text) => setStatus('offline', text);
    let attempt = 0;
    for (;;) {
      if (!canSend()) return { ok: false, fatal: true };
      let res;
      try {
        res = await api('POST', '/join', { body: { nick: wanted } });
      } catch (e) {
        await waitToRetry(++attempt, null, offline);
        continue;
      }
      if (res.status === 200 && res.data && typeof res.data.token === 'string' && res.data.member) {
        applyJoin(res.data);
        return { ok: true };
      }
      if (transient(res)) {
        await waitToRetry(++attempt, res, offline);
        continue;
      }
      if (res.status === 403 || res.status === 404) {
        enter(res.status === 403 ? 'banned' : 'stopped', res);
        return { ok: false, fatal: true };
      }
      return { ok: false, message: errorMessage(res) };
    }
  };

  const joinOnce = (wanted) => {
    if (!me.join) {
      me.join = join(wanted).finally(() => {
        me.join = null;
      });
    }
    return me.join;
  };

  // Gets a fresh token with the current nickname; asks for a new nickname if it is refused.
  const rejoin = async () => {
    if (!me.nick) {
      showNickDialog(false);
      return { ok: false };
    }
    const result = await joinOnce(me.nick);
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
    if (me.join) await me.join;
    const previous = me.auth;
    const result = await joinOnce(wanted);
    ui.nickSubmit.disabled = false;
    if (result.ok) {
      me.nick = wanted;
      local.set(NICK_KEY, wanted);
      hideNickDialog();
      if (previous && previous.token !== me.auth.token) {
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
  const cancelNickDialog = () => {
    hideNickDialog();
    ui.nickChange.focus();
  };
  ui.nickCancel.addEventListener('click', cancelNickDialog);
  ui.nickChange.addEventListener('click', () => showNickDialog(true));

  // ---------------------------------------------------------------- polling

  const parseEtag = (etag) => {
    const m = /^(?:W\/)?"r(\d+)\.(\d+)"$/.exec(etag || '');
    return m ? { epoch: m[1], seq: Number(m[2]) } : null;
  };

  const pollMessages = async () => {
    for (let page = 0; page < MAX_PAGES_PER_TICK; page++) {
      const res = await api('GET', '/messages?after=' + cursor.seq, { etag: cursor.etag });
      if (res.status === 304) return;
      if (res.status !== 200 || !res.data || !Array.isArray(res.data.events)) {
        throw httpError(res);
      }
      const etag = res.headers.get('ETag');
      const parsed = parseEtag(etag);
      if (parsed && cursor.epoch !== null && parsed.epoch !== cursor.epoch && cursor.epoch !== '0' && cursor.seq > 0) {
        // The room's history was reset: start again from the beginning.
        cursor.epoch = parsed.epoch;
        clearHistory();
        continue;
      }
      if (parsed) cursor.epoch = parsed.epoch;
      applyEvents(res.data.events, true);
      const seq = Number(res.data.seq);
      if (Number.isSafeInteger(seq) && seq > cursor.seq) cursor.seq = seq;
      if (res.data.more === true) {
        // The ETag names the room's current version, which this page does not reach yet.
        cursor.etag = null;
        continue;
      }
      if (parsed && parsed.seq < cursor.seq) {
        clearHistory();
        continue;
      }
      // Only keep an ETag that matches what is on screen, so a 304 can never hide an event.
      cursor.etag = etag && (!parsed || parsed.seq === cursor.seq) ? etag : null;
      return;
    }
  };

  const pollMembers = async () => {
    const res = await api('GET', '/members', { etag: cursor.membersEtag });
    if (res.status === 304) return;
    if (res.status === 200 && res.data && Array.isArray(res.data.members)) {
      renderMembers(res.data.members);
      cursor.membersEtag = res.headers.get('ETag');
      return;
    }
    throw httpError(res);
  };

  // One turn: new messages every time, members every other time; then the next turn is
  // scheduled, later after failures.
  const pollLoop = async () => {
    polling.timer = null;
    if (state.phase === 'stopped' || state.paused) return;
    let delay = jitter(POLL_MS) * (document.hidden ? 3 : 1);
    try {
      await pollMessages();
      polling.tick++;
      if (polling.tick % 2 === 0) {
        try {
          await pollMembers();
        } catch (e) {
          // The members list is refreshed again on the next turn.
        }
      }
      if (polling.failures) {
        polling.failures = 0;
        setStatus('ok', '');
      }
    } catch (e) {
      if (e.res && e.res.status === 404) {
        enter('stopped', e.res);
        return;
      }
      polling.failures++;
      delay = e.retryAfter || backoff(polling.failures);
      if (polling.failures >= 2 || e.retryAfter) {
        setStatus('offline', retrying('Connection problem.', delay));
      }
    }
    if (state.phase !== 'stopped' && !state.paused) polling.timer = setTimeout(pollLoop, delay);
  };

  const polling = {
    timer: null, // the next turn
    failures: 0, // failed turns in a row
    tick: 0, // turns so far
    start() {
      clearTimeout(polling.timer);
      polling.timer = setTimeout(pollLoop, jitter(POLL_MS));
    },
    stop() {
      clearTimeout(polling.timer);
      polling.timer = null;
    },
  };

  // ---------------------------------------------------------------- reading the room

  // How the room's events and members reach the frame, chosen here and only here: polling with
  // If-None-Match is the one transport today. Another (a held poll, a stream) is an object with
  // the same start() and stop(); startLoops() starts the reader, enter('stopped') and pause()
  // stop it, and it moves `cursor` and calls applyEvents() and renderMembers() as polling does.
  const reader = polling;

  // ---------------------------------------------------------------- heartbeats

  const heartbeat = async () => {
    if (!me.auth || !canSend() || state.paused) return;
    try {
      const res = await api('POST', '/heartbeat', { auth: true });
      if (res.status === 401) rejoin();
      else if (res.status === 403) enter('banned', res);
    } catch (e) {
      // The next heartbeat tries again; presence lasts several of them.
    }
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
    meta.appendChild(el('span', 'nick ' + hueClass(me.auth ? me.auth.member.id : me.nick), me.auth ? me.auth.member.nick : me.nick));
    meta.appendChild(document.createTextNode(' '));
    meta.appendChild(el('span', 'time', 'sending\u2026'));
    li.appendChild(meta);
    li.appendChild(el('p', 'text', item.text));
    return li;
  };

  const clearNote = (item) => {
    const note = item.li.querySelector('.note');
    if (note) note.remove();
  };

  const markFailed = (item, reason, canRetry) => {
    item.failed = true;
    outbox.byCid.delete(item.client_id);
    item.li.classList.add('failed');
    const actions = [];
    if (canRetry && canSend()) {
      actions.push([
        'Retry',
        'link retry',
        () => {
          item.failed = false;
          item.li.classList.remove('failed');
          clearNote(item);
          outbox.byCid.set(item.client_id, item);
          outbox.items.push(item);
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
    const say = (text) => itemNote(item, text);
    // Joins again (for a token); if that fails, so does this item.
    const rejoined = async () => {
      const r = await rejoin();
      if (!r.ok) markFailed(item, 'Not sent: you are not in the room.', true);
      return r.ok;
    };
    let attempt = 0;
    let unauthorized = 0;
    for (;;) {
      if (item.done) return;
      if (!canSend()) {
        markFailed(item, 'Not sent.', false);
        return;
      }
      if (!me.auth && !(await rejoined())) return;
      let res;
      try {
        res = await api('POST', '/messages', {
          auth: true,
          body: { text: item.text, client_id: item.client_id },
        });
      } catch (e) {
        await waitToRetry(++attempt, null, say);
        continue;
      }
      if ((res.status === 201 || res.status === 200) && res.data && validEvent(res.data)) {
        clearNote(item);
        const ev = toMessage(res.data);
        ev.client_id = item.client_id;
        confirmItem(item, ev);
        updateEmpty();
        return;
      }
      if (res.status === 401) {
        unauthorized++;
        if (unauthorized > 2) await sleep(backoff(unauthorized));
        if (!(await rejoined())) return;
        continue;
      }
      if (res.status === 403) {
        enter('banned', res);
        return;
      }
      if (transient(res)) {
        await waitToRetry(++attempt, res, say);
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
    if (state.sending || !me.auth || !canSend()) return;
    state.sending = true;
    try {
      while (outbox.items.length && canSend()) {
        const item = outbox.items[0];
        await deliver(item);
        const i = outbox.items.indexOf(item);
        if (i >= 0) outbox.items.splice(i, 1);
        saveOutbox();
      }
    } finally {
      state.sending = false;
    }
  };

  const enqueue = (text, clientId) => {
    const item = { client_id: clientId || newClientId(), text, li: null, done: false, failed: false };
    item.li = pendingLi(item);
    ui.messages.appendChild(item.li);
    outbox.byCid.set(item.client_id, item);
    outbox.items.push(item);
    saveOutbox();
    updateEmpty();
    return item;
  };

  const submit = () => {
    if (!canSend()) return;
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
      if (!ui.nickCancel.hidden) cancelNickDialog();
      return;
    }
    if (embedded) askToClose();
  });

  // ---------------------------------------------------------------- leaving and coming back

  // sendBeacon cannot set Authorization, so the token goes in the body: {"token": "..."},
  // as text/plain (a type sendBeacon accepts everywhere); the API reads the body as JSON.
  window.addEventListener('pagehide', () => {
    pause();
    if (!me.auth) return;
    const body = JSON.stringify({ token: me.auth.token });
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
          headers: { Authorization: 'Bearer ' + me.auth.token, 'Content-Type': 'application/json' },
          body,
        }).catch(() => {});
      } catch (e) {
        // The guest expires from the members list after the presence TTL anyway.
      }
    }
  });

  window.addEventListener('pageshow', (e) => {
    if (e.persisted && state.paused) resume();
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
  if (me.nick) {
    setStatus('connecting', 'Connecting\u2026');
    rejoin();
  } else {
    setStatus('connecting', '');
    showNickDialog(false);
  }
})();
