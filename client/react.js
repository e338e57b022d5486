// React bindings of the mongo-sse client: the API the SSE-gateway design names.
//
//   <SSEProvider options={{url: 'v1/stream'}}>…</SSEProvider>   one client (one EventSource) per tree
//   const {client, status} = useSSE();
//   const {data, gap, status} = useSSESubscription(['logs:w1:f1'], {accumulate: true, maxItems: 500});
//   export default withSSE(MyClassComponent);                   props.sse = {client, status}
//
// Written without JSX and importing `react` by name, so it runs with no build step: React is a
// peer, resolved by the page's bundler or an import map (`"react": "/vendor/react.mjs"`).
//
// Why subscriptions live in effects: StrictMode mounts, unmounts and mounts again every
// component in development. Each subscription is undone and redone within the same tick, and
// the client debounces changes to its channel union, so the page still opens one connection,
// not two; the provider's client opens nothing until someone subscribes.

import { createContext, createElement, useContext, useEffect, useRef, useState, useSyncExternalStore } from 'react';

import { createClient } from './sse-client.js';

const SSEContext = createContext(null);

/**
 * Provides one client to its subtree: `client` (made with `createClient`, e.g. shared with
 * non-React code), or `options` to make one for the provider's lifetime.
 */
export function SSEProvider({ client = null, options = undefined, children = null }) {
  // A lazy initializer, so re-renders keep the same client. StrictMode may call it twice and
  // keep one: the other has no subscriber and so never connects.
  const [own] = useState(() => (client ? null : createClient(options)));
  return createElement(SSEContext.Provider, { value: client ?? own }, children);
}

/** The provider's client and its current status (re-renders when the status changes). */
export function useSSE() {
  const client = useContext(SSEContext);
  if (!client) throw new Error('useSSE: no <SSEProvider> above this component');
  const status = useSyncExternalStore(client.onStatus, client.getStatus, client.getStatus);
  return { client, status };
}

function channelKey(channels) {
  const list = (Array.isArray(channels) ? channels : [channels]).filter(Boolean);
  return [...new Set(list)].sort().join('\n');
}

/**
 * Subscribes the component to `channels` while it is mounted.
 *
 * Returns `{data, gap, status, clearGap}`: `data` is the latest event `{id, channel, op, doc}`
 * (or null), or with `accumulate: true` the events so far, oldest first, at most `maxItems`
 * (the oldest are dropped); `gap` the last `gap` that concerns these channels. `onEvent` and
 * `onGap`, if given, are called for each (the latest functions passed, without resubscribing).
 * A new array with the same channels does not resubscribe.
 */
export function useSSESubscription(channels, { accumulate = false, maxItems = 500, onEvent, onGap, enabled = true } = {}) {
  const { client, status } = useSSE();
  const key = channelKey(channels);
  const [state, setState] = useState(() => ({ data: accumulate ? [] : null, gap: null }));
  const latest = useRef(null);
  latest.current = { accumulate, maxItems, onEvent, onGap };

  useEffect(() => {
    if (!enabled || !key) return undefined;
    return client.subscribe(
      key.split('\n'),
      (ev) => {
        const o = latest.current;
        o.onEvent?.(ev);
        setState((s) => {
          if (!o.accumulate) return { ...s, data: ev };
          const prev = Array.isArray(s.data) ? s.data : [];
          const next = prev.length >= o.maxItems ? prev.slice(prev.length - o.maxItems + 1) : prev.slice();
          next.push(ev);
          return { ...s, data: next };
        });
      },
      {
        onGap: (gap) => {
          latest.current.onGap?.(gap);
          setState((s) => ({ ...s, gap }));
        },
      },
    );
  }, [client, key, enabled]);

  const clearGap = () => setState((s) => ({ ...s, gap: null }));
  return { data: state.data, gap: state.gap, status, clearGap };
}

/** For class components: renders `Component` with an `sse` prop, `{client, status}`. */
export function withSSE(Component) {
  function WithSSE(props) {
    const sse = useSSE();
    return createElement(Component, { ...props, sse });
  }
  WithSSE.displayName = `withSSE(${Component.displayName || Component.name || 'Component'})`;
  return WithSSE;
}
