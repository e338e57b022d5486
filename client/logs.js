// The live logs page: one channel's log lines, from a backlog on open and then live.
//
// Rendering is virtual: every line stays in memory (up to MAX_LINES), but only the rows in
// view (plus a margin) exist in the DOM, so 50 000 lines cost about 60 elements and a burst of
// new lines costs one re-render per animation frame, not one DOM insertion per line.
//
// The lines and the id they end at are saved together in sessionStorage (on `pagehide` and
// when the tab is hidden), so a reload or a navigation away and back shows the same lines and
// resumes the stream exactly after them: saving the id apart from the lines could lose or
// double the lines in between.

import { createClient } from './sse-client.js';

const ROW = 22; // px, matches --row in logs.css
const OVERSCAN = 12;
const MAX_LINES = 100_000; // in memory; the oldest are dropped beyond this
const STORE_MAX_LINES = 10_000; // kept across reloads
const STORE_MAX_CHARS = 3_000_000; // sessionStorage holds about 5 M characters per origin
const BACKLOG = 200;
const LEVELS = ['debug', 'info', 'warning', 'error', 'critical'];
/** Refusals for load (the gateway's `busy` event or a 503/429): worth saying "busy". */
const LOAD_REASONS = new Set(['busy', 'catchup_busy', 'not_ready', 'mongodb_unavailable', 'too_many_connections', 'too_many_connections_for_subject', 'rate_limited', 'http_503', 'http_429']);
const LEVEL_ALIASES = { warn: 'warning', err: 'error', fatal: 'critical', crit: 'critical', trace: 'debug' };

const $ = (id) => document.getElementById(id);
const el = {
  log: $('log'),
  spacer: $('spacer'),
  rows: $('rows'),
  empty: $('empty'),
  status: $('status'),
  statusText: $('status-text'),
  counts: $('counts'),
  follow: $('follow'),
  download: $('download'),
  search: $('search'),
  levels: $('levels'),
  gap: $('gap'),
  gapText: $('gap-text'),
  gapClose: $('gap-close'),
  chooser: $('chooser'),
  workspace: $('workspace'),
  workflow: $('workflow'),
  channelName: $('channel-name'),
  mode: $('mode'),
  toast: $('toast'),
};

/** The channel from `?channel=` or `?workspace=&workflow=`. */
function channelFromUrl() {
  const q = new URLSearchParams(location.search);
  const ch = q.get('channel');
  if (ch) return ch;
  const ws = q.get('workspace');
  if (!ws) return null;
  const wf = q.get('workflow');
  return wf ? `logs:${ws}:${wf}` : `logs:${ws}`;
}

const channel = channelFromUrl();
const storeKey = channel ? `mongo-sse-logs:v1:${channel}` : null;

// ---- the model -------------------------------------------------------------------------

/** Every loaded line, oldest first: {id, doc, level, hay?, gap?}. */
let lines = [];
/** The lines that pass the level filter and the search, oldest first. */
let view = [];
const byDocId = new Map();
const shownLevels = new Set(LEVELS);
let query = '';
let dropped = 0;
let following = true;
let newWhilePaused = 0;
let duplicates = 0;
let lineCount = 0; // lines that are log lines (not gap markers)
let viewCount = 0; // the same, in view

function normLevel(level) {
  const l = String(level ?? '').toLowerCase();
  return LEVEL_ALIASES[l] ?? l;
}

function hay(line) {
  if (line.hay === undefined) {
    const d = line.doc ?? {};
    line.hay = `${d.message ?? ''}\u0000${d.step ?? ''}\u0000${d.run_id ?? ''}\u0000${line.level}`.toLowerCase();
  }
  return line.hay;
}

function passes(line) {
  if (line.gap) return true;
  if (LEVELS.includes(line.level) && !shownLevels.has(line.level)) return false;
  return !query || hay(line).includes(query);
}

function makeLine(id, doc) {
  const line = { id, doc, level: normLevel(doc?.level) };
  hay(line); // now, a microsecond per line, rather than all 50 000 at the first search
  return line;
}

function addLine(line) {
  lines.push(line);
  if (!line.gap) lineCount++;
  if (line.doc?._id != null) byDocId.set(String(line.doc._id), line);
  if (passes(line)) {
    view.push(line);
    if (!line.gap) viewCount++;
    if (!following) newWhilePaused++;
  }
  if (lines.length > MAX_LINES) dropOldest(Math.ceil(MAX_LINES / 10));
}

function dropOldest(n) {
  const gone = lines.splice(0, n);
  for (const l of gone) {
    l.dropped = true;
    if (!l.gap) lineCount--;
    if (l.doc?._id != null && byDocId.get(String(l.doc._id)) === l) byDocId.delete(String(l.doc._id));
  }
  let k = 0;
  while (k < view.length && view[k].dropped) {
    if (!view[k].gap) viewCount--;
    k++;
  }
  view.splice(0, k);
  dropped += n;
}

function onEvent(ev) {
  const key = ev.doc?._id != null ? String(ev.doc._id) : null;
  const known = key != null ? byDocId.get(key) : undefined;
  if (known) {
    if (ev.op === 'insert') {
      duplicates++; // the same document inserted twice cannot happen; count it, show it once
    } else {
      known.doc = ev.doc; // an update: the line shows the document as it is now
      known.level = normLevel(ev.doc?.level);
      known.hay = undefined;
      hay(known);
    }
  } else {
    addLine(makeLine(ev.id, ev.doc));
  }
  scheduleRender();
}

function onGap(gap) {
  const what = gap.message || 'some lines could not be replayed';
  const line = { id: null, gap: true, level: 'gap', doc: { message: `Lines may be missing here: ${what} (${gap.reason})` } };
  addLine(line);
  el.gapText.textContent = `Some lines may be missing: ${what}. Reason: ${gap.reason}. Live lines continue below the marker.`;
  el.gap.hidden = false;
  scheduleRender();
}

function refilter() {
  view = lines.filter(passes);
  viewCount = 0;
  for (const l of view) if (!l.gap) viewCount++;
  newWhilePaused = 0;
  scheduleRender();
}

// ---- persistence -----------------------------------------------------------------------

function restore() {
  if (!storeKey) return null;
  try {
    const saved = JSON.parse(sessionStorage.getItem(storeKey) || 'null');
    if (!saved || saved.v !== 1 || !Array.isArray(saved.lines)) return null;
    for (const [id, doc, gap] of saved.lines) {
      addLine(gap ? { id, gap: true, level: 'gap', doc } : makeLine(id, doc));
    }
    dropped = saved.dropped ?? 0;
    return saved;
  } catch {
    return null;
  }
}

function save() {
  if (!storeKey || !client) return;
  let keep = Math.min(lines.length, STORE_MAX_LINES);
  for (;;) {
    const slice = lines.slice(lines.length - keep).map((l) => (l.gap ? [l.id, l.doc, 1] : [l.id, l.doc]));
    const json = JSON.stringify({
      v: 1,
      lastId: client.lastEventId,
      dropped: dropped + (lines.length - keep),
      lines: slice,
    });
    if (json.length <= STORE_MAX_CHARS || keep === 0) {
      try {
        sessionStorage.setItem(storeKey, json);
        return;
      } catch {
        if (keep === 0) return; // storage unavailable: lines just will not survive a reload
      }
    }
    keep = Math.floor(keep / 2);
  }
}

// ---- rendering -------------------------------------------------------------------------

let renderQueued = false;
const pool = [];

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(render);
}

function fmtTime(date) {
  if (!date) return '';
  const d = new Date(date);
  if (Number.isNaN(d.getTime())) return String(date).slice(0, 23);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function lineText(line) {
  const d = line.doc ?? {};
  if (line.gap) return d.message;
  return [d.date ?? '', (line.level || '').toUpperCase(), d.step ? `[${d.step}]` : '', d.message ?? ''].filter(Boolean).join(' ');
}

function makeRow() {
  const row = document.createElement('div');
  const ts = document.createElement('span');
  ts.className = 'ts';
  const lvl = document.createElement('span');
  lvl.className = 'lvl';
  const step = document.createElement('span');
  step.className = 'step';
  const msg = document.createElement('span');
  msg.className = 'msg';
  const copy = document.createElement('button');
  copy.type = 'button';
  copy.className = 'copy';
  copy.textContent = 'copy';
  copy.title = 'Copy this line';
  row.append(ts, lvl, step, msg, copy);
  row.parts = { ts, lvl, step, msg };
  return row;
}

function fill(row, line, index) {
  if (row.line === line && row.level === line.level && row.doc === line.doc) {
    row.dataset.index = String(index);
    return;
  }
  row.line = line;
  row.level = line.level;
  row.doc = line.doc;
  row.dataset.index = String(index);
  const d = line.doc ?? {};
  row.className = line.gap ? 'row gap-row' : `row lvl-${LEVELS.includes(line.level) ? line.level : 'other'}`;
  row.parts.ts.textContent = line.gap ? '' : fmtTime(d.date);
  row.parts.ts.title = d.date ?? '';
  row.parts.lvl.textContent = line.gap ? 'gap' : line.level;
  row.parts.step.textContent = d.step ?? '';
  row.parts.msg.textContent = d.message ?? (line.gap ? '' : JSON.stringify(d));
  row.parts.msg.title = row.parts.msg.textContent.length > 80 ? row.parts.msg.textContent : '';
}

function render() {
  renderQueued = false;
  const total = view.length;
  el.spacer.style.height = `${total * ROW}px`;
  const height = el.log.clientHeight || 600;
  // The rows of the last frame still count towards the scrollable height until they move, so
  // clamp by the list's own height rather than trusting scrollHeight (a filter shrinks it).
  const maxTop = Math.max(0, total * ROW - height);
  if (following) el.log.scrollTop = maxTop;
  const top = Math.min(el.log.scrollTop, maxTop);
  const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
  const count = Math.min(total - first, Math.ceil(height / ROW) + 2 * OVERSCAN);
  el.rows.style.transform = `translateY(${first * ROW}px)`;
  while (pool.length < count) {
    const row = makeRow();
    pool.push(row);
    el.rows.append(row);
  }
  for (let i = 0; i < pool.length; i++) {
    const row = pool[i];
    if (i < count) {
      fill(row, view[first + i], first + i);
      row.hidden = false;
    } else if (!row.hidden) {
      row.hidden = true;
      row.line = null;
    }
  }
  if (channel) {
    el.empty.hidden = total > 0;
    const hint = lines.length ? 'No loaded line matches the filter.' : 'Waiting for log lines…';
    if (total === 0 && el.empty.textContent !== hint) el.empty.textContent = hint;
  } else {
    el.empty.hidden = false;
  }
  const n = lineCount;
  const shown = viewCount;
  el.counts.textContent =
    (shown === n ? `${n.toLocaleString('en')} lines` : `showing ${shown.toLocaleString('en')} of ${n.toLocaleString('en')} lines`) +
    (dropped ? ` · ${dropped.toLocaleString('en')} older dropped` : '');
  el.log.dataset.lines = String(n);
  el.log.dataset.shown = String(shown);
  el.log.dataset.duplicates = String(duplicates + (client?.stats.duplicates ?? 0));
  el.follow.textContent = following ? 'Pause' : newWhilePaused ? `Resume · ${newWhilePaused.toLocaleString('en')} new` : 'Resume';
  el.follow.setAttribute('aria-pressed', String(!following));
}

// ---- status ----------------------------------------------------------------------------

function showStatus(s) {
  let state = s.state;
  let text;
  switch (s.state) {
    case 'idle':
      text = channel ? 'Connecting…' : 'Choose a workspace';
      break;
    case 'connecting':
      text = 'Connecting…';
      break;
    case 'open':
      if (s.mode === 'polling') {
        state = 'polling';
        text = `Polling every ${Math.round((s.intervalMs ?? 5000) / 1000)} s`;
      } else {
        state = 'live';
        text = 'Live';
      }
      break;
    case 'reconnecting': {
      const inS = s.retryInMs != null ? ` in ${Math.max(1, Math.round(s.retryInMs / 1000))} s` : '';
      text = LOAD_REASONS.has(s.reason) ? `Gateway busy, reconnecting${inS}` : `Reconnecting${inS}…`;
      break;
    }
    case 'auth_expired':
      text = 'Token expired — sign in again';
      break;
    default:
      text = s.error ? `Disconnected: ${s.error}` : 'Disconnected';
  }
  el.status.dataset.state = state;
  el.statusText.textContent = text;
  el.status.title = s.error ?? '';
  el.mode.textContent = s.mode === 'polling' ? `polling every ${Math.round((s.intervalMs ?? 5000) / 1000)} s` : s.mode === 'change_stream' ? 'change stream' : '';
}

// ---- interaction -----------------------------------------------------------------------

function atBottom() {
  return el.log.scrollTop + el.log.clientHeight >= el.log.scrollHeight - ROW;
}

function setFollowing(on) {
  following = on;
  if (on) newWhilePaused = 0;
  scheduleRender();
}

// Only the reader's own scrolling pauses or resumes following: the list also scrolls when a
// filter shrinks it or when it follows new lines, and that must not pause it.
let lastScrollTop = 0;
let intentAt = -Infinity;
const intent = () => {
  intentAt = performance.now();
};
for (const type of ['wheel', 'touchmove', 'pointerdown', 'keydown']) {
  el.log.addEventListener(type, intent, { passive: true });
}
el.log.addEventListener(
  'scroll',
  () => {
    const top = el.log.scrollTop;
    if (performance.now() - intentAt < 800) {
      // Scrolling up pauses; coming back to the bottom resumes.
      if (following && top < lastScrollTop && !atBottom()) setFollowing(false);
      else if (!following && atBottom() && top > lastScrollTop) setFollowing(true);
    }
    lastScrollTop = top;
    scheduleRender();
  },
  { passive: true },
);

el.follow.addEventListener('click', () => setFollowing(!following));

el.levels.addEventListener('click', (e) => {
  const chip = e.target.closest('[data-level]');
  if (!chip) return;
  const level = chip.dataset.level;
  if (shownLevels.has(level)) shownLevels.delete(level);
  else shownLevels.add(level);
  chip.setAttribute('aria-pressed', String(shownLevels.has(level)));
  refilter();
});

let searchTimer = null;
el.search.addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    query = el.search.value.trim().toLowerCase();
    refilter();
  }, 80);
});

el.gapClose.addEventListener('click', () => {
  el.gap.hidden = true;
});

function toast(text) {
  el.toast.textContent = text;
  el.toast.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => {
    el.toast.hidden = true;
  }, 1500);
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard permission (or not a secure context): the old way.
    const ta = document.createElement('textarea');
    ta.value = text;
    ta.className = 'offscreen';
    document.body.append(ta);
    ta.select();
    document.execCommand('copy');
    ta.remove();
  }
}

el.rows.addEventListener('click', async (e) => {
  const btn = e.target.closest('.copy');
  if (!btn) return;
  const row = btn.closest('.row');
  if (!row?.line) return;
  await copyText(lineText(row.line));
  toast('Line copied');
});

el.download.addEventListener('click', () => {
  const text = lines
    .filter((l) => !l.gap)
    .map((l) => JSON.stringify(l.doc))
    .join('\n');
  const blob = new Blob([text ? `${text}\n` : ''], { type: 'application/x-ndjson' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = `${(channel ?? 'logs').replace(/[^A-Za-z0-9_.-]+/g, '_')}.ndjson`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
});

el.chooser.addEventListener('submit', (e) => {
  e.preventDefault();
  const ws = el.workspace.value.trim();
  const wf = el.workflow.value.trim();
  if (!ws) return;
  const q = new URLSearchParams({ channel: wf ? `logs:${ws}:${wf}` : `logs:${ws}` });
  location.search = `?${q}`;
});

// ---- start -----------------------------------------------------------------------------

let client = null;

if (channel) {
  const parts = channel.split(':');
  el.workspace.value = parts[1] ?? '';
  el.workflow.value = parts[2] ?? '';
  el.channelName.textContent = channel;
  document.title = `${channel} · live logs`;
  const saved = restore();
  client = createClient({
    url: 'v1/stream',
    withCredentials: true,
    backlog: saved ? 0 : BACKLOG,
    lastEventId: saved?.lastId ?? null,
    storage: null, // the page saves the id together with its lines (see the top of this file)
  });
  client.onStatus(showStatus);
  client.subscribe(channel, onEvent, { onGap });
  showStatus(client.getStatus());

  // Saved when the page goes away, not on a timer: with 10 000 lines a save is a long task,
  // and a page that dies without `pagehide` loses nothing either, since the lines and the id
  // saved last time belong together (it resumes from there).
  window.addEventListener('pagehide', (e) => {
    save();
    if (e.persisted) client.suspend(); // into the back/forward cache: the stream would go stale
  });
  window.addEventListener('pageshow', (e) => {
    if (e.persisted) client.resume();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden') save();
  });
} else {
  showStatus({ state: 'idle' });
}
render();
