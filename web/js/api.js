// The REST API client (openapi.yaml, /api/v1).  The token lives in
// sessionStorage for this tab only and goes in the Authorization header,
// never in a URL.  Errors arrive as application/problem+json (RFC 9457) and
// become ApiError.

const TOKEN_KEY = 'pop3bridge.token';
const BASE = 'api/v1';
const REQUEST_TIMEOUT_MS = 65000; // a live POP3 operation may take a while

export class ApiError extends Error {
  constructor(status, problem, fallback) {
    const title = (problem && typeof problem.title === 'string' && problem.title) || fallback;
    super(title);
    this.name = 'ApiError';
    this.status = status;
    this.title = title;
    this.detail = problem && typeof problem.detail === 'string' ? problem.detail : '';
    this.problem = problem || null;
    this.retryAfter = null;
  }
}

let onUnauthorized = null;

export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch (_) {
    return '';
  }
}

export function setToken(t) {
  sessionStorage.setItem(TOKEN_KEY, t);
}

export function clearToken() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch (_) {
    /* storage unavailable: nothing kept */
  }
}

// Percent-encode one path segment (UIDLs may hold '/', '%', '?').
export function seg(s) {
  return encodeURIComponent(String(s));
}

function statusText(status) {
  const known = {
    400: 'Bad request', 401: 'Not signed in', 403: 'Forbidden', 404: 'Not found',
    405: 'Method not allowed', 409: 'Conflict', 413: 'Too large', 429: 'Too many requests',
    500: 'Internal error', 502: 'Mail server error', 503: 'Unavailable', 504: 'Mail server timed out',
  };
  return known[status] || 'HTTP ' + status;
}

// One request.  opts: method, token (instead of the stored one), accept
// ('json' default, or a media type: the body is returned as text), query
// (object; empty values are left out), body (JSON-encoded), blob (return
// the body as a Blob).
export async function request(path, opts = {}) {
  const token = opts.token !== undefined ? opts.token : getToken();
  const headers = { Accept: 'application/json, application/problem+json' };
  if (opts.accept && opts.accept !== 'json') headers.Accept = opts.accept + ', application/problem+json';
  if (token) headers.Authorization = 'Bearer ' + token;
  let url = BASE + path;
  if (opts.query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(opts.query)) {
      if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
    }
    const qs = q.toString();
    if (qs) url += '?' + qs;
  }
  let body;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), REQUEST_TIMEOUT_MS);
  let res;
  try {
    res = await fetch(url, {
      method: opts.method || 'GET', headers, body, signal: ctrl.signal,
      credentials: 'omit', cache: 'no-store', redirect: 'error', referrerPolicy: 'no-referrer',
    });
  } catch (e) {
    const err = new ApiError(0, null, ctrl.signal.aborted
      ? 'The bridge did not answer in time'
      : 'Cannot reach the bridge');
    err.detail = 'The request could not be completed (' + (e && e.message ? e.message : 'network error') + ').';
    throw err;
  } finally {
    clearTimeout(timer);
  }
  const ctype = (res.headers.get('Content-Type') || '').toLowerCase();
  if (!res.ok) {
    let problem = null;
    if (ctype.includes('json')) {
      try {
        problem = await res.json();
      } catch (_) {
        problem = null;
      }
    }
    const err = new ApiError(res.status, problem, statusText(res.status));
    const ra = res.headers.get('Retry-After');
    if (ra && /^\d+$/.test(ra)) err.retryAfter = Number(ra);
    if (res.status === 401 && opts.token === undefined && onUnauthorized) onUnauthorized(err);
    throw err;
  }
  if (res.status === 204 || res.status === 205) return null;
  if (opts.blob) return res.blob();
  if (opts.accept && opts.accept !== 'json') return res.text();
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch (_) {
    throw new ApiError(res.status, null, 'The bridge sent something that is not JSON');
  }
}

export const get = (path, query) => request(path, { query });
export const post = (path, body) => request(path, { method: 'POST', body });
export const del = (path) => request(path, { method: 'DELETE' });

// Check a token without keeping it: resolves, or throws ApiError (401 for a
// token that is not accepted).
export async function checkToken(token) {
  await request('/accounts', { token });
}
