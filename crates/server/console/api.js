// Talking to the server: the token endpoints and /admin/v1, the envelope, and the token's life in this tab.
//
// The token lives in sessionStorage (this tab only, gone when the tab closes). It is refreshed before it
// expires: the refresh is scheduled from the token's own lifetime (exp - iat) counted from when this tab
// received it, so a browser clock that differs from the server's does not matter. A call made after the
// scheduled time (a tab that slept) refreshes first.

const PREFIX = document.querySelector('meta[name="crm-auth-api-prefix"]')?.content ?? '';
const ADMIN = '/admin/v1';
const STORAGE_KEY = 'crm-auth-console';

/** An answer other than OK: the envelope's code, message and description. */
export class ApiError extends Error {
  constructor(code, message, description = '') {
    super(message);
    this.code = code;
    this.description = description;
  }
}

/** Codes that mean the token can no longer be used: the console signs out. */
const TOKEN_GONE = new Set(['INVALID_TOKEN', 'TOKEN_EXPIRED', 'SESSION_ENDED']);

let refreshTimer = null;
let refreshing = null;
let signedOutListener = () => {};

/** Calls `listener(error)` when the token stops working (refresh refused, session ended elsewhere). */
export function onSignedOut(listener) {
  signedOutListener = listener;
}

/** One request; resolves to the envelope's `data`, rejects with an ApiError. */
async function call(method, url, { token, body } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch {
    throw new ApiError('NETWORK', 'The server could not be reached. Check the connection and try again.');
  }
  let envelope;
  try {
    envelope = await response.json();
  } catch {
    throw new ApiError('UNREADABLE', `The server answered ${response.status} without a readable body.`);
  }
  const status = envelope && envelope.status;
  if (!status || status.code !== 'OK') {
    throw new ApiError(
      status?.code ?? 'UNKNOWN',
      status?.message || `The server answered ${response.status}.`,
      status?.description ?? '',
    );
  }
  return envelope.data;
}

/** The claims of a JWT, unverified (the server verifies; the console only reads names and times). */
export function claims(token) {
  const payload = token.split('.')[1] ?? '';
  const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
  const binary = atob(base64.padEnd(base64.length + ((4 - (base64.length % 4)) % 4), '='));
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

/** The stored token and when to refresh it, or null. */
function stored() {
  try {
    const value = JSON.parse(sessionStorage.getItem(STORAGE_KEY));
    return value && typeof value.token === 'string' && typeof value.refreshAt === 'number' ? value : null;
  } catch {
    return null;
  }
}

/**
 * Keeps `token` and schedules its refresh: before the end of its lifetime by 40% of it (at most five
 * minutes), so a 2-hour token is refreshed 5 minutes early and a 4-second one after 2.4 seconds.
 */
function keep(token) {
  const { iat, exp } = claims(token);
  const lifetime = Math.max(1, Number(exp) - Number(iat));
  const margin = Math.min(lifetime * 0.4, 300);
  const refreshAt = Date.now() + (lifetime - margin) * 1000;
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ token, refreshAt }));
  schedule(refreshAt);
}

function schedule(refreshAt) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    refresh().catch(() => {});
  }, Math.max(0, refreshAt - Date.now()));
}

/** The token's claims if this tab holds one (and its refresh scheduled), else null. */
export function resume() {
  const current = stored();
  if (!current) return null;
  schedule(current.refreshAt);
  try {
    return claims(current.token);
  } catch {
    forget();
    return null;
  }
}

/** A new token for the same session; one refresh at a time, whoever asks. */
function refresh() {
  if (!refreshing) {
    refreshing = (async () => {
      const current = stored();
      if (!current) throw new ApiError('INVALID_TOKEN', 'You are signed out.');
      try {
        const data = await call('POST', `${PREFIX}/authentication/token/refresh`, { token: current.token });
        keep(data.token);
      } catch (error) {
        if (TOKEN_GONE.has(error.code)) {
          forget();
          signedOutListener(error);
        } else {
          // The server could not be reached or was busy: try again shortly, the token is still good.
          schedule(Date.now() + 5000);
        }
        throw error;
      }
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/** The token to send now, refreshed first if its time has come. */
async function token() {
  const current = stored();
  if (!current) throw new ApiError('INVALID_TOKEN', 'You are signed out.');
  if (Date.now() >= current.refreshAt) {
    await refresh();
    return stored().token;
  }
  return current.token;
}

function forget() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  sessionStorage.clear();
}

/** Signs in with a password; resolves to the token's claims. */
export async function signIn(organisation, username, password) {
  const data = await call('POST', `${PREFIX}/authentication/token`, {
    body: { organisation, username, password },
  });
  keep(data.token);
  return claims(data.token);
}

/** Ends the session (release) and forgets the token, whatever the server answers. */
export async function signOut() {
  const current = stored();
  forget();
  if (current) {
    try {
      await call('POST', `${PREFIX}/authentication/token/release`, { token: current.token });
    } catch {
      // Forgotten here either way; a token that did not verify has no session to end.
    }
  }
}

/** `/admin/v1` + `path`, with `query`'s non-empty members as the query string. */
function adminUrl(path, query = {}) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(name, value);
  }
  const search = params.toString();
  return `${ADMIN}${path}${search ? `?${search}` : ''}`;
}

/** One call of the administration API as the signed-in user. */
async function admin(method, path, { query, body } = {}) {
  try {
    return await call(method, adminUrl(path, query), { token: await token(), body });
  } catch (error) {
    if (TOKEN_GONE.has(error.code)) {
      forget();
      signedOutListener(error);
    }
    throw error;
  }
}

export const get = (path, query) => admin('GET', path, { query });
export const post = (path, body) => admin('POST', path, { body });
export const patch = (path, body) => admin('PATCH', path, { body });
export const del = (path) => admin('DELETE', path);

/** A path segment. */
export const seg = (value) => encodeURIComponent(value);
