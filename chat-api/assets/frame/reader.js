// Reading the room: `reader`, the one transport that brings its events and members (polling).

const POLL_MS = 2000;
const MAX_PAGES_PER_TICK = 50;

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
