// The page the frame runs in: its elements, the room its address names, the page embedding it.
/*! Chatty chat frame: the chat UI served at /v1/sites/{site}/rooms/{room}/frame, usually
 * inside the iframe that widget.js adds to a host page, same-origin with the API.
 *
 * Flow: the room is shown at once, without a token (openRoom(): where the log ends, then its
 * last page and the members) -> read through the best transport that works (reader.js): the
 * edge's event stream, else held polls (Prefer: wait), else polls every ~2 s with
 * If-None-Match (304 = nothing new) and members every other tick. The nickname is asked when
 * the visitor first sends (remembered per site in localStorage; a returning visitor joins at
 * once) -> POST join, and the message waiting in the composer goes out. Heartbeats every 10 s
 * only on plain polls (on a stream or held polls the edge reports presence); leave by
 * sendBeacon on pagehide. `?transport=stream|hold|poll` forces one transport (the widget's
 * data-transport), `?lang=` picks the language (its data-lang; strings.js). Sends go through
 * an outbox kept in sessionStorage; each message keeps one client_id for all its retries, so a
 * retry never duplicates it. All user text is rendered with textContent, never as HTML. A
 * member the join says is a moderator gets the moderator's controls (moderation.js); every
 * viewer sees moderation events as lines of the log.
 *
 * The page's life is one phase (opening, reading, live, banned, stopped) changed only by
 * enter(), plus a few facts any phase can have (paused, a send in flight, the panel open); see
 * state.js.
 *
 * The browser gets one script, /v1/frame.js: chat-api/src/routes/assets.rs joins the files of
 * this folder, each a list of plain statements, inside one strict-mode function (FRAME_JS
 * gives the order). They share that function's scope: a name declared in one file is seen by
 * all, and what runs while the script loads may only use what an earlier file declared.
 */

// ---------------------------------------------------------------- the page's elements

const $ = (id) => document.getElementById(id);
const ui = {
  app: $('app'),
  roomName: $('room-name'),
  memberCount: $('member-count'),
  nickChange: $('nick-change'),
  close: $('close'),
  members: $('members'),
  messages: $('messages'),
  empty: $('empty'),
  jump: $('jump'),
  status: $('status'),
  announce: $('announce'),
  hint: $('composer-hint'),
  form: $('send-form'),
  composer: $('composer'),
  send: $('send'),
  dialog: $('nick-dialog'),
  nickForm: $('nick-form'),
  nickInput: $('nick-input'),
  nickError: $('nick-error'),
  nickSubmit: $('nick-submit'),
  nickDesc: $('nick-desc'),
  nickCancel: $('nick-cancel'),
  slowMode: $('slow-mode'),
  modDialog: $('mod-dialog'),
  modTitle: $('mod-title'),
  modQuote: $('mod-quote'),
  modMember: $('mod-member'),
  modDelete: $('mod-delete'),
  modDuration: $('mod-duration'),
  modTimeout: $('mod-timeout'),
  modClear: $('mod-clear'),
  modBan: $('mod-ban'),
  modRoom: $('mod-room'),
  modSlow: $('mod-slow'),
  modApply: $('mod-apply'),
  modConfirm: $('mod-confirm'),
  modQuestion: $('mod-question'),
  modBack: $('mod-back'),
  modYes: $('mod-yes'),
  modError: $('mod-error'),
  modClose: $('mod-close'),
};
const setComposer = (enabled) => {
  ui.composer.disabled = !enabled;
  ui.send.disabled = !enabled;
};

// ---------------------------------------------------------------- language

// `?lang=` of the frame's address (the widget passes its script tag's data-lang), else the
// browser's languages; see pickLang() in strings.js.
const lang = (() => {
  let wanted = null;
  try {
    wanted = new URLSearchParams(location.search).get('lang');
  } catch (e) {
    wanted = null;
  }
  return pickLang(wanted, navigator.languages || [navigator.language]);
})();
const t = (key, vars) => translate(lang, key, vars);
const fmtWait = (ms) => formatWait(lang, ms);

// Fills the page's texts and labels from the table (see frame.html) and sets its language and
// direction; the stylesheet shows the page once `lang` is set on the root.
const localize = () => {
  const root = document.documentElement;
  root.lang = lang;
  root.dir = RTL_LANGS.indexOf(lang) >= 0 ? 'rtl' : 'ltr';
  for (const node of document.querySelectorAll('[data-t]')) node.textContent = t(node.dataset.t);
  for (const node of document.querySelectorAll('[data-t-label]')) {
    node.setAttribute('aria-label', t(node.dataset.tLabel));
  }
  for (const node of document.querySelectorAll('[data-t-placeholder]')) {
    node.setAttribute('placeholder', t(node.dataset.tPlaceholder));
  }
  root.classList.add('localized');
};
localize();

// ---------------------------------------------------------------- where we are

const decode = (s) => {
  try {
    return decodeURIComponent(s);
  } catch (e) {
    return s;
  }
};

const match = /^\/v1\/sites\/([^/]+)\/rooms\/([^/]+)\/frame\/?$/.exec(location.pathname);

// Not a room's address: say so and stop. All the parts run inside one function (see above), so
// this return ends the whole script: nothing after it, in this file or a later one, is set up.
if (!match) {
  ui.status.dataset.state = 'error';
  ui.status.textContent = t('notARoom');
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
