// mongo-sse browser client: one EventSource per page for every component's channels.
//
// Why one connection: browsers allow six HTTP/1.1 connections per origin, and a page made of
// micro-frontends would exhaust them with one EventSource each. So components subscribe here,
// and the client keeps a single stream open for the union of their channels, re-opened from
// the last event id when that union changes (debounced, so a burst of mounts costs one
// reconnect, and nothing is lost or repeated across it: the gateway resumes exactly after the id).
//
// What a plain EventSource does not do, and this does:
// - after a non-200 answer or a wrong content type (a proxy's 503, a 429, an HTML error page)
//   EventSource gives up for good (readyState CLOSED). We then probe the URL with fetch to learn
//   the status and Retry-After, and reconnect ourselves with exponential backoff and jitter;
// - a `busy` event (the gateway's way to shed load without breaking EventSource) sets the status
//   to `reconnecting`; the browser's own retry, paced by the gateway's `retry:`, does the rest;
// - EventSource retries with the URL it was created with. Ours carries `lastEventId=` (a reload
//   cannot set the Last-Event-ID header, and the gateway lets the query win), so once newer ids
//   have arrived, its retry would replay from a stale id. We then reopen with a fresh URL;
// - `auth_expired`: get a new token from `getToken()`, POST it to `/v1/session` (the cookie the
//   EventSource sends), resume from the last id;
// - `gap` events go to the subscribers of the affected channels;
// - de-duplication by event id as a safety net, and the last id kept in sessionStorage so a
//   reload resumes through `lastEventId` with nothing lost or doubled.
//
// Plain ES module, no dependencies, no build step.

const DEFAULTS = {
  url: 'v1/stream',
  sessionUrl: null,
  token: null,
  getToken: null,
  withCredentials: false,
  backlog: 0,
  lastEventId: null,
  storage: undefined,
  storageKey: 'mongo-sse',
  debounceMs: 30,
  initialBackoffMs: 1000,
  maxBackoffMs: 30000,
  dedupeWindow: 4096,
  EventSource: null,
  fetch: null,
  random: Math.random,
  onError: null,
};

/** The statuses a subscriber can see, in `status.state`. */
export const STATES = Object.freeze(['idle', 'connecting', 'open', 'reconnecting', 'closed', 'auth_expired']);

/** Whether subscribing to `sub` delivers events of channel `ch` (`logs:w1` covers `logs:w1:f1`). */
export function covers(sub, ch) {
  return ch === sub || (ch.length > sub.length && ch.startsWith(sub) && ch[sub.length] === ':');
}

/** The smallest set of channels that covers all of `channels` (the gateway delivers an event once
 * per connection anyway, but each channel counts towards `SSE_MAX_CHANNELS`). */
export function minimalUnion(channels) {
  const sorted = [...new Set(channels)].sort((a, b) => a.length - b.length || (a < b ? -1 : 1));
  const out = [];
  for (const ch of sorted) if (!out.some((s) => covers(s, ch))) out.push(ch);
  return out.sort();
}

/** Milliseconds from a Retry-After value (seconds or an HTTP date), or null. */
export function parseRetryAfter(value, now = Date.now()) {
  if (value == null || value === '') return null;
  const s = String(value).trim();
  if (/^\d+$/.test(s)) return Number(s) * 1000;
  const at = Date.parse(s);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/** Exponential backoff with jitter: `initial * 2^attempt`, capped, times a random factor in
 * [0.5, 1.5) so that a gateway restart does not bring every browser back in the same instant. */
export function backoffMs(attempt, { initialBackoffMs, maxBackoffMs, random = Math.random }) {
  const base = Math.min(maxBackoffMs, initialBackoffMs * 2 ** Math.min(attempt, 20));
  return Math.round(base * (0.5 + random()));
}

function defaultStorage() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null; // sessionStorage access throws in sandboxed frames without allow-same-origin
  }
}

function absolute(url) {
  const base = globalThis.document?.baseURI ?? globalThis.location?.href;
  return base ? new URL(url, base) : new URL(url);
}

/**
 * Creates a client. Nothing connects until the first `subscribe`.
 *
 * Options: `url` (the stream endpoint, default `v1/stream` relative to the page, so it works under
 * a proxy path prefix), `sessionUrl` (default: `session` beside `url`), `token` (POSTed to the
 * session endpoint before connecting), `getToken` (async, called when the token expired or was
 * refused), `withCredentials` (cross-origin cookies), `backlog` (rows to ask for when there is no
 * id to resume from), `lastEventId` (resume from this id instead of the stored one), `storage`
 * (a Storage, or null to keep nothing; default sessionStorage), `storageKey`.
 */
export function createClient(options = {}) {
  const o = { ...DEFAULTS, ...options };
  const ES = o.EventSource ?? globalThis.EventSource;
  const doFetch = o.fetch ?? globalThis.fetch?.bind(globalThis);
  const storage = o.storage === undefined ? defaultStorage() : o.storage;
  const streamUrl = () => absolute(o.url);
  const sessionUrl = () => (o.sessionUrl ? absolute(o.sessionUrl) : new URL('session', streamUrl()));

  const subs = new Set(); // {channels, onEvent, onGap, onStatus}
  const statusListeners = new Set();
  let status = { state: 'idle', mode: null, intervalMs: null, reason: null, retryInMs: null, error: null };
  let es = null; // the EventSource in use
  let openedWith = null; // {key, channels, lastId} of `es`
  let lastId = o.lastEventId ?? null;
  let lastIdFromOption = o.lastEventId != null;
  let attempt = 0;
  let reopenTimer = null;
  let debounceTimer = null;
  let probe = null; // AbortController of a running fetch probe
  let tokenSent = false;
  let closed = false;
  let suspended = false;
  let generation = 0; // of open() calls: after an await, only the latest one goes on
  const seen = new Map(); // dedupe key -> true, in insertion order
  const stats = { connections: 0, events: 0, duplicates: 0, gaps: 0 };

  const unionKey = (chs) => chs.join(',');
  const storeKey = `${o.storageKey}:last-event-id`;

  function loadStoredId(key) {
    if (!storage) return null;
    try {
      const map = JSON.parse(storage.getItem(storeKey) || '{}');
      return typeof map[key] === 'string' ? map[key] : null;
    } catch {
      return null;
    }
  }

  function storeId(key, id) {
    if (!storage) return;
    try {
      const map = JSON.parse(storage.getItem(storeKey) || '{}');
      delete map[key];
      map[key] = id;
      const keys = Object.keys(map);
      for (const k of keys.slice(0, Math.max(0, keys.length - 16))) delete map[k];
      storage.setItem(storeKey, JSON.stringify(map));
    } catch {
      // Quota or privacy mode: resuming after a reload is then best effort (backlog).
    }
  }

  function setStatus(patch) {
    const next = { ...status, ...patch };
    if (Object.keys(next).every((k) => next[k] === status[k])) return;
    status = next;
    const snapshot = status;
    for (const l of [...statusListeners]) safe(l, snapshot);
    for (const s of [...subs]) if (s.onStatus) safe(s.onStatus, snapshot);
  }

  function safe(fn, ...args) {
    try {
      fn(...args);
    } catch (e) {
      // One subscriber's bug must not stop delivery to the others: report it (to the page's
      // error handlers, like an uncaught error would be) and go on.
      if (o.onError) o.onError(e);
      else if (typeof globalThis.reportError === 'function') globalThis.reportError(e);
      else
        setTimeout(() => {
          throw e;
        });
    }
  }

  function currentChannels() {
    const all = [];
    for (const s of subs) all.push(...s.channels);
    return minimalUnion(all);
  }

  function clearTimers() {
    clearTimeout(reopenTimer);
    reopenTimer = null;
    if (probe) probe.abort();
    probe = null;
  }

  function closeSource() {
    if (es) {
      es.close();
      es = null;
    }
  }

  function rememberId(id) {
    if (!id) return;
    lastId = id;
    if (openedWith) storeId(openedWith.key, id);
  }

  function urlFor(channels, fromId) {
    const u = streamUrl();
    for (const ch of channels) u.searchParams.append('channel', ch);
    if (fromId) u.searchParams.set('lastEventId', fromId);
    else if (o.backlog > 0) u.searchParams.set('backlog', String(o.backlog));
    return u;
  }

  async function ensureSession(force) {
    if (tokenSent && !force) return true;
    let token = force ? null : o.token;
    if (!token && o.getToken) token = await o.getToken();
    if (!token) return !force && !o.getToken;
    const r = await doFetch(sessionUrl(), {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}` },
      credentials: 'include',
    });
    if (!r.ok) throw new Error(`POST ${sessionUrl().pathname}: ${r.status}`);
    o.token = token;
    tokenSent = true;
    return true;
  }

  /** (Re)opens the stream for the current union, from the last id. */
  async function open() {
    const my = ++generation;
    clearTimers();
    closeSource();
    const channels = currentChannels();
    if (closed || suspended) return;
    if (channels.length === 0) {
      openedWith = null;
      setStatus({ state: 'idle', retryInMs: null });
      return;
    }
    const key = unionKey(channels);
    if (!lastId && !lastIdFromOption) lastId = loadStoredId(key);
    lastIdFromOption = false;
    if ((o.token || o.getToken) && !tokenSent) {
      try {
        await ensureSession(false);
      } catch (e) {
        return retryLater(null, String(e));
      }
      if (closed || suspended || my !== generation) return;
    }
    const url = urlFor(channels, lastId);
    openedWith = { key, channels, lastId };
    storeIdIfNew(key);
    setStatus({ state: stats.connections === 0 ? 'connecting' : 'reconnecting', retryInMs: null });
    stats.connections++;
    const source = new ES(url.href, { withCredentials: !!o.withCredentials });
    es = source;
    const mine = (fn) => (ev) => {
      if (es === source) fn(ev);
    };
    source.onopen = mine(() => {
      setStatus({ state: 'open', reason: null, error: null, retryInMs: null, mode: 'change_stream', intervalMs: null });
    });
    source.onmessage = mine(onData);
    source.addEventListener('gap', mine(onGapEvent));
    source.addEventListener('mode', mine(onMode));
    source.addEventListener('busy', mine(onBusy));
    source.addEventListener('auth_expired', mine(onAuthExpired));
    source.onerror = mine(() => onError(source));
  }

  function storeIdIfNew(key) {
    if (lastId) storeId(key, lastId);
  }

  function onData(ev) {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    const id = ev.lastEventId || null;
    // Backlog rows share one id (the position the connection subscribed at), so the document
    // id is part of the key.
    const dk = `${id}\u0000${msg?.doc?._id ?? ''}\u0000${msg?.op ?? ''}`;
    if (id && seen.has(dk)) {
      stats.duplicates++;
      return;
    }
    if (id) {
      seen.set(dk, true);
      if (seen.size > o.dedupeWindow) seen.delete(seen.keys().next().value);
    }
    rememberId(id);
    attempt = 0;
    stats.events++;
    const event = { id, channel: msg.channel, op: msg.op, doc: msg.doc };
    for (const s of [...subs]) {
      if (s.channels.some((c) => covers(c, event.channel))) safe(s.onEvent, event);
    }
  }

  function onGapEvent(ev) {
    let gap;
    try {
      gap = JSON.parse(ev.data);
    } catch {
      gap = { reason: 'unknown', message: String(ev.data) };
    }
    rememberId(ev.lastEventId || null);
    stats.gaps++;
    deliverGap(gap);
  }

  function deliverGap(gap) {
    const affected = Array.isArray(gap.channels) ? gap.channels : null;
    for (const s of [...subs]) {
      if (!s.onGap) continue;
      if (!affected || s.channels.some((c) => affected.some((a) => covers(c, a) || covers(a, c)))) {
        safe(s.onGap, gap);
      }
    }
  }

  function onMode(ev) {
    try {
      const m = JSON.parse(ev.data);
      rememberId(ev.lastEventId || null);
      setStatus({ mode: m.mode ?? null, intervalMs: m.interval_ms ?? null });
    } catch {
      // ignore a malformed mode event
    }
  }

  function onBusy(ev) {
    let b = {};
    try {
      b = JSON.parse(ev.data);
    } catch {
      // keep defaults
    }
    // The gateway closes the stream next; EventSource reconnects after its `retry:`.
    setStatus({ state: 'reconnecting', reason: b.reason ?? 'busy', retryInMs: b.retry_ms ?? null, error: b.message ?? null });
  }

  async function onAuthExpired(ev) {
    let info = {};
    try {
      info = JSON.parse(ev.data);
    } catch {
      // keep defaults
    }
    if (!lastId && info.last_event_id) rememberId(info.last_event_id);
    // Stop EventSource from reconnecting with the expired cookie (it would get a 401).
    closeSource();
    setStatus({ state: 'auth_expired', reason: info.reason ?? 'token_expired', error: info.message ?? null, retryInMs: null });
    await refreshAndReopen();
  }

  async function refreshAndReopen() {
    if (!o.getToken) return; // stays `auth_expired` until the page reloads or calls reconnect()
    try {
      await ensureSession(true);
    } catch (e) {
      setStatus({ state: 'auth_expired', error: String(e) });
      return;
    }
    if (!closed && !suspended) open();
  }

  function onError(source) {
    if (source.readyState === 0 /* CONNECTING: the browser retries by itself */) {
      if (openedWith && lastId !== openedWith.lastId) {
        // Its URL names an older id than we have (the query wins over Last-Event-ID at the
        // gateway): reopen with ours instead, or it would replay what we already have.
        closeSource();
        retryLater(null, 'stream_ended', true);
        return;
      }
      // Nothing arrived since it opened, so its own retry (paced by `retry:`) is exact.
      setStatus({ state: 'reconnecting' });
      return;
    }
    // CLOSED: a non-200 or wrong content type. Find out why, then come back ourselves.
    closeSource();
    probeAndRetry();
  }

  async function probeAndRetry() {
    if (!doFetch) return retryLater(null, 'connection refused');
    setStatus({ state: 'reconnecting' });
    const controller = new AbortController();
    probe = controller;
    const url = urlFor(openedWith?.channels ?? currentChannels(), lastId);
    let r;
    try {
      r = await doFetch(url.href, {
        headers: { Accept: 'application/json' },
        credentials: o.withCredentials ? 'include' : 'same-origin',
        signal: controller.signal,
        cache: 'no-store',
      });
    } catch (e) {
      if (controller.signal.aborted && probe !== controller) return;
      probe = null;
      return retryLater(null, 'network error');
    }
    if (probe !== controller) return;
    probe = null;
    const type = r.headers.get('content-type') || '';
    if (r.ok && type.startsWith('text/event-stream')) {
      controller.abort(); // the gateway is fine again: open the real stream at once
      return retryLater(0, null);
    }
    let body = null;
    try {
      if (type.includes('json')) body = await r.json();
      else controller.abort();
    } catch {
      // ignore
    }
    const code = body?.error ?? null;
    const message = body?.message ?? `HTTP ${r.status}`;
    if (r.status === 401) {
      setStatus({ state: 'auth_expired', reason: code ?? 'unauthorized', error: message });
      return refreshAndReopen();
    }
    if (r.status === 400 && (code === 'unknown_last_event_id' || code === 'invalid_last_event_id')) {
      // The id cannot be resumed from (older than MongoDB's history, or corrupted storage):
      // say so to the subscribers, then start again from now (with the backlog, if any).
      const gap = { reason: code, message, last_event_id: lastId, resumed_at: null };
      lastId = null;
      if (openedWith) storeId(openedWith.key, '');
      stats.gaps++;
      deliverGap(gap);
      return retryLater(0, null);
    }
    if (r.status >= 400 && r.status < 500 && r.status !== 408 && r.status !== 429) {
      // Retrying cannot fix a bad request or a refused channel.
      setStatus({ state: 'closed', reason: code ?? `http_${r.status}`, error: message, retryInMs: null });
      return;
    }
    retryLater(parseRetryAfter(r.headers.get('retry-after')), code ?? (r.ok ? 'bad_content_type' : `http_${r.status}`), false, message);
  }

  /** Schedules a reopen: after `retryAfter` ms (plus up to 25% jitter) when the server said, else
   * after the next backoff step. `soon`: the stream just ended normally; come back after a short
   * jittered pause rather than a backoff step. */
  function retryLater(retryAfter, reason, soon = false, message = null) {
    clearTimeout(reopenTimer);
    if (closed || suspended) return;
    let delay;
    if (retryAfter != null) delay = retryAfter + Math.round(retryAfter * 0.25 * o.random());
    else if (soon) delay = Math.round(o.initialBackoffMs * (0.25 + 0.5 * o.random()));
    else delay = backoffMs(attempt++, o);
    setStatus({ state: 'reconnecting', reason, retryInMs: delay, error: message });
    reopenTimer = setTimeout(() => {
      reopenTimer = null;
      open();
    }, delay);
  }

  function scheduleReopen() {
    clearTimeout(debounceTimer);
    debounceTimer = setTimeout(() => {
      debounceTimer = null;
      const channels = currentChannels();
      const key = unionKey(channels);
      if (openedWith && openedWith.key === key && (es || reopenTimer || probe)) return;
      if (!openedWith && channels.length === 0 && !es) return;
      open();
    }, o.debounceMs);
  }

  return {
    /**
     * Subscribes `onEvent({id, channel, op, doc})` to `channels` (a string or an array).
     * `onGap(gap)` hears about lost history on those channels, `onStatus(status)` about the
     * connection. Returns the unsubscribe function.
     */
    subscribe(channels, onEvent, { onGap, onStatus } = {}) {
      const list = (Array.isArray(channels) ? channels : [channels]).filter(Boolean);
      const sub = { channels: list, onEvent, onGap, onStatus };
      subs.add(sub);
      scheduleReopen();
      if (onStatus) safe(onStatus, status);
      let done = false;
      return () => {
        if (done) return;
        done = true;
        subs.delete(sub);
        scheduleReopen();
      };
    },
    /** The current status: `{state, mode, intervalMs, reason, retryInMs, error}`. */
    getStatus: () => status,
    /** Calls `listener(status)` on every change; returns the function that stops it. */
    onStatus(listener) {
      statusListeners.add(listener);
      return () => statusListeners.delete(listener);
    },
    /** The id the next connection resumes from. */
    get lastEventId() {
      return lastId;
    },
    /** The channels of the open (or opening) stream. */
    get channels() {
      return openedWith?.channels ?? [];
    },
    /** Counters: connections opened, events delivered, duplicates dropped, gaps. */
    get stats() {
      return { ...stats };
    },
    /** Reconnects now (e.g. after the page refreshed the token itself). */
    reconnect() {
      closed = false;
      attempt = 0;
      open();
    },
    /** Closes the stream until `resume()` (the page going into the back/forward cache). */
    suspend() {
      suspended = true;
      clearTimers();
      closeSource();
    },
    resume() {
      if (!suspended) return;
      suspended = false;
      if (subs.size) open();
    },
    /** Closes for good. */
    close() {
      closed = true;
      clearTimeout(debounceTimer);
      clearTimers();
      closeSource();
      setStatus({ state: 'closed', reason: 'closed', retryInMs: null });
    },
  };
}
