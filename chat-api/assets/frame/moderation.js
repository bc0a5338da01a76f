// A moderator in the chat: the controls (only drawn for a member the join said is a moderator;
// the API refuses them for anyone else) and the moderation events every viewer sees.

// The choices a moderator is offered: how long a timeout lasts, and the room's slow mode.
const TIMEOUT_SECS = [60, 600, 3600, 86400];
const DEFAULT_TIMEOUT_SECS = 600;
const SLOW_MODE_SECS = [0, 5, 10, 30, 60, 300];
const DEFAULT_SLOW_MODE_SECS = 30;
// Names of members kept to name the one a moderation event acted on (the event carries only
// its id); the oldest are forgotten beyond this many.
const MAX_KNOWN_NICKS = 1000;

// ---------------------------------------------------------------- names

const knownNicks = new Map(); // member id -> the last nick seen for it
const rememberNick = (id, nick) => {
  if (!id || !nick) return;
  knownNicks.delete(id);
  knownNicks.set(id, nick);
  if (knownNicks.size > MAX_KNOWN_NICKS) knownNicks.delete(knownNicks.keys().next().value);
};

// A name inside a sentence of another direction stays whole: a <bdi>.
const bdi = (text) => el('bdi', null, text);

// Fills `node` with the text of `key`, its `{name}`s replaced by vars[name]: a node as it is,
// anything else as text.
const fillTemplate = (node, key, vars) => {
  const parts = t(key).split(/(\{\w+\})/);
  node.replaceChildren();
  for (const part of parts) {
    const m = /^\{(\w+)\}$/.exec(part);
    const v = m && Object.prototype.hasOwnProperty.call(vars, m[1]) ? vars[m[1]] : null;
    if (v === null) {
      if (part) node.appendChild(document.createTextNode(part));
    } else if (v instanceof Node) node.appendChild(v);
    else node.appendChild(document.createTextNode(String(v)));
  }
  return node;
};

const duration = (secs) => formatDuration(lang, secs);

// ---------------------------------------------------------------- moderation events

// What the room knows of its own slow mode: the seconds of the last slow_mode event seen, null
// before one.
const roomRules = { slowSecs: null, seq: 0 };

// The action of a moderation event's text (`timeout:<secs>`, `ban`, `clear`,
// `slow_mode:<secs>`), null for one this frame does not know.
const parseAction = (text) => {
  const m = /^(timeout|slow_mode):(\d{1,9})$/.exec(text);
  if (m) return { action: m[1], secs: Number(m[2]) };
  if (text === 'ban' || text === 'clear') return { action: text, secs: 0 };
  return null;
};

// The line of a moderation event, in the viewer's language ("Mo timed Bob out for 10 minutes.");
// the member acted on is "you" for that member's own frame.
const moderationLine = (ev, act) => {
  const mod = ev.nick ? bdi(ev.nick) : t('aModerator');
  const mine = ev.member_id && me.ids.has(ev.member_id);
  const who = bdi(knownNicks.get(ev.member_id) || t('someone'));
  const p = el('p', 'system-text');
  if (act.action === 'slow_mode') {
    fillTemplate(p, act.secs > 0 ? 'mod.slowOn' : 'mod.slowOff', { mod, time: duration(act.secs) });
  } else {
    const key = 'mod.' + act.action + (mine ? 'You' : '');
    fillTemplate(p, key, { mod, who, time: duration(act.secs) });
  }
  return p;
};

// Adds one moderation event to the log as a line of its own; a slow_mode event also says what
// the room's slow mode is now. Returns the line's text when it is new (for a screen reader).
const addModeration = (ev) => {
  if (shown.bySeq.has(ev.seq)) return null;
  const act = parseAction(ev.text);
  if (!act) return null;
  if (act.action === 'slow_mode' && ev.seq >= roomRules.seq) {
    roomRules.slowSecs = act.secs;
    roomRules.seq = ev.seq;
    showSlowMode();
  }
  const li = el('li', 'message system');
  li.dataset.seq = String(ev.seq);
  li.dataset.action = act.action;
  if (ev.member_id) li.dataset.memberId = ev.member_id;
  li.appendChild(moderationLine(ev, act));
  const time = el('time', 'time');
  setTime(time, Number(ev.at_ms) || Date.now(), Date.now());
  li.appendChild(time);
  shown.bySeq.set(ev.seq, li);
  insertBySeq(li, ev.seq);
  return li.firstChild.textContent;
};

// ---------------------------------------------------------------- the controls

// Whether this member moderates the room (the join's answer says so): the controls are drawn,
// or taken away, on what is on screen already.
const setModerator = (on) => {
  const was = me.moderator;
  me.moderator = on;
  ui.app.classList.toggle('moderating', on);
  ui.slowMode.hidden = !on;
  showSlowMode();
  if (was === on) return;
  for (const li of shown.bySeq.values()) decorateMessage(li);
  if (lastMembers.list) renderMembers(lastMembers.list, lastMembers.count);
  if (!on && !ui.modDialog.hidden) closeModDialog();
};

// A message's moderation button: there for a moderator on others' messages, else not.
const decorateMessage = (li) => {
  const meta = li.querySelector('.meta');
  if (!meta) return;
  const button = meta.querySelector('.mod-button');
  const wanted = me.moderator && !li.classList.contains('own') && !li.classList.contains('system');
  if (wanted && !button) {
    const nick = meta.querySelector('.nick');
    meta.appendChild(modButton(t('modMessage', { nick: nick ? nick.textContent : '' })));
  } else if (!wanted && button) button.remove();
};

// The header's slow-mode button: a clock and, while it is on, its period; a screen reader
// hears the whole sentence around it.
const showSlowMode = () => {
  const secs = roomRules.slowSecs;
  const icon = el('span', 'clock-icon');
  icon.setAttribute('aria-hidden', 'true');
  if (secs) {
    const time = fmtWait(secs * 1000);
    const [before, after] = t('slowButtonOn').split('{time}');
    ui.slowMode.replaceChildren(
      icon,
      el('span', 'visually-hidden', before || ''),
      el('span', 'slow-time', time),
      el('span', 'visually-hidden', after || ''),
    );
    ui.slowMode.title = t('slowButtonOn', { time });
  } else {
    ui.slowMode.replaceChildren(icon, el('span', 'visually-hidden', t('slowButton')));
    ui.slowMode.title = t('slowButton');
  }
  ui.slowMode.setAttribute('aria-pressed', secs ? 'true' : 'false');
};

// The button a moderator opens the dialog with, on a message or a member chip (only drawn for a
// moderator).
const modButton = (label) => {
  const b = el('button', 'mod-button');
  b.type = 'button';
  b.setAttribute('aria-label', label);
  b.setAttribute('aria-haspopup', 'dialog');
  b.title = label;
  const dots = el('span', null, '\u22ef');
  dots.setAttribute('aria-hidden', 'true');
  b.appendChild(dots);
  return b;
};

const fillSelect = (select, values, label, chosen) => {
  select.replaceChildren();
  for (const v of values) {
    const o = el('option', null, label(v));
    o.value = String(v);
    if (v === chosen) o.selected = true;
    select.appendChild(o);
  }
};

// What the dialog acts on: {member_id, nick, seq, text} of a member (seq and text when opened
// from a message), or {room: true}; `action` is the one waiting to be confirmed.
const modDialog = { target: null, action: null, opener: null, busy: false };

const showPart = (part) => {
  ui.modMember.hidden = part !== 'member';
  ui.modRoom.hidden = part !== 'room';
  ui.modConfirm.hidden = part !== 'confirm';
};

const openModDialog = (target, opener) => {
  if (!me.moderator) return;
  modDialog.target = target;
  modDialog.action = null;
  modDialog.opener = opener || null;
  ui.modError.textContent = '';
  if (target.room) {
    ui.modTitle.textContent = t('modSlowTitle');
    ui.modQuote.hidden = true;
    const now = roomRules.slowSecs;
    fillSelect(ui.modSlow, SLOW_MODE_SECS, (v) => (v ? duration(v) : t('modSlowOff')),
      SLOW_MODE_SECS.indexOf(now) >= 0 && now ? now : DEFAULT_SLOW_MODE_SECS);
    showPart('room');
  } else {
    fillTemplate(ui.modTitle, 'modTitle', { nick: bdi(target.nick) });
    ui.modQuote.hidden = !target.seq;
    ui.modQuote.textContent = target.seq ? target.text : '';
    ui.modDelete.hidden = !target.seq;
    fillSelect(ui.modDuration, TIMEOUT_SECS, duration, DEFAULT_TIMEOUT_SECS);
    showPart('member');
  }
  ui.modDialog.hidden = false;
  ui.app.inert = true;
  ui.app.setAttribute('aria-hidden', 'true');
  (target.room ? ui.modSlow : target.seq ? ui.modDelete : ui.modDuration).focus();
};

const closeModDialog = () => {
  ui.modDialog.hidden = true;
  ui.app.inert = false;
  ui.app.removeAttribute('aria-hidden');
  const back = modDialog.opener;
  modDialog.target = null;
  modDialog.action = null;
  modDialog.opener = null;
  if (back && back.isConnected) back.focus();
  else ui.messages.focus();
};

// A destructive action asks first: the question, the action's own word on the button that
// does it, and "Back" (focused, so that Enter alone does nothing destructive).
const QUESTIONS = {
  delete: ['modConfirmDelete', 'modDelete'],
  timeout: ['modConfirmTimeout', 'modTimeout'],
  clear: ['modConfirmClear', 'modClear'],
  ban: ['modConfirmBan', 'modBan'],
};
const askFirst = (action) => {
  const target = modDialog.target;
  if (!target || target.room) return;
  modDialog.action = action;
  const secs = Number(ui.modDuration.value) || DEFAULT_TIMEOUT_SECS;
  modDialog.secs = secs;
  const [question, yes] = QUESTIONS[action];
  fillTemplate(ui.modQuestion, question, { nick: bdi(target.nick), time: duration(secs) });
  ui.modYes.textContent = t(yes);
  ui.modError.textContent = '';
  showPart('confirm');
  ui.modBack.focus();
};

// Sends a moderator's request with this member's token; a token that expired is renewed once.
const modRequest = async (method, path, body) => {
  let res = await api(method, path, { auth: true, body });
  if (res.status === 401) {
    const again = await rejoin();
    if (again.ok) res = await api(method, path, { auth: true, body });
  }
  return res;
};

// What an answer brings is shown at once (the log brings it too; the seq keeps it once). The
// cursor does not move: events before it may still be on their way.
const applyAnswer = (ev) => {
  if (!validEvent(ev)) return;
  if (ev.kind === 'deletion' && Number.isSafeInteger(ev.deletes)) removeMessage(ev.deletes);
  else if (ev.kind === 'moderation') {
    addModeration({
      seq: ev.seq,
      member_id: String(ev.member_id || ''),
      nick: String(ev.nick || ''),
      text: String(ev.text || ''),
      at_ms: ev.at_ms,
    });
  }
  updateEmpty();
};

const runAction = async (action) => {
  const target = modDialog.target;
  if (!target || modDialog.busy) return;
  let res;
  let body;
  let method = 'POST';
  let path = '/moderation';
  if (action === 'delete') {
    method = 'DELETE';
    path = '/messages/' + target.seq;
  } else if (action === 'slow_mode') {
    body = { action, secs: Number(ui.modSlow.value) || 0 };
  } else if (action === 'timeout') {
    body = { action, member_id: target.member_id, secs: modDialog.secs };
  } else {
    body = { action, member_id: target.member_id };
  }
  modDialog.busy = true;
  for (const b of ui.modDialog.querySelectorAll('button')) b.disabled = true;
  try {
    res = await modRequest(method, path, body);
  } catch (e) {
    res = null;
  } finally {
    modDialog.busy = false;
    for (const b of ui.modDialog.querySelectorAll('button')) b.disabled = false;
  }
  if (modDialog.target !== target) return;
  if (res && res.status >= 200 && res.status < 300) {
    const data = res.data || {};
    applyAnswer(data.event || data);
    closeModDialog();
    return;
  }
  ui.modError.textContent = res ? errorMessage(res) : t('cannotReach');
};

ui.modDelete.addEventListener('click', () => askFirst('delete'));
ui.modTimeout.addEventListener('click', () => askFirst('timeout'));
ui.modClear.addEventListener('click', () => askFirst('clear'));
ui.modBan.addEventListener('click', () => askFirst('ban'));
ui.modBack.addEventListener('click', () => {
  modDialog.action = null;
  ui.modError.textContent = '';
  showPart('member');
  ui.modDuration.focus();
});
ui.modYes.addEventListener('click', () => {
  if (modDialog.action) runAction(modDialog.action);
});
ui.modApply.addEventListener('click', () => runAction('slow_mode'));
ui.modClose.addEventListener('click', closeModDialog);
ui.slowMode.addEventListener('click', () => openModDialog({ room: true }, ui.slowMode));

// One listener for the buttons of every message and member chip.
ui.messages.addEventListener('click', (e) => {
  const b = e.target.closest && e.target.closest('button.mod-button');
  const li = b && b.closest('li.message[data-seq]');
  if (!li) return;
  const text = li.querySelector('.text');
  const nick = li.querySelector('.nick');
  openModDialog({
    member_id: li.dataset.memberId,
    nick: nick ? nick.textContent : '',
    seq: Number(li.dataset.seq),
    text: text ? text.textContent : '',
  }, b);
});
ui.members.addEventListener('click', (e) => {
  const b = e.target.closest && e.target.closest('button.mod-button');
  const li = b && b.closest('li.member');
  if (!li) return;
  const nick = li.querySelector('.member-nick');
  openModDialog({ member_id: li.dataset.id, nick: nick ? nick.textContent : '' }, b);
});
