// Unit tests of client/sse-client.js in Node, with the server side played by the test through
// a fake EventSource and fetch. The real-browser behaviour is covered by browser.test.js.

import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { backoffMs, covers, createClient, minimalUnion, parseRetryAfter } from '../../client/sse-client.js';
import { FakeEventSource as ES, MemoryStorage, fakeFetch, waitFor } from './fakes.js';

const BASE = 'http://gw.test/app/';
globalThis.location = { href: BASE };

function make(opts = {}) {
  return createClient({
    EventSource: ES,
    storage: null,
    debounceMs: 1,
    initialBackoffMs: 10,
    maxBackoffMs: 80,
    random: () => 0.5,
    fetch: fakeFetch(() => ({ status: 200, headers: { 'content-type': 'text/event-stream' } })),
    ...opts,
  });
}

const doc = (id, extra = {}) => ({ _id: id, message: `m${id}`, ...extra });
const one = () => waitFor('one EventSource', () => ES.open.length === 1 && ES.open[0]);

beforeEach(() => ES.reset());

test('channel helpers: covers, minimal union, Retry-After, backoff', () => {
  assert.ok(covers('logs:w1', 'logs:w1:f1'));
  assert.ok(covers('logs:w1', 'logs:w1'));
  assert.ok(!covers('logs:w1', 'logs:w10'));
  assert.ok(!covers('logs:w1:f1', 'logs:w1'));
  assert.deepEqual(minimalUnion(['logs:w1:f1', 'logs:w1', 'logs:w2:a', 'logs:w1', 'logs:w10']), ['logs:w1', 'logs:w10', 'logs:w2:a']);
  assert.equal(parseRetryAfter('3'), 3000);
  assert.equal(parseRetryAfter(new Date(Date.now() + 5000).toUTCString(), Date.now()) > 3000, true);
  assert.equal(parseRetryAfter('soon'), null);
  assert.equal(parseRetryAfter(null), null);
  const o = { initialBackoffMs: 100, maxBackoffMs: 1000, random: () => 0.5 };
  assert.deepEqual([0, 1, 2, 3, 4, 10].map((a) => backoffMs(a, o)), [100, 200, 400, 800, 1000, 1000]);
  assert.equal(backoffMs(0, { ...o, random: () => 0 }), 50);
  assert.equal(backoffMs(0, { ...o, random: () => 0.999 }), 150);
});

test('subscribers in one tick share one EventSource for the union of their channels', async () => {
  const c = make({ backlog: 200 });
  const a = [];
  const w = [];
  c.subscribe('logs:w1:f1', (e) => a.push(e.doc._id));
  c.subscribe(['logs:w1'], (e) => w.push(e.doc._id));
  c.subscribe('logs:w2:f9', () => {});
  const es = await one();
  assert.deepEqual(es.url.searchParams.getAll('channel'), ['logs:w1', 'logs:w2:f9']);
  assert.equal(es.url.searchParams.get('backlog'), '200');
  assert.equal(es.url.pathname, '/app/v1/stream', 'relative to the page: works under a path prefix');
  assert.equal(c.getStatus().state, 'connecting');
  es.accept();
  assert.equal(c.getStatus().state, 'open');
  es.data('c.1', { channel: 'logs:w1:f1', op: 'insert', doc: doc(1) });
  es.data('c.2', { channel: 'logs:w1:f2', op: 'insert', doc: doc(2) });
  es.data('c.3', { channel: 'logs:w2:f9', op: 'insert', doc: doc(3) });
  assert.deepEqual(a, [1]);
  assert.deepEqual(w, [1, 2]);
  assert.equal(c.lastEventId, 'c.3');
  assert.equal(ES.instances.length, 1);
});

test('a change of channels re-opens once, from the last id, and drops nothing in between', async () => {
  const c = make();
  const got = [];
  const offA = c.subscribe('logs:a', (e) => got.push(e.doc._id));
  const first = await one();
  first.accept();
  first.data('c.1', { channel: 'logs:a', op: 'insert', doc: doc(1) });
  const offB = c.subscribe('logs:b', () => {});
  c.subscribe('logs:c', () => {});
  await waitFor('a second EventSource', () => ES.instances.length === 2);
  assert.equal(first.readyState, 2, 'the old one is closed');
  const second = ES.instances[1];
  assert.deepEqual(second.url.searchParams.getAll('channel'), ['logs:a', 'logs:b', 'logs:c']);
  assert.equal(second.url.searchParams.get('lastEventId'), 'c.1');
  assert.equal(second.url.searchParams.get('backlog'), null);
  first.data('c.2', { channel: 'logs:a', op: 'insert', doc: doc(2) }); // closed: ignored
  second.accept();
  second.data('c.2', { channel: 'logs:a', op: 'insert', doc: doc(2) });
  assert.deepEqual(got, [1, 2]);
  offB();
  offB(); // twice is harmless
  await waitFor('a third EventSource', () => ES.instances.length === 3);
  assert.deepEqual(ES.instances[2].url.searchParams.getAll('channel'), ['logs:a', 'logs:c']);
  offA();
  assert.equal(ES.instances.length, 3);
  c.close();
});

test('the last subscriber leaving closes the stream', async () => {
  const c = make();
  const off = c.subscribe('logs:a', () => {});
  const es = await one();
  es.accept();
  off();
  await waitFor('closed', () => es.readyState === 2);
  assert.equal(c.getStatus().state, 'idle');
});

test('duplicates are dropped by id; backlog rows sharing an id are not', async () => {
  const c = make();
  const got = [];
  c.subscribe('logs:a', (e) => got.push(`${e.id}/${e.doc._id}`));
  const es = await one();
  es.accept();
  for (const n of [1, 2, 3]) es.data('c.P', { channel: 'logs:a', op: 'insert', doc: doc(n) });
  es.data('c.4', { channel: 'logs:a', op: 'insert', doc: doc(4) });
  es.data('c.4', { channel: 'logs:a', op: 'insert', doc: doc(4) });
  es.data('c.5', { channel: 'logs:a', op: 'update', doc: doc(4) });
  assert.deepEqual(got, ['c.P/1', 'c.P/2', 'c.P/3', 'c.4/4', 'c.5/4']);
  assert.equal(c.stats.duplicates, 1);
});

test('gap events reach the subscribers of the affected channels', async () => {
  const c = make();
  const gaps = { a: [], b: [], w: [] };
  c.subscribe('logs:w1:a', () => {}, { onGap: (g) => gaps.a.push(g.reason) });
  c.subscribe('logs:w2:b', () => {}, { onGap: (g) => gaps.b.push(g.reason) });
  c.subscribe('logs:w1', () => {}, { onGap: (g) => gaps.w.push(g.reason) });
  const es = await one();
  es.accept();
  es.named('gap', 'c.9', { reason: 'history_lost', message: 'gone', last_event_id: 'c.1', resumed_at: 'c.9' });
  es.named('gap', null, { reason: 'invalidated', message: 'x', channels: ['logs:w1:a'] });
  assert.deepEqual(gaps, { a: ['history_lost', 'invalidated'], b: ['history_lost'], w: ['history_lost', 'invalidated'] });
  assert.equal(c.lastEventId, 'c.9');
});

test('mode events are part of the status every subscriber sees', async () => {
  const c = make();
  const seen = [];
  c.subscribe('logs:a', () => {}, { onStatus: (s) => seen.push(`${s.state}/${s.mode ?? '-'}`) });
  const es = await one();
  es.accept();
  es.named('mode', 'p.1', { mode: 'polling', interval_ms: 5000 });
  assert.equal(c.getStatus().intervalMs, 5000);
  es.named('mode', 'c.2', { mode: 'change_stream' });
  assert.deepEqual(seen, ['idle/-', 'connecting/-', 'open/change_stream', 'open/polling', 'open/change_stream']);
});

test('an ended stream: the browser retries when nothing arrived, the client re-opens from its id otherwise', async () => {
  const c = make();
  c.subscribe('logs:a', () => {});
  const es = await one();
  es.accept();
  es.drop();
  assert.equal(c.getStatus().state, 'reconnecting');
  assert.equal(ES.instances.length, 1, "nothing new since it opened: EventSource's own retry is exact");
  es.accept();
  es.data('c.7', { channel: 'logs:a', op: 'insert', doc: doc(7) });
  es.drop();
  await waitFor('a fresh EventSource', () => ES.instances.length === 2);
  assert.equal(es.readyState, 2);
  assert.equal(ES.instances[1].url.searchParams.get('lastEventId'), 'c.7', 'not the stale URL');
});

test('a busy event: status reconnecting with the reason, and the browser retries', async () => {
  const c = make();
  c.subscribe('logs:a', () => {});
  const es = await one();
  es.accept();
  es.named('busy', null, { reason: 'catchup_busy', retry_ms: 2345, message: 'come back later' });
  es.drop();
  const s = c.getStatus();
  assert.equal(s.state, 'reconnecting');
  assert.equal(s.reason, 'catchup_busy');
  assert.equal(s.retryInMs, 2345);
  assert.equal(ES.instances.length, 1);
});

test('a refused stream (503 with Retry-After) is probed and retried after the time it says', async () => {
  let refusals = 2;
  const fetch = fakeFetch(() =>
    refusals-- > 0
      ? { status: 503, headers: { 'content-type': 'application/json', 'retry-after': '1' }, body: { error: 'catchup_busy', message: 'busy' } }
      : { status: 200, headers: { 'content-type': 'text/event-stream' } },
  );
  const c = make({ fetch });
  c.subscribe('logs:a', () => {});
  const es = await one();
  es.refuse();
  await waitFor('the probe answer', () => c.getStatus().retryInMs != null);
  const s = c.getStatus();
  assert.equal(s.state, 'reconnecting');
  assert.equal(s.reason, 'catchup_busy');
  assert.ok(s.retryInMs >= 1000 && s.retryInMs <= 1250, `Retry-After honoured: ${s.retryInMs}`);
  assert.equal(fetch.calls[0].init.headers.Accept, 'application/json');
  await waitFor('the retry', () => ES.instances.length === 2, 3000);
  ES.instances[1].refuse();
  await waitFor('the second retry', () => ES.instances.length === 3, 3000);
  ES.instances[2].accept();
  assert.equal(c.getStatus().state, 'open');
});

test('without Retry-After the retries back off exponentially, capped', async () => {
  const fetch = fakeFetch(() => ({ status: 502, headers: { 'content-type': 'text/html' } }));
  const c = make({ fetch });
  c.subscribe('logs:a', () => {});
  const delays = [];
  for (let i = 0; i < 5; i++) {
    await waitFor(`EventSource ${i + 1}`, () => ES.instances.length === i + 1);
    ES.instances[i].refuse();
    await waitFor('a scheduled retry', () => c.getStatus().retryInMs != null && c.getStatus().state === 'reconnecting');
    delays.push(c.getStatus().retryInMs);
  }
  assert.deepEqual(delays, [10, 20, 40, 80, 80]);
  c.close();
});

test('a network error (no answer at all) is retried with backoff', async () => {
  const fetch = fakeFetch((_, __, n) => (n === 1 ? new TypeError('Failed to fetch') : { status: 200, headers: { 'content-type': 'text/event-stream' } }));
  const c = make({ fetch });
  c.subscribe('logs:a', () => {});
  (await one()).refuse();
  await waitFor('the retry', () => ES.instances.length === 2);
  assert.equal(c.getStatus().state, 'reconnecting');
});

test('an id the gateway cannot resume from: a gap for the subscribers, then a fresh start with the backlog', async () => {
  const fetch = fakeFetch(() => ({
    status: 400,
    headers: { 'content-type': 'application/json' },
    body: { error: 'unknown_last_event_id', message: 'MongoDB cannot resume from it' },
  }));
  const c = make({ fetch, lastEventId: 'c.OLD', backlog: 50 });
  const gaps = [];
  c.subscribe('logs:a', () => {}, { onGap: (g) => gaps.push(g) });
  const es = await one();
  assert.equal(es.url.searchParams.get('lastEventId'), 'c.OLD');
  es.refuse();
  await waitFor('a fresh EventSource', () => ES.instances.length === 2);
  assert.equal(gaps.length, 1);
  assert.equal(gaps[0].reason, 'unknown_last_event_id');
  assert.equal(gaps[0].last_event_id, 'c.OLD');
  assert.equal(ES.instances[1].url.searchParams.get('lastEventId'), null);
  assert.equal(ES.instances[1].url.searchParams.get('backlog'), '50');
});

test('a refusal that retrying cannot fix (403) closes with the reason', async () => {
  const fetch = fakeFetch(() => ({
    status: 403,
    headers: { 'content-type': 'application/json' },
    body: { error: 'forbidden_channels', message: 'not granted', channels: ['logs:a'] },
  }));
  const c = make({ fetch });
  c.subscribe('logs:a', () => {});
  (await one()).refuse();
  await waitFor('closed', () => c.getStatus().state === 'closed');
  assert.equal(c.getStatus().reason, 'forbidden_channels');
  assert.equal(c.getStatus().error, 'not granted');
  assert.equal(ES.instances.length, 1);
});

test('auth_expired: a new token from getToken is POSTed to /v1/session, then the stream resumes from the last id', async () => {
  const tokens = ['t1', 't2'];
  const fetch = fakeFetch(() => ({ status: 204, headers: {} }));
  const c = make({ fetch, getToken: async () => tokens.shift(), url: '../v1/stream' });
  c.subscribe('logs:a', () => {});
  const es = await one();
  assert.equal(fetch.calls.length, 1, 'the first token was sent before connecting');
  assert.equal(fetch.calls[0].url, 'http://gw.test/v1/session');
  assert.equal(fetch.calls[0].init.method, 'POST');
  assert.equal(fetch.calls[0].init.headers.Authorization, 'Bearer t1');
  assert.equal(fetch.calls[0].init.credentials, 'include');
  es.accept();
  es.data('c.5', { channel: 'logs:a', op: 'insert', doc: doc(5) });
  es.named('auth_expired', null, { reason: 'token_expired', expired_at: 1, last_event_id: 'c.5' });
  assert.equal(es.readyState, 2, 'closed before EventSource retries with the expired cookie');
  await waitFor('the resumed stream', () => ES.instances.length === 2);
  assert.equal(fetch.calls[1].init.headers.Authorization, 'Bearer t2');
  assert.equal(ES.instances[1].url.searchParams.get('lastEventId'), 'c.5');
});

test('auth_expired without getToken stays auth_expired', async () => {
  const c = make();
  c.subscribe('logs:a', () => {});
  const es = await one();
  es.accept();
  es.named('auth_expired', null, { reason: 'token_expired', message: 'expired' });
  assert.equal(c.getStatus().state, 'auth_expired');
  assert.equal(ES.open.length, 0);
});

test('a 401 on reconnect asks getToken for a new token', async () => {
  let n = 0;
  const fetch = fakeFetch((url, init) =>
    init.method === 'POST'
      ? { status: 204, headers: {} }
      : { status: 401, headers: { 'content-type': 'application/json' }, body: { error: 'invalid_token', message: 'expired' } },
  );
  const c = make({ fetch, getToken: async () => `tok${++n}` });
  c.subscribe('logs:a', () => {});
  (await one()).refuse();
  await waitFor('the resumed stream', () => ES.instances.length === 2);
  assert.deepEqual(
    fetch.calls.filter((x) => x.init.method === 'POST').map((x) => x.init.headers.Authorization),
    ['Bearer tok1', 'Bearer tok2'],
  );
});

test('the last id survives a reload in sessionStorage, per channel set', async () => {
  const storage = new MemoryStorage();
  const c1 = make({ storage });
  c1.subscribe(['logs:b', 'logs:a'], () => {});
  const es = await one();
  es.accept();
  es.data('c.42', { channel: 'logs:a', op: 'insert', doc: doc(1) });
  c1.close();
  ES.reset();
  const c2 = make({ storage, backlog: 10 });
  c2.subscribe(['logs:a', 'logs:b'], () => {});
  const again = await one();
  assert.equal(again.url.searchParams.get('lastEventId'), 'c.42');
  assert.equal(again.url.searchParams.get('backlog'), null);
  ES.reset();
  const c3 = make({ storage, backlog: 10 });
  c3.subscribe(['logs:other'], () => {});
  assert.equal((await one()).url.searchParams.get('backlog'), '10', 'another channel set starts from its backlog');
});

test('a subscriber that throws does not stop delivery to the others', async () => {
  const errors = [];
  const c = make({ onError: (e) => errors.push(e.message) });
  const got = [];
  c.subscribe('logs:a', () => {
    throw new Error('component bug');
  });
  c.subscribe('logs:a', (e) => got.push(e.id));
  const es = await one();
  es.accept();
  es.data('c.1', { channel: 'logs:a', op: 'insert', doc: doc(1) });
  assert.deepEqual(got, ['c.1']);
  assert.deepEqual(errors, ['component bug']);
  c.close();
});

test('suspend and resume (the back/forward cache)', async () => {
  const c = make();
  c.subscribe('logs:a', () => {});
  const es = await one();
  es.accept();
  es.data('c.3', { channel: 'logs:a', op: 'insert', doc: doc(3) });
  c.suspend();
  assert.equal(es.readyState, 2);
  c.resume();
  const again = await waitFor('re-opened', () => ES.instances.length === 2 && ES.instances[1]);
  assert.equal(again.url.searchParams.get('lastEventId'), 'c.3');
});
