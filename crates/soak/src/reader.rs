//! A reader behaves exactly like a browser's `EventSource`: it reconnects after a network error
//! or the end of a stream, waiting the `retry:` the server announced, with `Last-Event-ID` set
//! to the last id it saw (id-only heartbeats included); a `busy` event is followed by the
//! stream's end and so by that wait. Any answer but a 200 `text/event-stream` makes a browser
//! give up for good: the reader does too, and that is a failure of the run. On every
//! reconnect it moves to another gateway at random (DESIGN: any instance accepts any id).
//!
//! Beyond a browser, it notices a stream that sends nothing — not even a heartbeat — for
//! `stall` (a hang), counts it and reconnects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{watch, Notify};

use crate::check::Entry;
use crate::raw;
use crate::rng::Rng;
use crate::sse::Parser;

#[derive(Debug, Default)]
pub struct ReaderState {
    pub entries: Vec<Entry>,
    pub connects: u64,
    pub network_errors: u64,
    pub server_ends: u64,
    pub busy: u64,
    pub stalls: u64,
    pub mode_events: u64,
    pub bad_events: u64,
    pub failed: Option<String>,
    /// The highest sequence received per channel (for the settle).
    pub max_seq: HashMap<String, u64>,
    /// Streams that ended while the reader was paused by the slow-consumer fault.
    pub ended_while_paused: u64,
    /// Every connection: (seconds into the run, gateway port, Last-Event-ID sent, index of
    /// its `Connected` entry), to explain a violation.
    pub conns: Vec<(f64, u16, Option<String>, usize)>,
    /// (entry index, seconds into the run) for every `Connected`, `Mode` and `Gap` entry and
    /// every [`MARK_EVERY`]th event: when an entry arrived, to line a violation up with the
    /// gateways' logs and the fault log.
    pub marks: Vec<(usize, f64)>,
    /// The id of each `mode` event, by entry index (the position the source switched at).
    pub mode_ids: HashMap<usize, String>,
    /// `--trace-ids`: keep every event's id, as (entry index, id).
    pub trace_ids: bool,
    pub ids: Vec<(usize, String)>,
}

/// See [`ReaderState::marks`].
pub const MARK_EVERY: usize = 1000;

impl ReaderState {
    fn mark(&mut self, started: std::time::Instant) {
        self.marks
            .push((self.entries.len(), started.elapsed().as_secs_f64()));
    }

    /// About when entry `at` arrived (seconds into the run): the time of the last mark at or
    /// before it.
    pub fn time_of(&self, at: usize) -> Option<f64> {
        let k = self.marks.partition_point(|(i, _)| *i <= at);
        k.checked_sub(1).map(|k| self.marks[k].1)
    }

    /// The id event `at` came with, if ids are traced.
    pub fn id_at(&self, at: usize) -> Option<&str> {
        let k = self.ids.binary_search_by_key(&at, |(i, _)| *i).ok()?;
        Some(&self.ids[k].1)
    }

    /// The gateway port of the connection entry `at` arrived on.
    pub fn port_of(&self, at: usize) -> Option<u16> {
        let k = self.conns.partition_point(|c| c.3 <= at);
        k.checked_sub(1).map(|k| self.conns[k].1)
    }
}

pub struct Reader {
    pub id: usize,
    /// The channels subscribed to (a workspace channel covers its workflows).
    pub channels: Vec<String>,
    pub state: Mutex<ReaderState>,
    paused: AtomicBool,
    unpause: Notify,
    /// Set by the oplog-shrink fault: the reader drops its stream and stays away (a closed
    /// laptop lid) until it is called back, then reconnects with its last id.
    away: AtomicBool,
    leave: Notify,
    back: Notify,
    progress: Arc<Notify>,
    started: std::time::Instant,
    /// Connects through [`raw`] with a 4 KiB receive buffer (the slow-consumer fault's
    /// candidates: a paused reader must overflow the gateway's queue, not loopback buffers).
    pub small_buffer: bool,
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `_id` (lowercase hex) of an event that came with a polling id: its document's `_id`,
/// or, for a published event (whose data does not carry it), the id's cursor, which is the
/// document's own `_id` when the late count is 0, and otherwise empty.
fn polled_id(id: &str, v: &serde_json::Value) -> Option<String> {
    let mut parts = id.strip_prefix("p.")?.split('.');
    let (_, cursor, late) = (parts.next()?, parts.next()?, parts.next()?);
    if let Some(doc_id) = v
        .get("doc")
        .and_then(|d| d.get("_id"))
        .and_then(|i| i.as_str())
    {
        return Some(doc_id.to_string());
    }
    // Late: the cursor is another document's; the checker looks the `_id` up (empty: unknown
    // here).
    Some(if late == "0" && cursor.len() == 24 {
        cursor.to_ascii_lowercase()
    } else {
        String::new()
    })
}

/// The time a position stands at, in seconds: a change-stream id's cluster time
/// (`c.82` + 4 bytes of seconds), a polling id's cursor (`p.<fp>.` + an ObjectId, whose first
/// 4 bytes are seconds).
fn position_secs(pos: &str) -> Option<u32> {
    let hex = match pos.split_once('.')? {
        ("c", rest) => rest.get(2..10)?,
        ("p", rest) => rest.split('.').nth(1)?.get(..8)?,
        _ => return None,
    };
    u32::from_str_radix(hex, 16).ok()
}

/// Whether `channel` is delivered to a subscriber of `sub` (itself or a descendant).
pub fn covers(sub: &str, channel: &str) -> bool {
    channel == sub || (channel.starts_with(sub) && channel.as_bytes().get(sub.len()) == Some(&b':'))
}

impl Reader {
    pub fn new(
        id: usize,
        channels: Vec<String>,
        progress: Arc<Notify>,
        started: std::time::Instant,
        small_buffer: bool,
    ) -> Arc<Reader> {
        Arc::new(Reader {
            started,
            small_buffer,
            id,
            channels,
            state: Mutex::new(ReaderState::default()),
            paused: AtomicBool::new(false),
            unpause: Notify::new(),
            away: AtomicBool::new(false),
            leave: Notify::new(),
            back: Notify::new(),
            progress,
        })
    }

    pub fn connected_once(&self) -> bool {
        let s = lock(&self.state);
        s.connects > 0 || s.failed.is_some()
    }

    /// Stops reading (the socket is left unread, as a stuck tab's would be).
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.unpause.notify_waiters();
    }

    /// Drops the stream and stays disconnected until [`Reader::come_back`].
    pub fn go_away(&self) {
        self.away.store(true, Ordering::SeqCst);
        self.leave.notify_one();
    }

    /// Reconnects, with the last id seen before going away.
    pub fn come_back(&self) {
        self.away.store(false, Ordering::SeqCst);
        self.back.notify_one();
    }

    /// Waits while the reader is away: true when the run is stopping. Bounded by the
    /// nemesis, which always calls the reader back, and by `stop`.
    async fn stay_away(&self, stop: &mut watch::Receiver<bool>) -> bool {
        while self.away.load(Ordering::SeqCst) {
            tokio::select! {
                _ = self.back.notified() => {}
                // The call back wakes it; this only bounds each wait.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return true,
            }
        }
        false
    }
    /// Runs until `stop` or until it gives up.
    pub async fn run(
        self: Arc<Self>,
        client: reqwest::Client,
        ports: Vec<u16>,
        mut rng: Rng,
        stall: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut gateway = self.id % ports.len().max(1);
        let mut last_id: Option<String> = None;
        // A browser's default reconnection time until the server says otherwise.
        let mut retry = Duration::from_millis(3000);
        let query: Vec<String> = self
            .channels
            .iter()
            .map(|c| format!("channel={c}"))
            .collect();
        let query = query.join("&");
        // Bounded: each pass either waits `retry` (at least 1 ms) or ends the loop; the stop
        // signal ends it at any await.
        loop {
            if *stop.borrow() || self.stay_away(&mut stop).await {
                return;
            }
            let port = ports[gateway];
            let path = format!("/v1/stream?{query}");
            let opened = tokio::select! {
                r = tokio::time::timeout(
                    Duration::from_secs(15),
                    self.open(&client, port, &path, last_id.as_deref()),
                ) => r,
                _ = stop.changed() => return,
            };
            match opened {
                Ok(Ok(mut resp)) => {
                    if resp.status != 200 || !resp.content_type.starts_with("text/event-stream") {
                        let first = tokio::time::timeout(Duration::from_secs(2), resp.body.next())
                            .await
                            .ok()
                            .flatten()
                            .and_then(|b| b.ok())
                            .unwrap_or_default();
                        let body: String =
                            String::from_utf8_lossy(&first).chars().take(300).collect();
                        lock(&self.state).failed = Some(format!(
                            "gateway :{port} answered {} ({}): {body}",
                            resp.status, resp.content_type
                        ));
                        self.progress.notify_waiters();
                        return;
                    }
                    {
                        let mut s = lock(&self.state);
                        s.connects += 1;
                        let at = s.entries.len();
                        let t = self.started.elapsed().as_secs_f64();
                        s.conns.push((t, port, last_id.clone(), at));
                        s.mark(self.started);
                        s.entries.push(Entry::Connected);
                    }
                    let mut parser = Parser::new(last_id.clone());
                    let ended = self.read(resp.body, &mut parser, stall, &mut stop).await;
                    last_id = parser.last_event_id.clone();
                    if let Some(ms) = parser.retry_ms {
                        retry = Duration::from_millis(ms);
                    }
                    if ended {
                        return;
                    }
                }
                Ok(Err(_)) | Err(_) => lock(&self.state).network_errors += 1,
            }
            tokio::select! {
                _ = tokio::time::sleep(retry.max(Duration::from_millis(1))) => {}
                _ = stop.changed() => return,
            }
            if ports.len() > 1 {
                let other = rng.below(ports.len() as u64 - 1) as usize;
                gateway = if other >= gateway { other + 1 } else { other };
            }
        }
    }

    /// Opens a stream: through reqwest, or, for a reader with a small receive buffer, a bare
    /// HTTP/1.1 request.
    async fn open(
        &self,
        client: &reqwest::Client,
        port: u16,
        path: &str,
        last_id: Option<&str>,
    ) -> anyhow::Result<raw::Response> {
        let mut headers = vec![
            ("accept", "text/event-stream"),
            ("cache-control", "no-cache"),
        ];
        if let Some(id) = last_id {
            headers.push(("last-event-id", id));
        }
        if self.small_buffer {
            return raw::get(port, path, &headers).await;
        }
        let mut req = client.get(format!("http://127.0.0.1:{port}{path}"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await?;
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        Ok(raw::Response {
            status: resp.status().as_u16(),
            content_type,
            body: Box::pin(resp.bytes_stream().map(|b| b.map_err(anyhow::Error::from))),
        })
    }

    /// Reads one stream to its end; true when the run is stopping.
    async fn read(
        &self,
        mut body: raw::Body,
        parser: &mut Parser,
        stall: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        loop {
            let mut was_paused = false;
            while self.paused.load(Ordering::SeqCst) {
                was_paused = true;
                let woken = self.unpause.notified();
                if !self.paused.load(Ordering::SeqCst) {
                    break;
                }
                tokio::select! {
                    _ = woken => {}
                    // The fault's end wakes it; this only bounds the wait.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return true,
                }
            }
            if self.away.load(Ordering::SeqCst) {
                return false;
            }
            let next = tokio::select! {
                n = tokio::time::timeout(stall, body.next()) => n,
                _ = stop.changed() => return true,
                _ = self.leave.notified() => continue,
            };
            match next {
                Ok(Some(Ok(bytes))) => {
                    let msgs = parser.feed(&bytes);
                    if !msgs.is_empty() {
                        let mut s = lock(&self.state);
                        for m in msgs {
                            self.dispatch(&mut s, &m.event, &m.data, &m.id);
                        }
                        drop(s);
                        self.progress.notify_waiters();
                    }
                    continue;
                }
                Ok(None) => lock(&self.state).server_ends += 1,
                Ok(Some(Err(_))) => lock(&self.state).network_errors += 1,
                Err(_) => lock(&self.state).stalls += 1,
            }
            if was_paused || self.paused.load(Ordering::SeqCst) {
                lock(&self.state).ended_while_paused += 1;
            }
            return false;
        }
    }

    fn dispatch(&self, s: &mut ReaderState, event: &str, data: &str, id: &str) {
        match event {
            "message" => {
                let v: serde_json::Value = match serde_json::from_str(data) {
                    Ok(v) => v,
                    Err(_) => {
                        s.bad_events += 1;
                        return;
                    }
                };
                let channel = v.get("channel").and_then(|c| c.as_str());
                let seq = v
                    .get("doc")
                    .and_then(|d| d.get("seq"))
                    .and_then(|n| n.as_u64());
                match (channel, seq) {
                    (Some(c), Some(seq)) => {
                        let m = s.max_seq.entry(c.to_string()).or_insert(seq);
                        *m = (*m).max(seq);
                        // Polling delivers what one poll found in `_id` order: the checker
                        // needs the `_id` to tell that from a reordering.
                        let polled_id = polled_id(id, &v);
                        if s.entries.len() % MARK_EVERY == 0 {
                            s.mark(self.started);
                        }
                        if s.trace_ids {
                            let at = s.entries.len();
                            s.ids.push((at, id.to_string()));
                        }
                        s.entries.push(Entry::Event {
                            channel: c.to_string(),
                            seq,
                            polled_id,
                        });
                    }
                    _ => s.bad_events += 1,
                }
            }
            "gap" => {
                let v = serde_json::from_str::<serde_json::Value>(data).ok();
                let field = |k: &str| v.as_ref()?.get(k)?.as_str().map(String::from);
                let reason = field("reason").unwrap_or_else(|| "unnamed".into());
                let asked_secs = field("last_event_id").and_then(|p| position_secs(&p));
                let resumed_secs = field("resumed_at").and_then(|p| position_secs(&p));
                s.mark(self.started);
                s.entries.push(Entry::Gap {
                    reason,
                    asked_secs,
                    resumed_secs,
                });
            }
            "busy" => s.busy += 1,
            "mode" => {
                s.mode_events += 1;
                let mode = serde_json::from_str::<serde_json::Value>(data)
                    .ok()
                    .and_then(|v| v.get("mode").and_then(|m| m.as_str()).map(String::from))
                    .unwrap_or_default();
                s.mark(self.started);
                let at = s.entries.len();
                s.mode_ids.insert(at, id.to_string());
                s.entries.push(Entry::Mode(mode));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::position_secs;

    #[test]
    fn positions_tell_their_time() {
        assert_eq!(
            position_secs("c.826B0F8DCE0000002200000000000045E803"),
            Some(0x6B0F_8DCE)
        );
        assert_eq!(
            position_secs("p.865BE465.6B0F8DC70000000000000000.0.F3221C36"),
            Some(0x6B0F_8DC7)
        );
        assert_eq!(position_secs("p.865BE465.-.0"), None);
        assert_eq!(position_secs("x.1"), None);
    }
}
