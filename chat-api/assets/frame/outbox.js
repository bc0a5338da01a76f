// Sending: the outbox, each message delivered with one client_id through its retries, the composer.

// ---------------------------------------------------------------- client ids

const CLIENT_ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';
const newClientId = () => {
  const bytes = new Uint8Array(22);
  crypto.getRandomValues(bytes);
  let id = '';
  for (const b of bytes) id += CLIENT_ID_ALPHABET[b & 63];
  return id;
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
  meta.appendChild(el('span', 'time', t('sending')));
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
      t('retry'),
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
    t('remove'),
    'link discard',
    () => {
      item.li.remove();
      updateEmpty();
      ui.composer.focus();
    },
  ]);
  itemNote(item, reason, actions);
};

// ---------------------------------------------------------------- waiting to send again

// Until when the API said no send may go out (rate limit, slow mode, a timeout), and why: the
// send button counts down meanwhile and says so, and the composer keeps what is typed.
const cooldown = { until: 0, timer: null };

const tickCooldown = () => {
  clearTimeout(cooldown.timer);
  cooldown.timer = null;
  const left = cooldown.until - Date.now();
  if (left <= 0) {
    cooldown.until = 0;
    ui.send.textContent = t('send');
    ui.send.removeAttribute('aria-disabled');
    delete ui.send.dataset.wait;
    if (ui.status.dataset.state === 'wait') setStatus('ok', '');
    return;
  }
  ui.send.textContent = t('sendWait', { time: fmtWait(left) });
  ui.send.setAttribute('aria-disabled', 'true');
  ui.send.dataset.wait = String(Math.ceil(left / 1000));
  cooldown.timer = setTimeout(tickCooldown, left % 1000 || 1000);
};

// No send for `ms`, because of the refusal whose words are `key`; said once on the status line
// (a polite live region), then counted down on the button.
const startCooldown = (ms, key) => {
  cooldown.until = Math.max(cooldown.until, Date.now() + ms);
  setStatus('wait', t('waitStatus', { why: t(key), time: fmtWait(cooldown.until - Date.now()) }));
  tickCooldown();
};

// ---------------------------------------------------------------- delivering

// Puts a refused message back in the composer (unless something else is being written there).
const giveBack = (item) => {
  if (!ui.composer.value) {
    ui.composer.value = item.text;
    autosize();
  }
};

// Delivers one outbox item, retrying with the same client_id. Returns when it is stored,
// refused or the sender is banned.
const deliver = async (item) => {
  const say = (text) => itemNote(item, text);
  // Joins again (for a token); if that fails, so does this item.
  const rejoined = async () => {
    const r = await rejoin();
    if (!r.ok) markFailed(item, t('notSentWhy', { reason: t('notInRoom') }), true);
    return r.ok;
  };
  let attempt = 0;
  let unauthorized = 0;
  for (;;) {
    if (item.done) return;
    if (!canSend()) {
      markFailed(item, t('notSent'), false);
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
    const code = errorCode(res);
    if (res.status === 401) {
      unauthorized++;
      if (unauthorized > 2) await sleep(backoff(unauthorized));
      if (!(await rejoined())) return;
      continue;
    }
    if (code === 'timed_out') {
      // A moderator's timeout: this message is not sent later by itself; the button counts
      // down to when the guest may write again.
      const wait = retryAfterMs(res, 7 * 86400 * 1000);
      if (wait) startCooldown(wait, errorKey(res));
      else showStatus('error', errorMessage(res));
      markFailed(item, t('notSentWhy', { reason: errorMessage(res) }), true);
      giveBack(item);
      return;
    }
    if (code === 'read_only') {
      showStatus('error', errorMessage(res));
      markFailed(item, t('notSentWhy', { reason: errorMessage(res) }), false);
      giveBack(item);
      return;
    }
    if (res.status === 403) {
      enter('banned', res);
      return;
    }
    if (res.status === 429 || code === 'rate_limited' || code === 'slow_mode') {
      // Too fast for the guest's rate or the room's slow mode: the same message goes out again
      // (same client_id) when the wait is over, and the button counts down until then.
      const wait = retryAfterMs(res) || backoff(++attempt);
      startCooldown(wait, errorKey(res));
      say(t('waitStatus', { why: errorMessage(res), time: fmtWait(wait) }));
      await sleep(wait);
      continue;
    }
    if (transient(res)) {
      await waitToRetry(++attempt, res, say);
      continue;
    }
    // 400, 413, a blocked word, a link and the like: sending it again would not help.
    markFailed(item, t('notSentWhy', { reason: errorMessage(res) }), false);
    giveBack(item);
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
  if (!canSend() || cooldown.until) return;
  const text = ui.composer.value.trim();
  if (!text) return;
  // The first message asks for a nickname; it stays in the composer until the join, then
  // goes out (the dialog's submit calls this again).
  if (!me.auth && !me.nick) {
    showNickDialog('send');
    return;
  }
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
  if (ui.dialog.hidden) ui.composer.focus();
});
ui.composer.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    submit();
  }
});
ui.composer.addEventListener('input', autosize);
