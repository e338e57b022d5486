//! The readers: one SSE connection each, subscribed to one channel, recording what arrives.
//!
//! A reader behaves like a browser's `EventSource` as far as a benchmark needs: it keeps one
//! connection, parses the event stream, and dispatches `message` events; other named events
//! (`mode`, `gap`, `busy`) and comments are counted, not measured. A connection that fails or
//! ends is a failure of the run, not something to retry quietly.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

pub struct Target {
    pub sub_url: String,
    pub channels: usize,
    pub events_per_channel: usize,
}

/// What one connection saw.
#[derive(Default)]
pub struct Conn {
    /// Distinct sequence numbers received, as a bitmap over `0..events_per_channel`.
    seen: Vec<bool>,
    pub distinct: usize,
    pub duplicated: usize,
    pub out_of_order: usize,
    last_seq: Option<u64>,
    pub other_events: usize,
    pub connected: bool,
    pub error: Option<String>,
}

pub struct Readers {
    target: Target,
    clients: Vec<reqwest::Client>,
    conns: Mutex<Vec<Arc<Mutex<Conn>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Microseconds from send to receipt, over every delivery.
    pub latency: Mutex<Histogram<u64>>,
    /// Microseconds from starting to connect to the response headers.
    pub connect: Mutex<Histogram<u64>>,
    complete: AtomicUsize,
    progress: Notify,
    first_receipt: Mutex<Option<Instant>>,
    last_receipt: Mutex<Option<Instant>>,
}

/// The totals after a run.
pub struct Received {
    pub conns: Vec<Conn>,
    pub latency: Histogram<u64>,
    pub connect: Histogram<u64>,
    /// From the first to the last delivery.
    pub delivery_span: Duration,
    pub events_per_channel: usize,
}

/// Microseconds since the epoch: within JSON's exact integers (2^53), which a document's
/// Int64 rendered as JSON must stay within.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

impl Readers {
    pub fn new(target: Target, sources: &[IpAddr]) -> anyhow::Result<Readers> {
        let clients = sources
            .iter()
            .map(|ip| {
                reqwest::Client::builder()
                    .no_proxy()
                    .local_address(*ip)
                    .connect_timeout(Duration::from_secs(10))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Readers {
            target,
            clients,
            conns: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            latency: Mutex::new(histogram()),
            connect: Mutex::new(histogram()),
            complete: AtomicUsize::new(0),
            progress: Notify::new(),
            first_receipt: Mutex::new(None),
            last_receipt: Mutex::new(None),
        })
    }

    /// Opens `n` connections, `concurrency` at a time, and returns once every one has its
    /// response headers (or failed).
    pub async fn connect_all(self: &Arc<Self>, n: usize, concurrency: usize) {
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        let connected = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(Notify::new());
        for i in 0..n {
            let channel = i % self.target.channels;
            let conn = Arc::new(Mutex::new(Conn {
                seen: vec![false; self.target.events_per_channel],
                ..Conn::default()
            }));
            lock(&self.conns).push(Arc::clone(&conn));
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let me = Arc::clone(self);
            let client = self.clients[i % self.clients.len()].clone();
            let (connected, done) = (Arc::clone(&connected), Arc::clone(&done));
            let task = tokio::spawn(async move {
                let url = me.target.sub_url.replace("{c}", &channel.to_string());
                let started = Instant::now();
                let resp = client
                    .get(&url)
                    .header("accept", "text/event-stream")
                    .send()
                    .await;
                drop(permit);
                let resp = match resp {
                    Ok(r) if r.status().is_success() => {
                        record(&me.connect, started.elapsed());
                        lock(&conn).connected = true;
                        r
                    }
                    Ok(r) => {
                        lock(&conn).error = Some(format!("HTTP {}", r.status()));
                        connected.fetch_add(1, Ordering::SeqCst);
                        done.notify_one();
                        return;
                    }
                    Err(e) => {
                        lock(&conn).error = Some(e.to_string());
                        connected.fetch_add(1, Ordering::SeqCst);
                        done.notify_one();
                        return;
                    }
                };
                connected.fetch_add(1, Ordering::SeqCst);
                done.notify_one();
                me.read(resp, &conn).await;
            });
            lock(&self.tasks).push(task);
        }
        while connected.load(Ordering::SeqCst) < n {
            // Bounded by the connect timeout of each request.
            let _ = tokio::time::timeout(Duration::from_secs(1), done.notified()).await;
        }
    }

    async fn read(&self, resp: reqwest::Response, conn: &Arc<Mutex<Conn>>) {
        let mut body = resp.bytes_stream();
        let mut parser = Parser::default();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    lock(conn).error = Some(format!("stream failed: {e}"));
                    return;
                }
            };
            let at = now_us();
            for msg in parser.feed(&chunk) {
                self.dispatch(conn, msg, at);
            }
        }
        lock(conn).error = Some("the server ended the stream".into());
    }

    fn dispatch(&self, conn: &Arc<Mutex<Conn>>, msg: Message, at_us: u64) {
        let mut c = lock(conn);
        if msg.event.as_deref().is_some_and(|e| e != "message") {
            c.other_events += 1;
            return;
        }
        let (Some(seq), Some(sent)) = (number(&msg.data, "seq"), number(&msg.data, "sent_us"))
        else {
            c.other_events += 1;
            return;
        };
        record(
            &self.latency,
            Duration::from_micros(at_us.saturating_sub(sent)),
        );
        let now = Instant::now();
        lock(&self.first_receipt).get_or_insert(now);
        *lock(&self.last_receipt) = Some(now);
        if c.last_seq.is_some_and(|l| seq <= l) {
            c.out_of_order += 1;
        }
        c.last_seq = Some(seq);
        match c.seen.get_mut(seq as usize) {
            Some(true) => c.duplicated += 1,
            Some(slot) => {
                *slot = true;
                c.distinct += 1;
                if c.distinct == self.target.events_per_channel {
                    self.complete.fetch_add(1, Ordering::SeqCst);
                    self.progress.notify_one();
                }
            }
            None => c.other_events += 1,
        }
    }

    /// Waits until every connected reader has every event, or `settle` passes.
    pub async fn wait_complete(&self, settle: Duration) {
        let deadline = Instant::now() + settle;
        let want = lock(&self.conns)
            .iter()
            .filter(|c| lock(c).connected)
            .count();
        while self.complete.load(Ordering::SeqCst) < want && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(
                left.min(Duration::from_millis(100)),
                self.progress.notified(),
            )
            .await;
        }
    }

    /// Stops every reader and returns what they saw.
    pub fn finish(&self) -> Received {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        let conns = lock(&self.conns)
            .drain(..)
            .map(|c| std::mem::take(&mut *lock(&c)))
            .collect();
        let span = match (*lock(&self.first_receipt), *lock(&self.last_receipt)) {
            (Some(a), Some(b)) => b.duration_since(a),
            _ => Duration::ZERO,
        };
        Received {
            conns,
            latency: lock(&self.latency).clone(),
            connect: lock(&self.connect).clone(),
            delivery_span: span,
            events_per_channel: self.target.events_per_channel,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn record(h: &Mutex<Histogram<u64>>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, 600_000_000);
    let _ = lock(h).record(us);
}

/// The unsigned integer after `"key":` in a JSON text (the events are ours: flat numbers).
fn number(json: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let at = json.find(&pat)? + pat.len();
    let digits: String = json[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// A dispatched SSE message.
pub struct Message {
    pub event: Option<String>,
    pub data: String,
}

/// The event-stream format, enough for measuring: lines end at LF (CRLF tolerated), `data:`
/// lines accumulate, `event:` names the message, a blank line dispatches.
#[derive(Default)]
struct Parser {
    line: Vec<u8>,
    event: Option<String>,
    data: String,
}

impl Parser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = String::from_utf8_lossy(&self.line).into_owned();
            self.line.clear();
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(Message {
                        event: self.event.take(),
                        data: std::mem::take(&mut self.data),
                    });
                }
                self.event = None;
            } else if let Some(d) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(d.strip_prefix(' ').unwrap_or(d));
            } else if let Some(e) = line.strip_prefix("event:") {
                self.event = Some(e.trim().to_string());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages_across_chunks_and_finds_numbers() {
        let mut p = Parser::default();
        assert!(p.feed(b"retry: 1000\n\nid: a\nda").is_empty());
        let msgs = p.feed(b"ta: {\"seq\":7,\"sent_us\": 12}\n\nevent: mode\ndata: {}\n\n");
        assert_eq!(msgs.len(), 2);
        assert_eq!(number(&msgs[0].data, "seq"), Some(7));
        assert_eq!(number(&msgs[0].data, "sent_us"), Some(12));
        assert_eq!(msgs[1].event.as_deref(), Some("mode"));
        assert_eq!(number("{\"seq\":\"x\"}", "seq"), None);
    }
}
