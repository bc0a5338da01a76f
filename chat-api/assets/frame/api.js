// Talking to the API: one fetch wrapper, what its answers mean, and waiting before a retry.

const MAX_BACKOFF_MS = 30000;

// ---------------------------------------------------------------- waiting

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const jitter = (ms) => Math.round(ms * (0.8 + Math.random() * 0.4));
const backoff = (attempt) =>
  jitter(Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, Math.max(0, attempt - 1))));
const retrying = (why, ms) => t('retrying', { why, time: fmtWait(ms) });

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

// What a refusal says to the visitor, in the frame's language: by the API's error code (its
// message is English, for developers), else by the status.
const CODE_KEYS = {
  banned: 'err.banned',
  timed_out: 'err.timed_out',
  rate_limited: 'err.rate_limited',
  slow_mode: 'err.slow_mode',
  too_large: 'err.too_large',
  blocked_text: 'err.blocked_text',
  links_not_allowed: 'err.links_not_allowed',
  read_only: 'err.read_only',
  unavailable: 'err.unavailable',
  not_found: 'err.not_found',
  unauthorized: 'err.unauthorized',
  forbidden: 'err.forbidden',
  bad_request: 'err.invalid',
  invalid_json: 'err.invalid',
  invalid_field: 'err.invalid',
};
const STATUS_KEYS = {
  400: 'err.invalid',
  401: 'err.unauthorized',
  403: 'err.forbidden',
  404: 'err.not_found',
  413: 'err.too_large',
  429: 'err.rate_limited',
  503: 'err.unavailable',
};
const errorKey = (res) => {
  const code = errorCode(res);
  if (Object.prototype.hasOwnProperty.call(CODE_KEYS, code)) return CODE_KEYS[code];
  if (res && Object.prototype.hasOwnProperty.call(STATUS_KEYS, res.status)) return STATUS_KEYS[res.status];
  return 'err.other';
};
const errorMessage = (res) => t(errorKey(res));
const errorCode = (res) => {
  const e = res && res.data && res.data.error;
  return e && typeof e.code === 'string' ? e.code : '';
};
// Retry-After in ms, at least a second; `max` bounds it (5 min for a retry; a timeout's
// countdown may be longer).
const retryAfterMs = (res, max = 300000) => {
  const h = res && res.headers && res.headers.get('Retry-After');
  if (!h) return null;
  let ms = null;
  if (/^\s*\d+\s*$/.test(h)) ms = Number(h) * 1000;
  else {
    const at = Date.parse(h);
    if (!Number.isNaN(at)) ms = at - Date.now();
  }
  if (ms === null) return null;
  return Math.min(max, Math.max(1000, ms));
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
  say(retrying(res ? errorMessage(res) : t('cannotReach'), wait));
  await sleep(wait);
};
