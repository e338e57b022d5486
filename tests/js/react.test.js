// client/react.js with the real React and react-dom from npm, rendering into a jsdom document
// under Node's test runner. The stream is played by the fake EventSource, which counts the
// connections the bindings open.

import assert from 'node:assert/strict';
import { after, beforeEach, test } from 'node:test';

import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>', { url: 'http://gw.test/app/' });
globalThis.window = dom.window;
globalThis.document = dom.window.document;
globalThis.location = dom.window.location;
globalThis.navigator = dom.window.navigator;
globalThis.HTMLElement = dom.window.HTMLElement;
globalThis.IS_REACT_ACT_ENVIRONMENT = true;

const React = await import('react');
const { createRoot } = await import('react-dom/client');
const { SSEProvider, useSSE, useSSESubscription, withSSE } = await import('../../client/react.js');
const { createClient } = await import('../../client/sse-client.js');
const { FakeEventSource: ES, waitFor } = await import('./fakes.js');

const { act, createElement: h, StrictMode } = React;

const options = { EventSource: ES, storage: null, debounceMs: 1 };
const roots = [];

async function render(element) {
  const container = document.createElement('div');
  document.body.append(container);
  const root = createRoot(container);
  roots.push(root);
  await act(async () => root.render(element));
  return { container, root };
}

/** Runs `fn` (which makes the fake server send something) inside act, so React renders. */
const send = (fn) => act(async () => fn());

async function settle(what, check) {
  // The client debounces channel changes by a timer; let it fire inside act.
  await act(async () => {
    await waitFor(what, check);
  });
}

beforeEach(() => ES.reset());
after(async () => {
  for (const r of roots) await act(async () => r.unmount());
});

function Lines({ channels, maxItems = 3 }) {
  const { data, gap, status } = useSSESubscription(channels, { accumulate: true, maxItems });
  return h(
    'div',
    null,
    h('p', { className: 'status' }, status.state),
    h('p', { className: 'gap' }, gap ? gap.reason : ''),
    h('ul', null, data.map((e) => h('li', { key: `${e.id}/${e.doc._id}` }, e.doc.message))),
  );
}

function Latest({ channel }) {
  const { data } = useSSESubscription([channel]);
  return h('span', { className: 'latest' }, data ? data.doc.message : 'none');
}

const text = (container, sel) => [...container.querySelectorAll(sel)].map((n) => n.textContent);

test('StrictMode double mount: two components, one connection', async () => {
  const { container } = await render(
    h(StrictMode, null, h(SSEProvider, { options }, h(Lines, { channels: ['logs:w1:f1'] }), h(Latest, { channel: 'logs:w1:f2' }))),
  );
  await settle('a connection', () => ES.instances.length >= 1);
  assert.equal(ES.instances.length, 1, 'StrictMode mounts twice; the debounce makes it one connection');
  const es = ES.instances[0];
  assert.deepEqual(es.url.searchParams.getAll('channel'), ['logs:w1:f1', 'logs:w1:f2']);
  await send(() => es.accept());
  assert.deepEqual(text(container, '.status'), ['open']);
  await send(() => {
    for (let i = 1; i <= 5; i++) es.data(`c.${i}`, { channel: 'logs:w1:f1', op: 'insert', doc: { _id: i, message: `line ${i}` } });
    es.data('c.6', { channel: 'logs:w1:f2', op: 'insert', doc: { _id: 6, message: 'other workflow' } });
  });
  assert.deepEqual(text(container, 'li'), ['line 3', 'line 4', 'line 5'], 'accumulate keeps the newest maxItems');
  assert.deepEqual(text(container, '.latest'), ['other workflow']);
  await send(() => es.named('gap', 'c.7', { reason: 'history_lost', message: 'gone' }));
  assert.deepEqual(text(container, '.gap'), ['history_lost']);
  assert.equal(ES.instances.length, 1);
});

test('re-rendering with an equal channel array does not resubscribe; a new channel re-opens once', async () => {
  const client = createClient(options);
  let subscribeCalls = 0;
  const subscribe = client.subscribe;
  client.subscribe = (...args) => {
    subscribeCalls++;
    return subscribe(...args);
  };
  const { root } = await render(h(SSEProvider, { client }, h(Lines, { channels: ['logs:a'] })));
  await settle('a connection', () => ES.instances.length === 1);
  await send(() => ES.instances[0].accept());
  await act(async () => root.render(h(SSEProvider, { client }, h(Lines, { channels: ['logs:a'] }))));
  await act(async () => root.render(h(SSEProvider, { client }, h(Lines, { channels: ['logs:a'] }))));
  assert.equal(subscribeCalls, 1, 'effects ran inside act: an equal array did not resubscribe');
  assert.equal(ES.instances.length, 1);
  await send(() => ES.instances[0].data('c.1', { channel: 'logs:a', op: 'insert', doc: { _id: 1, message: 'x' } }));
  await act(async () => root.render(h(SSEProvider, { client }, h(Lines, { channels: ['logs:b', 'logs:a'] }))));
  await settle('a re-open', () => ES.instances.length === 2);
  assert.equal(ES.instances[1].url.searchParams.get('lastEventId'), 'c.1');
  await act(async () => root.unmount());
  await settle('the last subscriber gone closes the stream', () => ES.instances[1].readyState === 2);
  client.close();
});

test('useSSE follows the status; withSSE hands it to class components', async () => {
  class Badge extends React.Component {
    render() {
      const { sse, label } = this.props;
      return h('b', null, `${label}:${sse.status.state}:${sse.status.mode ?? '-'}`);
    }
  }
  const WithBadge = withSSE(Badge);
  assert.equal(WithBadge.displayName, 'withSSE(Badge)');
  function Status() {
    const { status } = useSSE();
    return h('i', null, status.state);
  }
  const { container } = await render(h(SSEProvider, { options }, h(WithBadge, { label: 'gw' }), h(Status), h(Latest, { channel: 'logs:z' })));
  await settle('a connection', () => ES.instances.length === 1);
  assert.deepEqual(text(container, 'b'), ['gw:connecting:-']);
  await send(() => ES.instances[0].accept());
  await send(() => ES.instances[0].named('mode', 'p.1', { mode: 'polling', interval_ms: 5000 }));
  assert.deepEqual(text(container, 'b'), ['gw:open:polling']);
  assert.deepEqual(text(container, 'i'), ['open']);
});

test('useSSE outside a provider says what is missing', async () => {
  function Orphan() {
    useSSE();
    return null;
  }
  const container = document.createElement('div');
  const root = createRoot(container, { onUncaughtError: () => {}, onCaughtError: () => {} });
  let error;
  class Boundary extends React.Component {
    static getDerivedStateFromError(e) {
      error = e;
      return { failed: true };
    }

    state = { failed: false };

    render() {
      return this.state.failed ? null : this.props.children;
    }
  }
  await act(async () => root.render(h(Boundary, null, h(Orphan))));
  assert.match(String(error), /no <SSEProvider>/);
  await act(async () => root.unmount());
});
