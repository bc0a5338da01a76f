/*! Chatty widget: adds a chat launcher and a lazily created chat iframe to the host page.
 *
 * Usage:
 *   <script src="https://chat.example/v1/widget.js" data-site="demo" data-room="lobby" async></script>
 *
 * data-lang="de" (a BCP 47 tag: en, de, fr, es, ja or ar; another is English; default: the
 * browser's languages) is the language of the launcher and the chat; ar is laid out right to
 * left, and the launcher sits on the left.
 * data-transport="stream|hold|poll" (default auto: the best that works) makes the chat read
 * the room through that one transport only; it is meant for tests.
 * data-user-token="…" (a user token your backend signed, see docs/api.md) joins the visitor as
 * your signed-in user; a page that signs in later calls window.Chatty.signIn(token).
 *
 * Served as /v1/widget.js after frame/strings.js (the one table of words), inside one
 * strict-mode function (chat-api/src/routes/assets.rs).
 *
 * It adds one <chatty-widget> element (everything else lives in its shadow root), one
 * `message` listener, `window.Chatty.signIn` and the guard `window.__chattyWidgetLoaded`;
 * nothing else in the page is read or changed. Messages with the frame:
 *   frame -> widget: {type: "chatty:unread", count}  and  {type: "chatty:close"}
 *   widget -> frame: {type: "chatty:visibility", open}  and  {type: "chatty:user-token", token}
 * Both sides check the other's window; the widget also checks the chat origin.
 */
const w = window;
const d = document;
if (w.__chattyWidgetLoaded) return;

const SRC_RE = /\/v1\/widget\.js(?:[?#].*)?$/;
const SITE_RE = /^[a-z0-9-]{1,32}$/;
const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
const TRANSPORTS = ['auto', 'stream', 'hold', 'poll'];
const LANG_RE = /^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$/;

let script = d.currentScript;
if (!script || !SRC_RE.test(script.src || '')) {
  script = null;
  const all = d.getElementsByTagName('script');
  for (let i = all.length - 1; i >= 0; i--) {
    if (SRC_RE.test(all[i].src || '')) {
      script = all[i];
      break;
    }
  }
}
if (!script) return;

const warn = (msg) => {
  if (w.console && w.console.warn) w.console.warn('Chatty: ' + msg);
};

let origin;
try {
  origin = new URL(script.src, d.baseURI).origin;
} catch (e) {
  warn('cannot read the script address');
  return;
}
const site = script.getAttribute('data-site') || '';
const room = script.getAttribute('data-room') || 'lobby';
if (!SITE_RE.test(site)) {
  warn('data-site must be 1-32 characters of a-z, 0-9 and "-"');
  return;
}
if (!ROOM_RE.test(room)) {
  warn('data-room must be 1-64 characters of A-Z, a-z, 0-9, "-" and "_"');
  return;
}
let transport = script.getAttribute('data-transport') || 'auto';
if (TRANSPORTS.indexOf(transport) < 0) {
  warn('data-transport must be one of ' + TRANSPORTS.join(', ') + '; using auto');
  transport = 'auto';
}
let wantedLang = script.getAttribute('data-lang') || '';
if (wantedLang && !LANG_RE.test(wantedLang)) {
  warn('data-lang must be a language tag such as "de" or "fr-CA"; using English');
  wantedLang = 'en';
}
const lang = pickLang(wantedLang, w.navigator.languages || [w.navigator.language]);
const rtl = RTL_LANGS.indexOf(lang) >= 0;
const t = (key, vars) => translate(lang, key, vars);
if (!d.documentElement || !d.documentElement.attachShadow) {
  warn('this browser is not supported');
  return;
}
w.__chattyWidgetLoaded = true;

// The frame speaks the language picked here (the host page's data-lang, else this browser's).
const frameUrl =
  origin + '/v1/sites/' + site + '/rooms/' + room + '/frame?lang=' + lang +
  (transport === 'auto' ? '' : '&transport=' + transport);

const CSS = `
:host { all: initial; }
.launcher {
position: fixed; right: 20px; bottom: calc(20px + env(safe-area-inset-bottom, 0px));
z-index: 2147483647; box-sizing: border-box; width: 56px; height: 56px; margin: 0; padding: 0;
display: flex; align-items: center; justify-content: center;
border: 0; border-radius: 50%; background: #4f46e5; color: #fff; cursor: pointer;
box-shadow: 0 6px 20px rgba(17, 24, 39, .28); -webkit-tap-highlight-color: transparent;
}
:host([dir="rtl"]) .launcher { right: auto; left: 20px; }
.launcher:hover { background: #4338ca; }
.launcher:focus { outline: none; }
.launcher:focus-visible { outline: 3px solid #a5b4fc; outline-offset: 3px; }
.launcher svg { width: 26px; height: 26px; fill: none; stroke: currentColor; stroke-width: 2;
stroke-linecap: round; stroke-linejoin: round; pointer-events: none; }
.launcher .icon-close, .launcher.open .icon-chat { display: none; }
.launcher.open .icon-close { display: block; }
.badge {
position: absolute; top: -4px; right: -4px; box-sizing: border-box; min-width: 22px; height: 22px;
padding: 0 6px; border-radius: 11px; border: 2px solid #fff; background: #dc2626; color: #fff;
font: 700 11px/18px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; text-align: center;
}
:host([dir="rtl"]) .badge { right: auto; left: -4px; }
.badge[hidden] { display: none; }
.panel {
position: fixed; right: 20px; bottom: calc(88px + env(safe-area-inset-bottom, 0px));
z-index: 2147483647; box-sizing: border-box; width: 380px; height: 580px;
max-width: calc(100vw - 40px); max-height: calc(100vh - 112px);
border-radius: 16px; overflow: hidden; background: #fff;
box-shadow: 0 12px 40px rgba(17, 24, 39, .3), 0 0 0 1px rgba(17, 24, 39, .06);
}
:host([dir="rtl"]) .panel { right: auto; left: 20px; }
.panel.closed { visibility: hidden; opacity: 0; transform: translateY(12px) scale(.98); pointer-events: none; }
.panel iframe { display: block; width: 100%; height: 100%; border: 0; margin: 0; padding: 0; }
@media (prefers-reduced-motion: no-preference) {
.panel { transition: opacity .16s ease, transform .16s ease, visibility 0s linear 0s; }
.panel.closed { transition: opacity .16s ease, transform .16s ease, visibility 0s linear .16s; }
}
@media (max-width: 480px), (max-height: 520px) {
.panel { top: 0; left: 0; right: 0; bottom: calc(80px + env(safe-area-inset-bottom, 0px));
  width: auto; height: auto; max-width: none; max-height: none; border-radius: 0 0 16px 16px; }
.launcher { right: 12px; bottom: calc(12px + env(safe-area-inset-bottom, 0px)); }
:host([dir="rtl"]) .panel { left: 0; right: 0; }
:host([dir="rtl"]) .launcher { right: auto; left: 12px; }
}
@media (prefers-color-scheme: dark) {
.launcher { background: #6366f1; }
.launcher:hover { background: #818cf8; }
.badge { border-color: #111827; }
.panel { background: #111827; box-shadow: 0 12px 40px rgba(0, 0, 0, .6), 0 0 0 1px rgba(255, 255, 255, .08); }
}
@media print { .launcher, .panel { display: none; } }
`;

const host = d.createElement('chatty-widget');
host.setAttribute('dir', rtl ? 'rtl' : 'ltr');
host.setAttribute('lang', lang);
const root = host.attachShadow({ mode: 'open' });

// A constructed stylesheet is not blocked by a host page's style-src policy; a <style>
// element inside the shadow root is the fallback.
let styled = false;
try {
  if ('adoptedStyleSheets' in root && typeof CSSStyleSheet === 'function') {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    root.adoptedStyleSheets = [sheet];
    styled = true;
  }
} catch (e) {
  styled = false;
}
if (!styled) {
  const style = d.createElement('style');
  style.textContent = CSS;
  root.appendChild(style);
}

const SVG_NS = 'http://www.w3.org/2000/svg';
const icon = (cls, paths) => {
  const svg = d.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('class', cls);
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  for (const p of paths) {
    const path = d.createElementNS(SVG_NS, 'path');
    path.setAttribute('d', p);
    svg.appendChild(path);
  }
  return svg;
};

const launcher = d.createElement('button');
launcher.type = 'button';
launcher.className = 'launcher';
launcher.setAttribute('aria-expanded', 'false');
launcher.setAttribute('aria-controls', 'chatty-panel');
launcher.setAttribute('aria-label', t('chat'));
launcher.appendChild(icon('icon-chat', ['M21 12a8 8 0 0 1-11.6 7.1L4 20.5l1.4-4.9A8 8 0 1 1 21 12z']));
launcher.appendChild(icon('icon-close', ['M6 6l12 12', 'M18 6L6 18']));
const badge = d.createElement('span');
badge.className = 'badge';
badge.setAttribute('aria-hidden', 'true');
badge.hidden = true;
launcher.appendChild(badge);

const panel = d.createElement('div');
panel.id = 'chatty-panel';
panel.className = 'panel closed';
panel.setAttribute('role', 'region');
panel.setAttribute('aria-label', t('chatRoom', { room }));

root.appendChild(panel);
root.appendChild(launcher);

let iframe = null;
let loaded = false;
let open = false;
let unread = 0;

const render = () => {
  const shown = !open && unread > 0;
  badge.hidden = !shown;
  badge.textContent = shown ? (unread > 99 ? '99+' : String(unread)) : '';
  launcher.setAttribute('aria-label', shown ? t('chatUnread', { n: formatNumber(lang, unread) }) : t('chat'));
};

// A user token signed by the host site's backend (data-user-token, or Chatty.signIn() once the
// visitor signs in): handed to the frame by message, never in an address, so it stays out of
// logs and histories. The frame exchanges it once for its own token.
let userToken = script.getAttribute('data-user-token') || '';

const post = (message) => {
  if (!iframe || !loaded || !iframe.contentWindow) return;
  try {
    iframe.contentWindow.postMessage(message, origin);
  } catch (e) {
    // The frame is gone or not ours yet; it is told again when it loads.
  }
};

const tellFrame = () => post({ type: 'chatty:visibility', open: open });

const tellUser = () => {
  if (userToken) post({ type: 'chatty:user-token', token: userToken });
};

w.Chatty = w.Chatty || {};
w.Chatty.signIn = (token) => {
  if (typeof token !== 'string' || token.length === 0 || token.length > 2048) {
    warn('Chatty.signIn needs the user token signed by your site');
    return;
  }
  userToken = token;
  ensureFrame();
  tellUser();
};

const ensureFrame = () => {
  if (iframe) return;
  iframe = d.createElement('iframe');
  iframe.title = t('chatRoom', { room });
  iframe.src = frameUrl;
  iframe.addEventListener('load', () => {
    loaded = true;
    tellFrame();
    tellUser();
    if (open) iframe.focus();
  });
  panel.appendChild(iframe);
};

const setOpen = (value, focusLauncher) => {
  open = value;
  launcher.setAttribute('aria-expanded', String(open));
  launcher.classList.toggle('open', open);
  panel.classList.toggle('closed', !open);
  if (open) {
    ensureFrame();
    unread = 0;
    if (loaded) iframe.focus();
  } else if (focusLauncher) {
    launcher.focus();
  }
  render();
  tellFrame();
};

launcher.addEventListener('click', () => setOpen(!open, false));
root.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && open) {
    e.stopPropagation();
    setOpen(false, true);
  }
});

w.addEventListener('message', (e) => {
  if (!iframe || e.origin !== origin || e.source !== iframe.contentWindow) return;
  const data = e.data;
  if (!data || typeof data !== 'object') return;
  if (data.type === 'chatty:unread') {
    const n = Number(data.count);
    if (!Number.isFinite(n) || n < 0) return;
    unread = open ? 0 : Math.min(Math.floor(n), 9999);
    render();
  } else if (data.type === 'chatty:close') {
    if (open) setOpen(false, true);
  }
});

const mount = () => {
  (d.body || d.documentElement).appendChild(host);
};
if (d.body) mount();
else d.addEventListener('DOMContentLoaded', mount, { once: true });
