// The frame's state: the phase and enter(), who this tab is, its cursor, what it keeps in storage.

const HEARTBEAT_MS = 10000;
const TIME_REFRESH_MS = 30000;

// ---------------------------------------------------------------- storage

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

// ---------------------------------------------------------------- state

// The frame's life is one phase, and enter() is the only place that changes it:
//   opening  nothing on screen yet: the room's latest events are on their way (openRoom())
//   reading  the room is on screen and read without a token: the visitor has not joined yet
//            (a nickname is asked when they first send; a returning one joins at once)
//   live     joined: messages go out, and so do heartbeats unless the edge reports the guest
//            as present (reader.present())
//   banned   the API refused this guest (403): the room is still read, nothing goes out
//   stopped  nothing more to do: the room or site does not exist (404), or a ban came before
//            anything was on screen
// Phases only move forward, in this order; steps may be skipped.
const PHASES = ['opening', 'reading', 'live', 'banned', 'stopped'];
const state = {
  phase: 'opening',
  // Facts any phase can have alongside it:
  paused: false, // hidden by pagehide (possibly into the back/forward cache): pause(), resume()
  sending: false, // processOutbox is delivering the outbox
  // The widget's panel shows this frame (setOpen()). The widget creates the frame when the
  // chat is first opened, so it starts open; the widget says so again on load.
  open: true,
  unread: 0, // messages that arrived while the panel was closed
  opened: null, // openRoom()'s promise: a join waits for the room to be on screen
};
// The visitor may still write: before the join, messages wait in the outbox until it.
const canSend = () => state.phase === 'opening' || state.phase === 'reading' || state.phase === 'live';

// Who this tab is in the room.
const me = {
  auth: null, // {token, member: {id, nick}, expires_ms}
  nick: local.get(NICK_KEY) || '',
  ids: new Set(), // member ids this tab has been (a re-join may give a new one)
  join: null, // the join under way (one at a time): joinOnce()
  userToken: null, // the host site's user token, until a join has used it
  moderator: false, // the join said this member moderates the room (moderation.js)
  resumeToken: null, // the guest token of this tab's visit before a reload, for the first join
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
// Joins as the same member again while that token is valid (an expired one makes a new member).
if (saved && typeof saved.token === 'string' && Number(saved.expires_ms) > Date.now() + 5000) {
  me.resumeToken = saved.token;
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
  if (next === 'reading') {
    state.phase = 'reading';
    startLoops();
  } else if (next === 'live') {
    // The room is read already (a join waits for openRoom()): the reader keeps its cursor, so
    // no deletion between its last page and the join is skipped.
    state.phase = 'live';
    if (from === 'opening') startLoops();
  } else if (next === 'banned') {
    // Banned before anything was on screen: there is nothing to read either.
    state.phase = from === 'opening' ? 'stopped' : 'banned';
    showStatus('banned', errorCode(res) === 'banned' ? t('bannedRead') : errorMessage(res));
    setComposer(false);
    stopHeartbeats();
    for (const item of outbox.items) if (!item.done) markFailed(item, t('notSent'), false);
    outbox.items.length = 0;
    saveOutbox();
    if (state.phase === 'stopped') reader.stop();
    showMe();
  } else if (next === 'stopped') {
    state.phase = 'stopped';
    // A ban's explanation stays on the status line.
    if (from !== 'banned') showStatus('error', errorMessage(res));
    reader.stop();
    stopHeartbeats();
    clearTimeout(timers.refresh);
    setComposer(false);
    showMe();
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
  if (state.phase === 'reading' || state.phase === 'live' || state.phase === 'banned') startLoops();
  if (state.phase === 'live' && me.nick) rejoin();
};

// Starts (again) what runs while the room is on screen: reading it, heartbeats (not for a
// banned guest; each one is skipped while the reader keeps the guest present) and the refresh
// of relative times.
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

// ---------------------------------------------------------------- heartbeats

// Only on plain polls: while the frame holds a stream or held polls with the guest's token,
// the edge reports the guest as present and a heartbeat would say nothing new.
const heartbeat = async () => {
  if (!me.auth || !canSend() || state.paused || reader.present()) return;
  try {
    const res = await api('POST', '/heartbeat', { auth: true });
    if (res.status === 401) rejoin();
    else if (res.status === 403 && errorCode(res) !== 'timed_out') enter('banned', res);
  } catch (e) {
    // The next heartbeat tries again; presence lasts several of them.
  }
};
