// Reading the room: three transports that bring its events and members (an event stream from
// the edge, held polls, polls every 2 s) and `reader`, which picks one and falls back.

const POLL_MS = 2000;
const MAX_PAGES_PER_TICK = 50;
// A held poll asks the edge to keep it this long while nothing moves (the edge caps it at 30).
const HOLD_WAIT_S = 25;
// The reconnect delay of a stream until the stream names its own (`retry:`).
const STREAM_RETRY_MS = 2000;
// A stream whose first byte has not come this long after it was asked for is held back on the
// way (a buffering proxy); after STREAM_SILENT_LIMIT of those in a row, held polls instead.
const STREAM_FIRST_BYTE_MS = 10000;
const STREAM_SILENT_LIMIT = 2;
// The edge sends a keepalive every 15 s: a stream quiet this long is dead.
const STREAM_IDLE_MS = 45000;
// Answers in a row that were not a stream (a full edge or an API node reached directly answer
// a JSON page instead) before held polls, which find out whether anything holds them.
const STREAM_PAGE_LIMIT = 3;
// A stream line longer than this is not from the edge: the stream is dropped.
const STREAM_MAX_LINE = 1 << 20;
// A held poll not answered this long after its wait is lost on the way: it is asked again.
const HOLD_LOST_MS = (HOLD_WAIT_S + 15) * 1000;
// A stream that ends sooner than this after its first byte did not work: the next waits longer.
const STREAM_SHORT_MS = 5000;
// Bounds of the reconnect delay a stream may ask for.
const STREAM_RETRY_BOUNDS = [250, 60000];
// The edge keeps a guest present this long after its last stream or held poll closed.
const PRESENCE_GRACE_MS = 5000;

// `?transport=` of the frame's address (the widget passes its script tag's data-transport):
// `auto` tries stream, then held polls, then polls; any other one is used alone, whatever
// happens (for tests).
const TRANSPORTS = ['auto', 'stream', 'hold', 'poll'];
const wantedTransport = (() => {
  let t = null;
  try {
    t = new URLSearchParams(location.search).get('transport');
  } catch (e) {
    t = null;
  }
  return TRANSPORTS.indexOf(t) >= 0 ? t : 'auto';
})();

// Whether the edge counts this guest as present through a transport's requests: one carrying
// the guest's token is open, or one closed less than the edge's grace ago.
const presence = () => ({ open: 0, closedAt: 0 });
const opened = (p) => {
  p.open++;
};
const closed = (p) => {
  p.open--;
  p.closedAt = Date.now();
};
const countsAsPresent = (p) => p.open > 0 || Date.now() - p.closedAt < PRESENCE_GRACE_MS;

// ---------------------------------------------------------------- polling

const parseEtag = (etag) => {
  const m = /^(?:W\/)?"r(\d+)\.(\d+)"$/.exec(etag || '');
  return m ? { epoch: m[1], seq: Number(m[2]) } : null;
};

// Brings the messages up to date, page after page. `first` adds options to the first request
// (a held poll's Prefer, Authorization and signal); `first.alive`, when given, says whether
// its answers are still wanted; `first.history` says the events are the room's history (not
// counted as unread, not read out). Resolves to the first answer.
const pollMessages = async (first = {}) => {
  const alive = first.alive || (() => true);
  const live = !first.history;
  let answer = null;
  for (let page = 0; page < MAX_PAGES_PER_TICK; page++) {
    const opts = page === 0 ? Object.assign({}, first) : { signal: first.signal };
    delete opts.history;
    opts.etag = cursor.etag;
    const res = await api('GET', '/messages?after=' + cursor.seq, opts);
    if (!answer) answer = res;
    if (!alive()) return answer;
    if (res.status === 304) return answer;
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
    applyEvents(res.data.events, live);
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
    return answer;
  }
  return answer;
};

// Brings the members list up to date; `first` as for pollMessages. Resolves to the answer.
const pollMembers = async (first = {}) => {
  const alive = first.alive || (() => true);
  const res = await api('GET', '/members', Object.assign({}, first, { etag: cursor.membersEtag }));
  if (!alive() || res.status === 304) return res;
  if (res.status === 200 && res.data && Array.isArray(res.data.members)) {
    renderMembers(res.data.members, res.data.count);
    cursor.membersEtag = res.headers.get('ETag');
    return res;
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
      setStatus('offline', retrying(t('connectionProblem'), delay));
    }
  }
  if (state.phase !== 'stopped' && !state.paused) polling.timer = setTimeout(pollLoop, delay);
};

// Polls without a token: the guest's presence is kept by heartbeats (state.js).
const polling = {
  name: 'poll',
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
  retoken() {},
  present: () => false,
};

// ---------------------------------------------------------------- held polls

// One of the two loops of held polls (`part`: 'messages' or 'members'): a poll with
// If-None-Match and `Prefer: wait`, which the edge answers when the part moves or the wait
// ends; the next goes out at once. A 304 without `Preference-Applied` was not held (an API
// node reached directly, or an edge holding all it may): polls every 2 s instead.
const holdLoop = async (gen, part, signal) => {
  const alive = () => holding.gen === gen && state.phase !== 'stopped' && !state.paused;
  let failures = 0;
  while (alive()) {
    // Aborted when the loop's signal is (stop, a new token) or when the answer is lost.
    const ctl = new AbortController();
    const abort = () => ctl.abort();
    signal.addEventListener('abort', abort);
    const lost = setTimeout(abort, HOLD_LOST_MS);
    const first = {
      auth: true,
      headers: { Prefer: 'wait=' + HOLD_WAIT_S },
      signal: ctl.signal,
      alive,
    };
    const authed = !!me.auth;
    if (authed) opened(holding.presence);
    let res = null;
    let err = null;
    try {
      res = part === 'messages' ? await pollMessages(first) : await pollMembers(first);
    } catch (e) {
      err = e;
    } finally {
      clearTimeout(lost);
      signal.removeEventListener('abort', abort);
      if (authed) closed(holding.presence);
    }
    if (!alive()) return;
    if (err) {
      if (err.res && err.res.status === 404) {
        enter('stopped', err.res);
        return;
      }
      failures++;
      const delay = err.retryAfter || backoff(failures);
      if (failures >= 2 || err.retryAfter) {
        setStatus('offline', retrying(t('connectionProblem'), delay));
      }
      await sleep(delay);
      continue;
    }
    if (failures) {
      failures = 0;
      setStatus('ok', '');
    }
    const held = !!(res && res.headers.get('Preference-Applied'));
    if (res && res.status === 304) holding.unheld = !held;
    if (res && res.status === 304 && !held) {
      if (reader.fallBack(holding)) return;
      // Held polls are all this frame may use: not held, they go out every 2 s.
      await sleep(jitter(POLL_MS));
    }
  }
};

const holding = {
  name: 'hold',
  gen: 0, // bumped by start() and stop(): loops of an older one end
  ctl: null, // aborts the polls in flight
  presence: presence(),
  unheld: false, // the last 304 came at once: nothing holds these polls, nor counts them
  start() {
    holding.stop();
    const gen = holding.gen;
    holding.ctl = new AbortController();
    holdLoop(gen, 'messages', holding.ctl.signal);
    holdLoop(gen, 'members', holding.ctl.signal);
  },
  stop() {
    holding.gen++;
    if (holding.ctl) holding.ctl.abort();
    holding.ctl = null;
  },
  // The guest's token changed (a join): the polls go out again with the new one.
  retoken() {
    if (holding.ctl) holding.start();
  },
  present: () => !holding.unheld && countsAsPresent(holding.presence),
};

// ---------------------------------------------------------------- event stream

// A parser of the event-stream format (text/event-stream, as the HTML standard defines it):
// text in through push(), events out through onEvent({type, data, id}) and reconnect delays
// through onRetry(ms). Lines end with CRLF, LF or CR; `:` starts a comment.
const sseParser = (onEvent, onRetry) => {
  let buf = '';
  let started = false;
  let data = [];
  let type = '';
  let id = '';
  const line = (l) => {
    if (l === '') {
      if (data.length) onEvent({ type: type || 'message', data: data.join('\n'), id });
      data = [];
      type = '';
      return;
    }
    if (l.charCodeAt(0) === 58) return; // ':' a comment, e.g. the keepalive
    const colon = l.indexOf(':');
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? '' : l.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === 'data') data.push(value);
    else if (field === 'event') type = value;
    else if (field === 'id') {
      if (value.indexOf('\0') < 0) id = value;
    } else if (field === 'retry') {
      if (/^\d+$/.test(value)) onRetry(Number(value));
    }
    // Other fields are ignored, as the format says.
  };
  return {
    push(text) {
      if (!started && text) {
        started = true;
        if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      }
      buf += text;
      let start = 0;
      for (let i = 0; i < buf.length; i++) {
        const c = buf.charCodeAt(i);
        if (c !== 10 && c !== 13) continue;
        // A CR at the end of what came so far may be the first half of a CRLF.
        if (c === 13 && i === buf.length - 1) break;
        line(buf.slice(start, i));
        if (c === 13 && buf.charCodeAt(i + 1) === 10) i++;
        start = i + 1;
      }
      buf = buf.slice(start);
      if (buf.length > STREAM_MAX_LINE) throw new Error('stream line too long');
    },
  };
};

// One event of the stream: a log event (the default type, the JSON of one event of a
// MessagesPage) or `members` ({"members": [...]}). Events already applied are skipped.
const onStreamEvent = (ev) => {
  let data;
  try {
    data = JSON.parse(ev.data);
  } catch (e) {
    return;
  }
  if (ev.type === 'members') {
    if (data && Array.isArray(data.members)) {
      renderMembers(data.members, data.count);
      // The members list on screen is newer than any ETag kept for it.
      cursor.membersEtag = null;
    }
    return;
  }
  if (ev.type !== 'message' || !validEvent(data) || data.seq <= cursor.seq) return;
  applyEvents([data], true);
  // The ETag kept for polls names an older version than what is on screen.
  cursor.etag = null;
};

// A JSON page where a stream was asked for (a full edge, or an API node reached directly):
// its events are applied as a poll's would be.
const applyStreamPage = (data) => {
  if (!data || !Array.isArray(data.events)) return false;
  applyEvents(data.events, true);
  const seq = Number(data.seq);
  if (Number.isSafeInteger(seq) && seq > cursor.seq) cursor.seq = seq;
  cursor.etag = null;
  return data.more === true;
};

// One stream: asked for from the last event applied on (Last-Event-ID), read until it ends,
// fails or goes quiet; then the next one is scheduled.
const streamOnce = async (gen) => {
  const alive = () => streaming.gen === gen && state.phase !== 'stopped' && !state.paused;
  const ctl = new AbortController();
  streaming.ctl = ctl;
  const headers = { Accept: 'text/event-stream', 'Last-Event-ID': String(cursor.seq) };
  const authed = !!me.auth;
  if (authed) headers.Authorization = 'Bearer ' + me.auth.token;
  // How it went: 'stream' (a stream that ended or failed a while after its first byte),
  // 'short' (one that ended soon after it), 'silent' (nothing came in time), 'page' (a JSON
  // page), 'failed' (a network error or an error answer, in `res`).
  let outcome = 'failed';
  let res = null;
  let more = false;
  let watchdog = null;
  let quiet = false;
  let since = 0; // when the first byte came
  const arm = (ms) => {
    clearTimeout(watchdog);
    watchdog = setTimeout(() => {
      quiet = true;
      ctl.abort();
    }, ms);
  };
  // The edge counts the guest as present only while it streams to it.
  let counted = false;
  try {
    arm(STREAM_FIRST_BYTE_MS);
    const answer = await fetch(base + '/messages?after=' + cursor.seq, {
      headers,
      cache: 'no-store',
      credentials: 'same-origin',
      signal: ctl.signal,
    });
    const type = answer.headers.get('Content-Type') || '';
    if (answer.status === 200 && /^text\/event-stream\b/i.test(type) && answer.body) {
      if (authed) {
        counted = true;
        opened(streaming.presence);
      }
      const body = answer.body.getReader();
      const decoder = new TextDecoder();
      const parser = sseParser(onStreamEvent, (ms) => {
        streaming.retry = Math.min(STREAM_RETRY_BOUNDS[1], Math.max(STREAM_RETRY_BOUNDS[0], ms));
      });
      let got = false;
      for (;;) {
        const chunk = await body.read();
        if (chunk.done || !alive()) break;
        if (!got) {
          got = true;
          since = Date.now();
          outcome = 'stream';
          if (streaming.failures >= 2) setStatus('ok', '');
          streaming.silent = 0;
          streaming.pages = 0;
        }
        arm(STREAM_IDLE_MS);
        parser.push(decoder.decode(chunk.value, { stream: true }));
      }
      if (!got) outcome = quiet ? 'silent' : 'failed';
      else if (Date.now() - since < STREAM_SHORT_MS) outcome = 'short';
    } else {
      let data = null;
      try {
        const text = await answer.text();
        data = text ? JSON.parse(text) : null;
      } catch (e) {
        data = null;
      }
      res = { status: answer.status, data, headers: answer.headers };
      if (answer.status === 200 && data && Array.isArray(data.events)) {
        outcome = 'page';
        more = applyStreamPage(data);
      }
    }
  } catch (e) {
    // A network error, an abort (stop, the watchdog) or a stream that was not one.
    if (outcome !== 'stream') outcome = quiet ? 'silent' : 'failed';
    else if (Date.now() - since < STREAM_SHORT_MS) outcome = 'short';
  } finally {
    clearTimeout(watchdog);
    ctl.abort();
    if (streaming.ctl === ctl) streaming.ctl = null;
    if (counted) closed(streaming.presence);
  }
  if (!alive()) return;
  if (res && res.status === 404) {
    enter('stopped', res);
    return;
  }
  let delay = jitter(streaming.retry);
  if (outcome === 'stream') {
    // It worked, then ended: back after `retry`, as the stream said.
    streaming.failures = 1;
  } else if (outcome === 'page') {
    streaming.failures = 0;
    if (++streaming.pages >= STREAM_PAGE_LIMIT && reader.fallBack(streaming)) return;
    if (more) delay = 0;
  } else {
    if (outcome === 'silent' && ++streaming.silent >= STREAM_SILENT_LIMIT && reader.fallBack(streaming)) {
      return;
    }
    streaming.failures++;
    const wait = res && res.status !== 200 ? retryAfterMs(res) : null;
    if (wait || streaming.failures > 1) delay = Math.max(delay, wait || backoff(streaming.failures));
    if (streaming.failures >= 2 || wait) {
      setStatus('offline', retrying(t('connectionProblem'), delay));
    }
  }
  streaming.timer = setTimeout(() => {
    streaming.timer = null;
    if (streaming.gen === gen) streamOnce(gen);
  }, delay);
};

const streaming = {
  name: 'stream',
  gen: 0, // bumped by start() and stop(): a stream of an older one ends
  ctl: null, // aborts the stream open now
  timer: null, // the next stream
  retry: STREAM_RETRY_MS, // the reconnect delay the stream asked for
  failures: 0, // streams in a row that failed or were short (1: the last one worked, then ended)
  silent: 0, // streams in a row that stayed silent
  pages: 0, // answers in a row that were JSON pages
  presence: presence(),
  start() {
    streaming.stop();
    streamOnce(streaming.gen);
  },
  stop() {
    streaming.gen++;
    clearTimeout(streaming.timer);
    streaming.timer = null;
    if (streaming.ctl) streaming.ctl.abort();
    streaming.ctl = null;
  },
  // The guest's token changed (a join): the stream is asked for again with the new one.
  retoken() {
    if (streaming.ctl || streaming.timer) streaming.start();
  },
  present: () => countsAsPresent(streaming.presence),
};

// ---------------------------------------------------------------- reading the room

// How the room's events and members reach the frame, chosen here and only here. Each
// transport has start(), stop(), retoken() and present(); startLoops() starts the reader,
// enter('stopped') and pause() stop it, a join with a new token calls retoken(), and each
// transport moves `cursor` and calls applyEvents() and renderMembers().
const TRANSPORT_BY_NAME = { stream: streaming, hold: holding, poll: polling };
const reader = {
  current: wantedTransport === 'auto' ? streaming : TRANSPORT_BY_NAME[wantedTransport],
  start() {
    ui.app.dataset.transport = reader.current.name;
    reader.current.start();
  },
  stop() {
    reader.current.stop();
  },
  retoken() {
    if (!state.paused && state.phase !== 'stopped') reader.current.retoken();
  },
  // In `auto`, `from` gave up: the next transport takes over. Says whether it did (a
  // transport that was asked for by name stays).
  fallBack(from) {
    if (wantedTransport !== 'auto' || reader.current !== from || from === polling) return false;
    from.stop();
    reader.current = from === streaming ? holding : polling;
    reader.start();
    // Presence is the heartbeats' again: the first goes out now.
    if (reader.current === polling) heartbeat();
    return true;
  },
  // The edge reports this guest as present through the stream or the held polls: the frame
  // sends no heartbeats meanwhile.
  present: () => reader.current.present(),
};

// ---------------------------------------------------------------- the room at once

// Events of the history shown before the first transport takes over: one page.
const HISTORY_EVENTS = 100;

// Shows the room without a token: a poll that accepts any version (`If-None-Match: *`,
// answered 304 with the room's current ETag, from the edge's memory when it knows the room)
// says where the log ends; the page of events before that end is the history, and the members
// come with it. Then the reader takes over from there. Retried until it works or the room
// turns out not to exist.
const openRoom = async () => {
  const offline = (text) => setStatus('offline', text);
  let attempt = 0;
  while (state.phase === 'opening') {
    try {
      const probe = await api('GET', '/messages?after=0', { etag: '*' });
      if (probe.status !== 304 && probe.status !== 200) throw httpError(probe);
      const end = parseEtag(probe.headers.get('ETag'));
      cursor.seq = end ? Math.max(0, end.seq - HISTORY_EVENTS) : 0;
      cursor.etag = null;
      cursor.epoch = end ? end.epoch : null;
      ui.messages.setAttribute('aria-busy', 'true');
      try {
        await Promise.all([
          pollMessages({ history: true }),
          pollMembers().catch(() => {
            // The reader brings the members list soon anyway.
          }),
        ]);
      } finally {
        ui.messages.removeAttribute('aria-busy');
      }
      if (state.phase !== 'opening') return;
      scrollToBottom();
      setStatus('ok', '');
      enter('reading');
      return;
    } catch (e) {
      if (e.res && e.res.status === 404) {
        enter('stopped', e.res);
        return;
      }
      clearHistory();
      await waitToRetry(++attempt, e.res || null, offline);
    }
  }
};
