// Joining the room: the nickname dialog, join and rejoin, the token's refresh, the first sync.

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
  const before = me.auth ? me.auth.token : null;
  me.auth = {
    token: data.token,
    member: { id: String(data.member.id), nick: String(data.member.nick) },
    expires_ms: Date.now() + (Number(data.token_ttl_secs) || 0) * 1000,
  };
  me.ids.add(me.auth.member.id);
  saveSession();
  scheduleRefresh(data.token_ttl_secs);
  if (Array.isArray(data.members)) {
    renderMembers(data.members, data.members_count);
    cursor.membersEtag = typeof data.members_etag === 'string' ? data.members_etag : null;
  }
  enter('live', data);
  // A later join (token refresh, 401, nickname): a stream or held polls go out again with the
  // new token, so the edge reports this guest as present.
  if (before && before !== me.auth.token) reader.retoken();
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
