// The live logs page and the client library in real headless Chromium, against the real
// gateway and mongo-sim, with pymongo writing. Run: `npm test` (after building the binaries),
// or all of CI with `bash scripts/test`.

import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  REQUIRE_BROWSER,
  ROOT,
  WAIT_MS,
  browserMissing,
  freePort,
  gateway,
  launchBrowser,
  requireBuilt,
  startProxy,
  startSim,
  startWriter,
  uniqueDb,
} from './harness.js';

export const ARTIFACTS = path.join(ROOT, 'target', 'browser-artifacts');
const EXPECTED_TESTS = 13;
let ran = 0;

const missing = browserMissing();
if (missing && REQUIRE_BROWSER) {
  test('Chromium is installed (REQUIRE_BROWSER=1 / CI=true)', () => {
    assert.fail(`browser tests cannot run: ${missing}; under CI=true or REQUIRE_BROWSER=1 that is a failure, not a skip`);
  });
} else if (missing) {
  console.log(`\n#### SKIP: browser tests (${EXPECTED_TESTS} cases): ${missing} ####\n`);
  test(`browser tests (SKIP: ${missing})`, { skip: missing }, () => {});
} else {
  describe('logs page in Chromium', () => suite());
}

/** Installed before any page script: records every status the page shows and every CSP
 * violation, so transient states (a 503 retried in a second) cannot be missed. */
function initScript() {
  window.__states = [];
  window.__csp = [];
  document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  const watch = () => {
    const el = document.getElementById('status');
    if (!el) return false;
    const push = () => {
      const s = `${el.dataset.state}|${el.textContent.trim()}`;
      if (window.__states.at(-1) !== s) window.__states.push(s);
    };
    push();
    new MutationObserver(push).observe(el, { attributes: true, childList: true, subtree: true, characterData: true });
    return true;
  };
  if (!watch()) document.addEventListener('DOMContentLoaded', watch);
}

function suite() {
  let sim;
  let gw;
  let writer;
  let browser;
  const db = uniqueDb('browser');

  before(async () => {
    requireBuilt();
    mkdirSync(ARTIFACTS, { recursive: true });
    sim = await startSim();
    gw = gateway({ mongoUri: sim.uri, db, port: await freePort() });
    await gw.start();
    writer = await startWriter(sim.uri, db);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await writer?.stop();
    await gw?.stop();
    await sim?.stop();
    // A run over the whole file must have run every case (a filtered run by name need not).
    const filtered = process.execArgv.some((a) => a.startsWith('--test-name-pattern') || a.startsWith('--test-only'));
    if (!filtered) assert.ok(ran >= EXPECTED_TESTS, `expected at least ${EXPECTED_TESTS} browser tests to run, ran ${ran}`);
    console.log(`browser tests run: ${ran}`);
  });

  async function openPage(url) {
    const page = await browser.context.newPage();
    page.errors = [];
    page.on('pageerror', (e) => page.errors.push(String(e)));
    page.on('console', (m) => {
      if (m.type() === 'error') page.errors.push(m.text());
    });
    await page.addInitScript(initScript);
    const response = await page.goto(url);
    return { page, response };
  }

  const lineCount = (page) => page.evaluate(() => Number(document.getElementById('log').dataset.lines));

  async function waitLines(page, n, timeout = WAIT_MS) {
    await page.waitForFunction((n) => Number(document.getElementById('log').dataset.lines) >= n, n, { timeout, polling: 'raf' });
  }

  async function waitState(page, state, timeout = WAIT_MS) {
    await page.waitForFunction((s) => document.getElementById('status').dataset.state === s, state, { timeout, polling: 'raf' });
  }

  /** Every line of the virtual list, read from the DOM by scrolling through it. */
  async function domLines(page) {
    // Pause following (as a reader would) so the list stays where it is scrolled to.
    const wasFollowing = (await page.textContent('#follow')) === 'Pause';
    if (wasFollowing) await page.click('#follow');
    const out = await readRows(page);
    if (wasFollowing) await page.click('#follow');
    return out;
  }

  async function readRows(page) {
    return page.evaluate(async () => {
      const log = document.getElementById('log');
      const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
      const rendered = async () => {
        // Wait for the frame that rendered the rows of the current scroll position.
        for (let i = 0; i < 30; i++) {
          await frame();
          const rows = [...document.querySelectorAll('#rows .row:not([hidden])')];
          const first = Math.floor(log.scrollTop / 22);
          if (!rows.length) return rows;
          const lo = Number(rows[0].dataset.index);
          const hi = Number(rows.at(-1).dataset.index);
          if (lo <= first && hi >= Math.min(first + Math.floor(log.clientHeight / 22), Number(log.dataset.shown) - 1)) return rows;
        }
        throw new Error('the list did not render the scrolled-to rows');
      };
      const out = new Map();
      log.scrollTop = 0;
      for (;;) {
        for (const row of await rendered()) out.set(Number(row.dataset.index), row.querySelector('.msg').textContent);
        if (log.scrollTop + log.clientHeight >= log.scrollHeight - 1) break;
        log.scrollTop += log.clientHeight - 22;
      }
      return [...out.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]);
    });
  }

  const seqOf = (msg) => {
    const m = /^line (\d+):/.exec(msg);
    return m ? Number(m[1]) : msg;
  };
  const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);

  async function assertExactly(page, from, to, what) {
    const seqs = (await domLines(page)).map(seqOf);
    const expected = range(from, to);
    if (seqs.length !== expected.length || seqs.some((s, i) => s !== expected[i])) {
      const have = new Set(seqs);
      const missingSeqs = expected.filter((s) => !have.has(s));
      const counts = new Map();
      for (const s of seqs) counts.set(s, (counts.get(s) ?? 0) + 1);
      const doubled = [...counts].filter(([, c]) => c > 1).map(([s]) => s);
      assert.fail(
        `${what}: DOM has ${seqs.length} lines, expected ${expected.length}; missing ${JSON.stringify(missingSeqs.slice(0, 20))}, ` +
          `doubled ${JSON.stringify(doubled.slice(0, 20))}, first ${JSON.stringify(seqs.slice(0, 5))}`,
      );
    }
    assert.equal(await page.evaluate(() => document.getElementById('log').dataset.duplicates), '0', 'no duplicate delivered');
  }

  test('lines inserted by pymongo show within a second', async () => {
    const { page } = await openPage(`${gw.origin}/?channel=logs:latency:f1`);
    await waitState(page, 'live');
    const latencies = [];
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now();
      await writer.insert({ workspace: 'latency', workflow: 'f1', from: i, count: 1 });
      await waitLines(page, i + 1);
      latencies.push(performance.now() - t0);
    }
    latencies.sort((a, b) => a - b);
    const median = latencies[5];
    console.log(`insert -> row on screen: median ${median.toFixed(0)} ms, max ${latencies[9].toFixed(0)} ms`);
    // The median of ten, against a bound some 20 times the usual figure: robust on a loaded
    // machine, and still the user-visible promise.
    assert.ok(median < 1000, `median latency ${median} ms`);
    assert.deepEqual(page.errors, []);
    await page.close();
    ran++;
  });

  test('the page resumes after a gateway restart with nothing missing', async () => {
    const own = gateway({ mongoUri: sim.uri, db, port: await freePort() });
    await own.start();
    try {
      const { page } = await openPage(`${own.origin}/?channel=logs:restart:f1`);
      await waitState(page, 'live');
      await writer.insert({ workspace: 'restart', workflow: 'f1', from: 0, count: 100 });
      await waitLines(page, 100);
      await own.stop();
      await page.waitForFunction(() => ['reconnecting', 'connecting'].includes(document.getElementById('status').dataset.state), null, { timeout: WAIT_MS });
      // Written while no gateway runs: the restarted one must catch up from the page's id.
      await writer.insert({ workspace: 'restart', workflow: 'f1', from: 100, count: 100 });
      await own.start();
      await waitState(page, 'live');
      await writer.insert({ workspace: 'restart', workflow: 'f1', from: 200, count: 50 });
      await waitLines(page, 250);
      await assertExactly(page, 0, 250, 'after a restart');
      const states = await page.evaluate(() => window.__states.map((s) => s.split('|')[0]));
      assert.ok(states.includes('reconnecting'), `status showed reconnecting: ${states}`);
      assert.equal(states.at(-1), 'live');
      await page.close();
    } finally {
      await own.stop();
    }
    ran++;
  });

  test('a reload in the middle of a 2000-line burst: no line missing or doubled', async () => {
    const { page } = await openPage(`${gw.origin}/?channel=logs:reload:f1`);
    await waitState(page, 'live');
    const burst = writer.insert({ workspace: 'reload', workflow: 'f1', from: 0, count: 2000, batch: 20, rate: 1000 });
    await waitLines(page, 400);
    await page.reload();
    await burst;
    await waitLines(page, 2000);
    await assertExactly(page, 0, 2000, 'after a reload mid-burst');
    const reloadedWith = await page.evaluate(() => performance.getEntriesByType('navigation')[0].type);
    assert.equal(reloadedWith, 'reload');
    await page.close();
    ran++;
  });

  test('navigating away and back in the middle of a burst: no line missing or doubled', async () => {
    const { page } = await openPage(`${gw.origin}/?channel=logs:nav:f1`);
    await waitState(page, 'live');
    await writer.insert({ workspace: 'nav', workflow: 'f1', from: 0, count: 300 });
    await waitLines(page, 300);
    const burst = writer.insert({ workspace: 'nav', workflow: 'f1', from: 300, count: 2000, batch: 20, rate: 1000 });
    await waitLines(page, 700);
    await page.goto(`${gw.origin}/healthz`);
    await page.goBack();
    await burst;
    await waitLines(page, 2300);
    await assertExactly(page, 0, 2300, 'after navigating away and back');
    await page.close();
    ran++;
  });

  for (const [status, code] of [
    [503, 'catchup_busy'],
    [429, 'rate_limited'],
  ]) {
    test(`a ${status} from the gateway is retried until it succeeds`, async () => {
      const proxy = await startProxy(gw.port);
      try {
        const refused = proxy.fail(3, status, 1, code);
        const { page } = await openPage(`${proxy.origin}/?channel=logs:refused${status}:f1`);
        await refused;
        await waitState(page, 'live');
        await writer.insert({ workspace: `refused${status}`, workflow: 'f1', from: 0, count: 20 });
        await waitLines(page, 20);
        await assertExactly(page, 0, 20, `after ${status}s`);
        const states = await page.evaluate(() => window.__states);
        assert.ok(states.some((s) => s.startsWith('reconnecting|')), `showed reconnecting: ${states}`);
        const streams = proxy.seen.filter((u) => u.startsWith('/v1/stream')).length;
        assert.ok(streams >= 4, `3 refused stream requests and one that worked: ${streams}`);
        await page.close();
      } finally {
        proxy.stop();
      }
      ran++;
    });
  }

  test("the gateway's busy event (connection limit reached): reconnecting until a place frees, then live", async () => {
    // One stream in all: a second page is refused for load, which the gateway tells an
    // EventSource with a 200 stream (`retry:`, `event: busy`, end) it reconnects from by itself.
    const own = gateway({ mongoUri: sim.uri, db, port: await freePort(), env: { SSE_MAX_CONNECTIONS: '1' } });
    await own.start();
    try {
      const { page: first } = await openPage(`${own.origin}/?channel=logs:limit:f1`);
      await waitState(first, 'live');
      const { page: second } = await openPage(`${own.origin}/?channel=logs:limit:f1`);
      await second.waitForFunction(() => window.__states.some((s) => s.startsWith('reconnecting|Gateway busy')), null, { timeout: WAIT_MS });
      await writer.insert({ workspace: 'limit', workflow: 'f1', from: 0, count: 30 });
      await waitLines(first, 30);
      await first.close(); // frees the place
      await waitState(second, 'live');
      await writer.insert({ workspace: 'limit', workflow: 'f1', from: 30, count: 10 });
      await waitLines(second, 40);
      // The backlog (200) on its first successful open brought the 30 written meanwhile.
      await assertExactly(second, 0, 40, 'after busy');
      await second.close();
    } finally {
      await own.stop();
    }
    ran++;
  });

  test('the busy contract through a proxy: reconnecting with the reason, then live, nothing lost', async () => {
    const proxy = await startProxy(gw.port);
    try {
      const { page } = await openPage(`${proxy.origin}/?channel=logs:busy:f1`);
      await waitState(page, 'live');
      await writer.insert({ workspace: 'busy', workflow: 'f1', from: 0, count: 10 });
      await waitLines(page, 10);
      const told = proxy.busy(2, 300);
      // End the live stream: the next two reconnects are told to come back later.
      proxy.dropStreams();
      await told;
      await writer.insert({ workspace: 'busy', workflow: 'f1', from: 10, count: 10 });
      await waitState(page, 'live');
      await waitLines(page, 20);
      await assertExactly(page, 0, 20, 'after busy');
      const states = await page.evaluate(() => window.__states);
      assert.ok(states.some((s) => s.startsWith('reconnecting|Gateway busy')), `showed busy: ${states}`);
      await page.close();
    } finally {
      proxy.stop();
    }
    ran++;
  });

  test('the page works under its CSP and behind a proxy path prefix', async () => {
    const proxy = await startProxy(gw.port, '/bff/logs');
    try {
      const encodings = {};
      const { page, response } = await (async () => {
        const page = await browser.context.newPage();
        page.errors = [];
        page.on('pageerror', (e) => page.errors.push(String(e)));
        page.on('console', (m) => m.type() === 'error' && page.errors.push(m.text()));
        page.on('response', async (r) => {
          encodings[new URL(r.url()).pathname] = (await r.allHeaders())['content-encoding'] ?? 'identity';
        });
        await page.addInitScript(initScript);
        return { page, response: await page.goto(`${proxy.base}?channel=logs:csp:f1`) };
      })();
      const csp = response.headers()['content-security-policy'];
      assert.match(csp, /^default-src 'self'/);
      await waitState(page, 'live');
      await writer.insert({ workspace: 'csp', workflow: 'f1', from: 0, count: 50 });
      await waitLines(page, 50);
      await assertExactly(page, 0, 50, 'under a prefix');
      assert.deepEqual(await page.evaluate(() => window.__csp), [], 'no CSP violation');
      assert.deepEqual(page.errors, [], 'no console error');
      assert.ok(proxy.seen.some((u) => u.startsWith('/v1/stream?channel=logs%3Acsp%3Af1')), `stream through the prefix: ${proxy.seen}`);
      assert.ok(!proxy.outside.length, `requests outside the prefix: ${proxy.outside}`);
      assert.equal(encodings['/bff/logs/client/logs.js'], 'gzip');
      assert.equal(encodings['/bff/logs/client/sse-client.js'], 'gzip');
      await page.close();
    } finally {
      proxy.stop();
    }
    ran++;
  });

  test('levels, search, pause with a new-line counter, copy, download', async () => {
    await browser.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: gw.origin });
    await writer.insert({ workspace: 'ui', workflow: 'f1', from: 0, count: 120 });
    const { page } = await openPage(`${gw.origin}/?channel=logs:ui:f1`);
    await waitState(page, 'live');
    await waitLines(page, 120); // the backlog
    const shown = () => page.evaluate(() => Number(document.getElementById('log').dataset.shown));

    await page.click('[data-level="error"]');
    await page.waitForFunction(() => Number(document.getElementById('log').dataset.shown) === 108);
    assert.equal(await page.locator('#rows .row.lvl-error:not([hidden])').count(), 0);
    await page.click('[data-level="error"]');
    await page.waitForFunction(() => Number(document.getElementById('log').dataset.shown) === 120);

    await page.fill('#search', 'line 42:');
    await page.waitForFunction(() => Number(document.getElementById('log').dataset.shown) === 1);
    assert.match(await page.locator('#rows .row:not([hidden]) .msg').first().textContent(), /^line 42:/);
    await page.fill('#search', '');
    await page.waitForFunction(() => Number(document.getElementById('log').dataset.shown) === 120);
    assert.equal(await shown(), 120);

    await page.click('#follow');
    await writer.insert({ workspace: 'ui', workflow: 'f1', from: 120, count: 15 });
    await page.waitForFunction(() => document.getElementById('follow').textContent === 'Resume · 15 new');
    const before = await page.evaluate(() => document.getElementById('log').scrollTop);
    await page.click('#follow');
    await page.waitForFunction((b) => {
      const log = document.getElementById('log');
      return log.scrollTop > b && log.scrollTop + log.clientHeight >= log.scrollHeight - 22;
    }, before);
    assert.equal(await page.textContent('#follow'), 'Pause');

    const last = page.locator('#rows .row:not([hidden])').last();
    await last.hover();
    await last.locator('.copy').click();
    const copied = await page.evaluate(() => navigator.clipboard.readText());
    assert.match(copied, /ERROR|INFO|DEBUG|WARNING|CRITICAL/);
    assert.match(copied, /line 134:/);

    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    const file = path.join(ARTIFACTS, 'download.ndjson');
    await download.saveAs(file);
    const docs = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(
      docs.map((d) => d.seq),
      range(0, 135),
    );
    assert.equal(docs[0].workspace_id, 'ui');
    assert.ok(download.suggestedFilename().endsWith('.ndjson'));
    assert.deepEqual(page.errors, []);
    await page.close();
    ran++;
  });

  test('a gap notice says what was lost, and live lines continue', async () => {
    // A tiny oplog and no in-memory history, so an old id cannot be resumed.
    const small = await startSim({ oplogMaxEvents: 100 });
    const gdb = uniqueDb('gap');
    const g = gateway({ mongoUri: small.uri, db: gdb, port: await freePort(), env: { SSE_HISTORY_EVENTS: '0' } });
    await g.start();
    const w = await startWriter(small.uri, gdb);
    try {
      const { page } = await openPage(`${g.origin}/?channel=logs:gap:f1`);
      await waitState(page, 'live');
      await w.insert({ workspace: 'gap', workflow: 'f1', from: 0, count: 5 });
      await waitLines(page, 5);
      await page.goto(`${g.origin}/healthz`);
      await w.insert({ workspace: 'gap', workflow: 'f1', from: 5, count: 300, batch: 10 });
      await page.goBack();
      await page.waitForSelector('#gap:not([hidden])', { timeout: WAIT_MS });
      const notice = await page.textContent('#gap-text');
      assert.match(notice, /missing/i);
      assert.match(notice, /history_lost|unknown_last_event_id/);
      await waitState(page, 'live');
      await w.insert({ workspace: 'gap', workflow: 'f1', from: 305, count: 5 });
      await page.waitForFunction(() => [...document.querySelectorAll('#rows .msg')].some((m) => m.textContent.startsWith('line 309:')));
      // At least one: on a loaded machine the gateway's own change stream can fall off this
      // 100-entry oplog too while the 300 lines are written, and then every client is told
      // again (a second, real gap) — what matters is that a loss is never silent.
      // Awaited, not counted once: seen failing once on a loaded machine with the notice
      // shown; the rows say what the page held if it happens again.
      const marked = await page
        .waitForSelector('#rows .row.gap-row', { state: 'attached', timeout: WAIT_MS })
        .then(() => true, () => false);
      const rows = await page.$$eval('#rows .row', (rs) => rs.map((r) => `${r.className}${r.hidden ? ' (hidden)' : ''}: ${r.querySelector('.msg')?.textContent ?? ''}`));
      assert.ok(marked, `a marker row where lines are missing; rows: ${JSON.stringify(rows)}`);
      await page.close();
    } finally {
      await w.stop();
      await g.stop();
      await small.stop();
    }
    ran++;
  });

  test('the client library: one connection for every subscriber, re-opened on change with nothing lost or repeated', async () => {
    const { page } = await openPage(`${gw.origin}/`);
    await page.evaluate(async () => {
      const { createClient } = await import('./client/sse-client.js');
      const client = createClient({ storage: null, debounceMs: 20 });
      window.__lib = { client, a: [], b: [], ws: [] };
      window.__lib.offA = client.subscribe('logs:lib:a', (e) => window.__lib.a.push(e.doc.seq));
    });
    await page.waitForFunction(() => window.__lib.client.getStatus().state === 'open');
    const second = await startWriter(sim.uri, db);
    const burstA = writer.insert({ workspace: 'lib', workflow: 'a', from: 0, count: 600, batch: 10, rate: 600 });
    const burstB = second.insert({ workspace: 'lib', workflow: 'b', from: 0, count: 600, batch: 10, rate: 600 });
    // Components come and go mid-burst; each change of the channel union re-opens the one
    // connection from the last id: {a} -> {a, b} -> {logs:lib} (covers both) -> {a, b}.
    await page.waitForFunction(() => window.__lib.a.length >= 120);
    await page.evaluate(() => {
      window.__lib.offB = window.__lib.client.subscribe('logs:lib:b', (e) => window.__lib.b.push(e.doc.seq));
    });
    await page.waitForFunction(() => window.__lib.a.length >= 240);
    await page.evaluate(() => {
      window.__lib.offW = window.__lib.client.subscribe('logs:lib', (e) => window.__lib.ws.push(`${e.doc.workflow_id}:${e.doc.seq}`));
    });
    await page.waitForFunction(() => window.__lib.a.length >= 360 && window.__lib.ws.length > 0);
    await page.evaluate(() => window.__lib.offW());
    await Promise.all([burstA, burstB]);
    await second.stop();
    await page.waitForFunction(() => window.__lib.a.length >= 600 && window.__lib.b.at(-1) === 599);
    const r = await page.evaluate(() => ({ ...window.__lib, client: undefined, stats: window.__lib.client.stats, channels: window.__lib.client.channels }));
    assert.deepEqual(r.a, range(0, 600), 'channel a: every line once, in order, across three re-opens');
    assert.deepEqual(r.b, range(r.b[0], 600), 'channel b: from its subscription on, every line once');
    assert.equal(new Set(r.ws).size, r.ws.length, 'the workspace subscriber saw nothing twice');
    for (const wf of ['a', 'b']) {
      const seqs = r.ws.filter((x) => x.startsWith(`${wf}:`)).map((x) => Number(x.slice(2)));
      if (seqs.length) assert.deepEqual(seqs, range(seqs[0], seqs[0] + seqs.length), `workspace subscriber, workflow ${wf}: contiguous`);
    }
    assert.deepEqual(r.channels, ['logs:lib:a', 'logs:lib:b']);
    assert.equal(r.stats.connections, 4, 'one connection at a time, re-opened three times');
    assert.equal(r.stats.duplicates, 0);
    await page.close();
    ran++;
  });

  test('a screenshot of the page during a live burst', async () => {
    const page = await browser.context.newPage();
    await page.setViewportSize({ width: 1280, height: 720 });
    await writer.insert({ workspace: 'datashop', workflow: 'nightly-etl', from: 0, count: 200, run_id: 'run-2291' });
    await page.goto(`${gw.origin}/?channel=logs:datashop:nightly-etl`);
    await waitState(page, 'live');
    await waitLines(page, 200);
    const burst = writer.insert({ workspace: 'datashop', workflow: 'nightly-etl', from: 200, count: 400, batch: 5, rate: 200, run_id: 'run-2291' });
    await waitLines(page, 400);
    const file = path.join(ARTIFACTS, 'logs-page.png');
    await page.screenshot({ path: file });
    if (process.env.UPDATE_SCREENSHOT === '1') writeFileSync(path.join(ROOT, 'docs', 'logs-page.png'), readFileSync(file));
    await burst;
    console.log(`screenshot: ${path.relative(ROOT, file)}`);
    await page.close();
    ran++;
  });
}
