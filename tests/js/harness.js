// Harness of the browser tests: the real parts, started as processes.
//
// - MongoDB: the `mongo-sim` binary (the workspace's in-memory replica set);
// - the gateway: the `mongo-sse` binary, `serve`, configured by environment variables;
// - the writer: real pymongo (`tests/js/writer.py`, in the `.venv` that `scripts/test` creates);
// - the reader: Debian's headless Chromium, driven by playwright-core;
// - a small reverse proxy in front of the gateway, for the path-prefix test and to inject 503s.
//
// Nothing here synchronizes by sleeping: every wait is for an observable thing (a line on a
// process's output, an HTTP answer, a DOM state) and has a deadline that fails the test with a
// message saying what was awaited.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const WAIT_MS = 30_000;

/** Chromium's flags here: without the background-networking ones, Chromium's own connections to
 * the outside are refused by this closed network and slow everything down. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const truthy = (v) => v === '1' || v === 'true';
export const REQUIRE_BROWSER = truthy(process.env.REQUIRE_BROWSER) || truthy(process.env.CI);

function target(name) {
  const dir = process.env.CARGO_TARGET_DIR ?? path.join(ROOT, 'target');
  return path.join(dir, process.env.MONGO_SSE_PROFILE ?? 'debug', name);
}

export const BINARIES = {
  gateway: process.env.MONGO_SSE_BIN ?? target('mongo-sse'),
  sim: process.env.MONGO_SIM_BIN ?? target('mongo-sim'),
  python: process.env.MONGO_SSE_PYTHON ?? path.join(ROOT, '.venv', 'bin', 'python'),
  chromium: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
};

/**
 * Why the browser tests cannot run here, or null. Without Chromium that is a loud SKIP, except
 * under `CI=true` or `REQUIRE_BROWSER=1`, where the caller fails instead. Missing binaries or
 * Python are never a skip: they mean the build step was forgotten.
 */
export function browserMissing() {
  return existsSync(BINARIES.chromium) ? null : `no Chromium at ${BINARIES.chromium} (apt-get install chromium, or set CHROMIUM_PATH)`;
}

export function requireBuilt() {
  for (const [what, file] of Object.entries({ gateway: BINARIES.gateway, sim: BINARIES.sim, python: BINARIES.python })) {
    if (!existsSync(file)) {
      throw new Error(
        `${what} not found at ${path.relative(ROOT, file) || file}: run \`cargo build -p mongo-sse --bin mongo-sse -p mongo-sim --bin mongo-sim\` and \`bash .ci/run\` (for the .venv) first`,
      );
    }
  }
}

/** Awaits `promise`, failing with `what` after `ms`. */
export async function within(ms, what, promise) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` (for conditions with no event to await, like a port accepting), failing with
 * `what` after `ms`. */
export async function eventually(what, check, ms = WAIT_MS, everyMs = 25) {
  const until = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

function collect(child, name) {
  const tail = [];
  const keep = (chunk) => {
    for (const line of String(chunk).split('\n')) {
      if (line) tail.push(line);
      if (tail.length > 200) tail.shift();
    }
    if (process.env.HARNESS_LOG) process.stderr.write(`[${name}] ${chunk}`);
  };
  child.stderr?.on('data', keep);
  return () => tail.join('\n');
}

async function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), 12_000);
  await once(child, 'exit');
  clearTimeout(killer);
}

/** mongo-sim on a free port; resolves once it printed its address. */
export async function startSim({ oplogMaxEvents } = {}) {
  const args = ['--bind', '127.0.0.1:0'];
  if (oplogMaxEvents) args.push('--oplog-max-events', String(oplogMaxEvents));
  const child = spawn(BINARIES.sim, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs = collect(child, 'sim');
  const rl = readline.createInterface({ input: child.stdout });
  const [line] = await within(WAIT_MS, 'mongo-sim to listen', once(rl, 'line'));
  const m = /listening on (\S+)/.exec(line);
  if (!m) throw new Error(`unexpected first line from mongo-sim: ${line}\n${logs()}`);
  return {
    addr: m[1],
    uri: `mongodb://${m[1]}/?replicaSet=rs0`,
    logs,
    stop: () => stop(child),
  };
}

/** The gateway (`mongo-sse serve`) on `port`, ready when `/readyz` says so. Can be stopped and
 * started again on the same port (the restart test). */
export function gateway({ mongoUri, db, port, env = {} }) {
  let child = null;
  let logs = () => '';
  const g = {
    port,
    origin: `http://127.0.0.1:${port}`,
    async start() {
      child = spawn(BINARIES.gateway, ['serve'], {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: {
          PATH: process.env.PATH,
          RUST_LOG: process.env.GATEWAY_LOG ?? 'warn',
          NO_COLOR: '1',
          SSE_AUTH: 'none',
          MONGODB_URI: mongoUri,
          MONGODB_DB: db,
          SSE_BIND: `127.0.0.1:${port}`,
          SSE_HEARTBEAT_SECS: '2',
          SSE_RETRY_MS: '500',
          // Every browser of the tests comes from 127.0.0.1.
          SSE_CONNECT_RATE_PER_IP: '0',
          ...env,
        },
      });
      logs = collect(child, `gateway:${port}`);
      const exited = once(child, 'exit').then(([code]) => {
        throw new Error(`gateway exited with ${code}\n${logs()}`);
      });
      await Promise.race([
        exited,
        eventually('the gateway to be ready', async () => (await fetch(`${g.origin}/readyz`)).ok),
      ]);
      exited.catch(() => {});
    },
    stop: () => stop(child),
    logs: () => logs(),
  };
  return g;
}

/** The pymongo writer (tests/js/writer.py). `insert(...)` resolves when the documents are in. */
export async function startWriter(mongoUri, db) {
  const child = spawn(BINARIES.python, [path.join(ROOT, 'tests', 'js', 'writer.py'), mongoUri, db], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const logs = collect(child, 'writer');
  const rl = readline.createInterface({ input: child.stdout });
  // One answer per command, in order: each command queues the resolver of its answer.
  const pending = [];
  const early = [];
  rl.on('line', (line) => {
    const a = JSON.parse(line);
    const p = pending.shift();
    if (p) p(a);
    else early.push(a);
  });
  const exited = once(child, 'exit').then(() => {
    throw new Error(`writer exited\n${logs()}`);
  });
  exited.catch(() => {});
  const next = async (what) => {
    const answer = early.length ? Promise.resolve(early.shift()) : new Promise((r) => pending.push(r));
    const a = await within(300_000, what, Promise.race([answer, exited]));
    if (!a.ok) throw new Error(`writer: ${a.error}`);
    return a;
  };
  await next('pymongo to connect');
  return {
    /** Inserts log lines `from .. from+count-1` of `workspace`/`workflow`. */
    insert(args) {
      child.stdin.write(`${JSON.stringify({ cmd: 'insert', ...args })}\n`);
      return next(`pymongo to insert ${args.count} lines`);
    },
    async stop() {
      child.stdin.end(`${JSON.stringify({ cmd: 'quit' })}\n`);
      await stop(child);
    },
  };
}

/**
 * A reverse proxy in front of the gateway, as a BFF would be: it serves the gateway under
 * `prefix` (stripping it) and can be told to answer the next stream requests itself, with a
 * status the gateway would send under load (503, 429) and its `Retry-After`.
 */
export async function startProxy(upstreamPort, prefix = '') {
  const faults = [];
  const seen = [];
  const outside = [];
  const streams = new Set();
  const server = http.createServer((req, res) => {
    if (prefix && !req.url.startsWith(`${prefix}/`)) {
      outside.push(req.url);
      res.writeHead(404, { 'content-type': 'text/plain' }).end('outside the prefix');
      return;
    }
    const url = req.url.slice(prefix.length);
    seen.push(url);
    if (url.startsWith('/v1/stream') && faults.length) {
      const f = faults.shift();
      f.hit();
      if (f.busy) {
        // The gateway's answer under load to a client that asked for text/event-stream.
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        const retry = f.retryMs;
        res.end(`retry: ${retry}\n\nevent: busy\ndata: ${JSON.stringify({ reason: 'catchup_busy', retry_ms: retry, message: 'injected by the test proxy' })}\n\n`);
        return;
      }
      res.writeHead(f.status, { 'content-type': 'application/json', 'retry-after': String(f.retryAfter), 'cache-control': 'no-store' });
      res.end(JSON.stringify({ error: f.code ?? 'catchup_busy', message: 'injected by the test proxy' }));
      return;
    }
    const up = http.request(
      { host: '127.0.0.1', port: upstreamPort, method: req.method, path: url, headers: req.headers },
      (upRes) => {
        res.writeHead(upRes.statusCode, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end('bad gateway');
    });
    req.pipe(up);
    if (url.startsWith('/v1/stream')) {
      streams.add(res);
      res.on('close', () => streams.delete(res));
    }
    res.on('close', () => up.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  const inject = (n, make) => {
    let hits = 0;
    let resolve;
    const all = new Promise((r) => {
      resolve = r;
    });
    for (let i = 0; i < n; i++) faults.push({ ...make(), hit: () => ++hits === n && resolve() });
    return all;
  };
  return {
    origin: `http://127.0.0.1:${port}`,
    base: `http://127.0.0.1:${port}${prefix}/`,
    seen,
    outside,
    /** The next `n` stream requests get `status` with `Retry-After: retryAfter` (seconds), as
     * a proxy or an older gateway answers under load. Resolves when all were sent. */
    fail: (n, status, retryAfter = 1, code) => inject(n, () => ({ status, retryAfter, code })),
    /** The next `n` stream requests get the gateway's `busy` stream with `retry: retryMs`. */
    busy: (n, retryMs) => inject(n, () => ({ busy: true, retryMs })),
    /** Ends every stream passing through (as a gateway or proxy restart would). */
    dropStreams() {
      for (const res of streams) res.destroy();
    },
    stop() {
      server.closeAllConnections();
      server.close();
    },
  };
}

/** Headless Chromium (Debian's), with a fresh profile. */
export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  const profile = mkdtempSync(path.join(tmpdir(), 'mongo-sse-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: BINARIES.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 760 },
    acceptDownloads: true,
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** A database name no other test uses. */
export function uniqueDb(prefix) {
  return `${prefix}_${process.pid}_${Date.now().toString(36)}`;
}
