// Joining the room: the nickname dialog, join and rejoin, the token's refresh.

// ---------------------------------------------------------------- the nickname dialog

// Why the dialog is open: 'send' (the visitor sent a first message, which waits in the
// composer), 'join' (the header's join button), 'change' (a joined guest changes nickname) or
// 'refused' (the remembered nickname was refused). It can always be cancelled: the room stays
// on screen behind it.
const dialog = { mode: null, returnTo: null };

const showNickDialog = (mode) => {
  dialog.mode = mode;
  dialog.returnTo = mode === 'send' ? ui.composer : ui.nickChange;
  ui.nickInput.value = me.nick;
  ui.nickError.textContent = '';
  ui.nickCancel.hidden = false;
  ui.nickSubmit.disabled = false;
  ui.nickSubmit.textContent = t(mode === 'send' ? 'joinSend' : mode === 'change' ? 'change' : 'joinChat');
  ui.nickDesc.textContent = t(mode === 'send' ? 'nickDescSend' : 'nickDesc');
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
  dialog.mode = null;
};
const cancelNickDialog = () => {
  const back = dialog.returnTo;
  hideNickDialog();
  if (back && !back.hidden && !back.disabled) back.focus();
};

// The header's button: join (before the visitor has a token), else the nickname to change.
const showMe = () => {
  const b = ui.nickChange;
  b.hidden = !canSend();
  if (me.auth) {
    // Seen: the nickname; heard: the whole sentence around it (in the language's word order).
    const [before, after] = t('changeNick').split('{nick}');
    b.replaceChildren(
      el('span', 'visually-hidden', before || ''),
      el('span', 'my-nick', me.auth.member.nick),
      el('span', 'visually-hidden', after || ''),
    );
    b.removeAttribute('title');
    // A signed-in user's name is the site's to change.
    b.disabled = isVerified(me.auth.member.id);
  } else {
    b.textContent = t('joinButton');
    b.title = t('joinButtonLabel');
  }
  ui.hint.textContent = t(me.auth || me.nick ? 'hint' : 'hintGuest');
};

// ---------------------------------------------------------------- join

// Whether a member id is a user the host site signed in (only the API gives out `u_` ids).
const isVerified = (id) => typeof id === 'string' && id.startsWith('u_');

// A user token handed over by the host page (see widget.js): joins as that user at once, with
// the site's name, and the nickname is never asked.
const signIn = async (token) => {
  if (typeof token !== 'string' || !token) return;
  if (me.join) await me.join;
  me.userToken = token;
  if (!ui.dialog.hidden) hideNickDialog();
  const previous = me.auth;
  const result = await joinOnce(null);
  if (result.ok) {
    me.nick = me.auth.member.nick;
    showMe();
    // The guest this tab was until now leaves the room.
    if (previous && previous.member.id !== me.auth.member.id) {
      api('POST', '/leave', { token: previous.token }).catch(() => {});
    }
  }
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
  // Before the members are drawn: a moderator's list has its controls.
  setModerator(data.moderator === true);
  if (Array.isArray(data.members)) {
    renderMembers(data.members, data.members_count);
    cursor.membersEtag = typeof data.members_etag === 'string' ? data.members_etag : null;
  }
  enter('live', data);
  // A stream or held polls go out again with the new token, so the edge reports this guest
  // as present (the first join too: until then they carried none).
  if (before !== me.auth.token) reader.retoken();
  showMe();
  if (!cooldown.until) setStatus('ok', '');
  if (canSend()) setComposer(true);
  processOutbox();
};

// One join at a time, once the room is on screen. Resolves to {ok: true}, {ok: false,
// message} (e.g. a refused nick) or {ok: false, fatal: true}; network errors, 5xx, 429 and
// 503 are retried with back-off.
const join = async (wanted) => {
  if (state.opened) await state.opened;
  const offline = (text) => setStatus('offline', text);
  let attempt = 0;
  let returning = true;
  for (;;) {
    if (!canSend()) return { ok: false, fatal: true };
    // A user token from the host page is used once. Otherwise the join carries this tab's
    // last guest token (of this join or a visit before the reload, from sessionStorage): the
    // member keeps its id, so a timeout or a ban holds across a new nickname, and a verified
    // member keeps the site's name and role.
    const userToken = me.userToken;
    const old = !userToken && returning ? (me.auth ? me.auth.token : me.resumeToken) : null;
    const body = userToken ? { user_token: userToken } : { nick: wanted || '' };
    let res;
    try {
      res = await api('POST', '/join', { body, token: old });
    } catch (e) {
      await waitToRetry(++attempt, null, offline);
      continue;
    }
    if (userToken) me.userToken = null;
    if (old && res.status === 401) {
      // A token the API no longer takes (a key rotated): joined as a new guest instead.
      returning = false;
      me.resumeToken = null;
      continue;
    }
    me.resumeToken = null;
    if (res.status === 200 && res.data && typeof res.data.token === 'string' && res.data.member) {
      applyJoin(res.data);
      return { ok: true };
    }
    if (userToken && res.status === 401) {
      // A user token refused (expired, used before …): on as a reader; the host page may
      // call Chatty.signIn() again with a fresh one.
      showStatus('error', t('signInRefused'));
      return { ok: false, fatal: true };
    }
    if (transient(res)) {
      await waitToRetry(++attempt, res, offline);
      continue;
    }
    const code = errorCode(res);
    if (code === 'timed_out') {
      // A moderator's timeout: the room stays on screen, the button counts down to its end,
      // and the next send joins again.
      const wait = retryAfterMs(res, 7 * 86400 * 1000);
      if (wait) startCooldown(wait, errorKey(res));
      else showStatus('error', errorMessage(res));
      return { ok: false, fatal: true };
    }
    if (code === 'read_only') {
      // Guests may only read here: the room stays on screen, and the reason with it.
      showStatus('error', errorMessage(res));
      return { ok: false, fatal: true };
    }
    if (res.status === 403 || res.status === 404) {
      enter(res.status === 403 ? 'banned' : 'stopped', res);
      return { ok: false, fatal: true };
    }
    // A nickname the API refuses (400) or that someone holds (409): ask for another one.
    const refused = res.status === 400 || res.status === 409;
    return { ok: false, message: refused ? t('nickRefused') : errorMessage(res) };
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
    showNickDialog('join');
    return { ok: false };
  }
  const result = await joinOnce(me.nick);
  if (!result.ok && !result.fatal) {
    // Forgotten, so that the next send asks for another one.
    me.nick = '';
    showMe();
    showNickDialog('refused');
    ui.nickError.textContent = result.message;
  }
  return result;
};

ui.nickForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const wanted = ui.nickInput.value.trim();
  if (!wanted) {
    ui.nickError.textContent = t('nickEmpty');
    ui.nickInput.focus();
    return;
  }
  const mode = dialog.mode;
  ui.nickError.textContent = '';
  ui.nickSubmit.disabled = true;
  if (me.join) await me.join;
  const previous = me.auth;
  const result = await joinOnce(wanted);
  ui.nickSubmit.disabled = false;
  if (result.ok) {
    me.nick = wanted;
    local.set(NICK_KEY, wanted);
    showMe();
    hideNickDialog();
    // A guest who changed nickname stays the same member; one who joined anew (an old token
    // the API no longer took) leaves as the member it was.
    if (previous && previous.member.id !== me.auth.member.id) {
      api('POST', '/leave', { token: previous.token }).catch(() => {});
    }
    ui.composer.focus();
    // The first message, which asked for the nickname, goes out now.
    if (mode === 'send') submit();
  } else if (result.fatal) {
    hideNickDialog();
  } else {
    ui.nickError.textContent = result.message;
    ui.nickInput.focus();
  }
});
ui.nickCancel.addEventListener('click', cancelNickDialog);
ui.nickChange.addEventListener('click', () => showNickDialog(me.auth ? 'change' : 'join'));
