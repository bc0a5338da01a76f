// The frame's start, last of the parts: leaving on pagehide, coming back, then the room at once.

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

// The room first, at once and without a token; a returning visitor (a nickname remembered)
// then joins by itself, and what its last visit left in the outbox goes out.
updateEmpty();
const restored = readJson(session, OUTBOX_KEY);
if (me.nick && Array.isArray(restored)) {
  for (const r of restored) {
    if (r && typeof r.text === 'string' && typeof r.client_id === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(r.client_id)) {
      enqueue(r.text, r.client_id);
    }
  }
}
showMe();
setStatus('connecting', t('connecting'));
state.opened = openRoom();
if (me.nick) rejoin();
