// Test doubles for the unit tests of client/sse-client.js and client/react.js, which run in
// Node (no browser): an EventSource whose server side the test plays, and a fetch that answers
// from a script. The browser tests use the real ones.

export class FakeEventSource {
  static instances = [];

  static reset() {
    FakeEventSource.instances = [];
  }

  static get open() {
    return FakeEventSource.instances.filter((e) => e.readyState !== 2);
  }

  constructor(url, init = {}) {
    this.url = new URL(url);
    this.withCredentials = !!init.withCredentials;
    this.readyState = 0;
    this.listeners = new Map();
    FakeEventSource.instances.push(this);
  }

  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }

  close() {
    this.readyState = 2;
  }

  // ---- the server side, played by the test ----
  accept() {
    this.readyState = 1;
    this.onopen?.({ type: 'open' });
  }

  data(id, payload) {
    if (this.readyState === 2) return;
    this.onmessage?.({ type: 'message', data: JSON.stringify(payload), lastEventId: id ?? '' });
  }

  named(type, id, payload) {
    if (this.readyState === 2) return;
    for (const fn of this.listeners.get(type) ?? []) fn({ type, data: JSON.stringify(payload), lastEventId: id ?? '' });
  }

  /** The stream ended; the browser would retry (readyState CONNECTING). */
  drop() {
    this.readyState = 0;
    this.onerror?.({ type: 'error' });
  }

  /** A non-200 or a wrong content type: the browser gives up (readyState CLOSED). */
  refuse() {
    this.readyState = 2;
    this.onerror?.({ type: 'error' });
  }
}

/** `answers`: a function (url, init) -> {status, headers, body} | Error, called per request. */
export function fakeFetch(answers) {
  const calls = [];
  const fn = async (url, init = {}) => {
    calls.push({ url: String(url), init });
    const a = await answers(String(url), init, calls.length);
    if (a instanceof Error) throw a;
    const headers = new Map(Object.entries(a.headers ?? {}).map(([k, v]) => [k.toLowerCase(), String(v)]));
    return {
      ok: a.status >= 200 && a.status < 300,
      status: a.status,
      headers: { get: (k) => headers.get(k.toLowerCase()) ?? null },
      json: async () => a.body,
    };
  };
  fn.calls = calls;
  return fn;
}

export class MemoryStorage {
  constructor() {
    this.map = new Map();
  }

  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }

  setItem(k, v) {
    this.map.set(k, String(v));
  }

  removeItem(k) {
    this.map.delete(k);
  }
}

/** Polls `check` until it is truthy: for the client's own timers (debounce, backoff), which
 * the tests set to a few milliseconds. Fails with `what` after `ms`. */
export async function waitFor(what, check, ms = 5000) {
  const until = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
