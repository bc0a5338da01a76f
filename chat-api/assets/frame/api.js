// Talking to the API: one fetch wrapper, what its answers mean, and waiting before a retry.

const MAX_BACKOFF_MS = 30000;

// ---------------------------------------------------------------- waiting

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const jitter = (ms) => Math.round(ms * (0.8 + Math.random() * 0.4));
const backoff = (attempt) =>
  jitter(Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, Math.max(0, attempt - 1))));
const secs = (ms) => Math.max(1, Math.round(ms / 1000)) + ' s';
const retrying = (why, ms) => why + ' Retrying in ' + secs(ms) + '\u2026';

// ---------------------------------------------------------------- HTTP

// opts: body (sent as JSON), token or auth (Authorization from me.auth), etag
// (If-None-Match), headers (more request headers), signal (an AbortSignal).
const api = async (method, path, opts = {}) => {
  const headers = Object.assign({}, opts.headers);
  let body;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  const token = opts.token || (opts.auth && me.auth ? me.auth.token : null);
  if (token) headers.Authorization = 'Bearer ' + token;
  if (opts.etag) headers['If-None-Match'] = opts.etag;
  let res;
  let data = null;
  try {
    res = await fetch(base + path, {
      method,
      headers,
      body,
      cache: 'no-store',
      credentials: 'same-origin',
      signal: opts.signal,
    });
    if (res.status !== 204 && res.status !== 304) {
      const text = await res.text();
      if (text) {
        try {
          data = JSON.parse(text);
        } catch (e) {
          data = null;
        }
      }
    }
  } catch (e) {
    const err = new Error('network error');
    err.network = true;
    throw err;
  }
  return { status: res.status, data, headers: res.headers };
};

const DEFAULT_ERRORS = {
  400: 'That was not accepted.',
  401: 'Your session expired.',
  403: 'You are not allowed to do that here.',
  404: 'This chat room does not exist.',
  413: 'That message is too long.',
  429: 'You are going a bit fast. Please wait a moment.',
  503: 'The chat is busy right now.',
};
const errorMessage = (res) => {
  const e = res && res.data && res.data.error;
  if (e && typeof e.message === 'string' && e.message) return e.message;
  if (res && DEFAULT_ERRORS[res.status]) return DEFAULT_ERRORS[res.status];
  return 'Something went wrong.';
};
const errorCode = (res) => {
  const e = res && res.data && res.data.error;
  return e && typeof e.code === 'string' ? e.code : '';
};
const retryAfterMs = (res) => {
  const h = res && res.headers && res.headers.get('Retry-After');
  if (!h) return null;
  let ms = null;
  if (/^\s*\d+\s*$/.test(h)) ms = Number(h) * 1000;
  else {
    const at = Date.parse(h);
    if (!Number.isNaN(at)) ms = at - Date.now();
  }
  if (ms === null) return null;
  return Math.min(300000, Math.max(1000, ms));
};
const httpError = (res) => {
  const err = new Error('HTTP ' + res.status);
  err.res = res;
  err.retryAfter = res.status === 429 || res.status === 503 ? retryAfterMs(res) : null;
  return err;
};
const transient = (res) => res.status === 429 || res.status >= 500;

// ---------------------------------------------------------------- retries

// After a failed try (a network error, or `res`, a 429 or 5xx answer): says through `say`
// when the next one goes out and waits until then. `attempt` counts the failed tries.
const waitToRetry = async (attempt, res, say) => {
  const wait = (res && retryAfterMs(res)) || backoff(attempt);
  say(retrying(res ? errorMessage(res) : 'Cannot reach the chat.', wait));
  await sleep(wait);
};
