//! `GET /v1/stream` and the compatibility logs route: one SSE connection carrying many
//! channels.
//!
//! A connection goes through at most three phases, each ending exactly where the next begins:
//! 1. what it missed — from the history ring, a catch-up change stream, or a backlog query;
//! 2. live events from its queue, skipping any at or before the last position it was sent;
//! 3. the end: shutdown, the token expiring (an `auth_expired` event first), or a full queue
//!    (the socket is closed and the browser resumes from its last id).
//!
//! Every frame is built once by the source (`Event::frame`) and shared; this file only decides
//! which frames a connection gets and in what order.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::Shutdown;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::watch;

use super::error::ApiError;
use super::gate::Pass;
use super::peer::Peer;
use super::query::{self, StreamRequest};
use super::{AppState, ConnSocket};
use crate::catchup::{CatchUp, CatchUpError};
use crate::channel::Channel;
use crate::event::{Event, Op};
use crate::hub::{ConnInfo, Start, SubscribeError, Subscription};
use crate::metrics::{CloseReason, ResumePath};
use crate::position::Position;
use crate::sse;

pub async fn stream(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let opened = async {
        let r = query::parse(
            req.query_string(),
            last_event_id_header(&req)?,
            state.max_channels,
            None,
        )?;
        let pass = state.gate.admit(&req, &r.channels)?;
        open(&req, &state, r, pass).await
    }
    .await;
    answer(&req, &state, opened)
}

/// Counts a refusal (access control, limits) and answers it.
fn answer(
    req: &HttpRequest,
    state: &AppState,
    opened: Result<HttpResponse, ApiError>,
) -> Result<HttpResponse, ApiError> {
    if let Err(e) = &opened {
        state.hub.metrics.refused(e.status.as_u16(), e.code);
    }
    busy_for_event_source(req, opened)
}

/// A browser's `EventSource` gives up for good on any answer but a 200 event stream: after a
/// 503 or a 429 the page stays dead until reloaded. So a refusal that waiting fixes (load:
/// catch-ups busy, not ready, MongoDB unreachable, connection and rate limits), asked for by
/// a client that accepts `text/event-stream`, is a 200 stream instead: `retry:` with jitter
/// (so a crowd does not come back at once), one `busy` event saying why, and the end — and
/// the browser reconnects by itself. Other clients keep the JSON 503/429 with `Retry-After`;
/// errors retrying cannot fix (auth, bad requests) stay 4xx for everyone.
fn busy_for_event_source(
    req: &HttpRequest,
    opened: Result<HttpResponse, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let e = match opened {
        Ok(r) => return Ok(r),
        Err(e) => e,
    };
    let load = matches!(e.status.as_u16(), 429 | 503);
    let wants_sse = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !load || !wants_sse {
        return Err(e);
    }
    let after = std::time::Duration::from_secs(e.retry_after_secs.unwrap_or(1).max(1));
    // Between the advised delay and half as much again.
    let retry_ms = crate::backoff::jitter(after.mul_f64(1.5), 1.0 / 3.0).as_millis() as u64;
    let body = json!({"reason": e.code, "retry_ms": retry_ms, "message": e.message});
    let mut frames = sse::retry_frame(retry_ms).to_vec();
    frames.extend_from_slice(&sse::named_frame("busy", None, &body.to_string()));
    tracing::debug!(
        reason = e.code,
        retry_ms,
        "busy: telling an EventSource to come back"
    );
    let mut r = HttpResponse::Ok();
    r.insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"));
    if let Some(s) = e.retry_after_secs {
        r.insert_header((header::RETRY_AFTER, s.to_string()));
    }
    Ok(r.body(frames))
}

/// `GET /wfm/workflow/workspace/{ws}/workflow/{wf}/logs/stream`: channel `logs:{ws}:{wf}`.
pub async fn compat_logs(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ws, wf) = path.into_inner();
    let opened = async {
        let channel = Channel::from_segments(["logs", ws.as_str(), wf.as_str()]).map_err(|e| {
            ApiError::bad_request("invalid_channel", format!("workspace/workflow: {e}"))
        })?;
        let r = query::parse(
            req.query_string(),
            last_event_id_header(&req)?,
            state.max_channels,
            Some(channel),
        )?;
        let pass = state.gate.admit(&req, &r.channels)?;
        open(&req, &state, r, pass).await
    }
    .await;
    answer(&req, &state, opened)
}

fn last_event_id_header(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    match req.headers().get("last-event-id") {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            ApiError::bad_request("invalid_last_event_id", "Last-Event-ID must be ASCII")
        }),
    }
}

async fn open(
    req: &HttpRequest,
    state: &AppState,
    r: StreamRequest,
    pass: Pass,
) -> Result<HttpResponse, ApiError> {
    let closer: crate::hub::Closer = match req.conn_data::<ConnSocket>() {
        Some(ConnSocket(sock)) => {
            let sock = Arc::clone(sock);
            Box::new(move || {
                let _ = sock.shutdown(Shutdown::Both);
            })
        }
        None => Box::new(|| {}),
    };
    let mut sub = state
        .hub
        .subscribe(r.channels, r.resume.as_ref(), closer)
        .map_err(|e| match e {
            SubscribeError::NotReady(why) => ApiError::unavailable("not_ready", why, 1),
        })?;
    let mut conn = Conn::new(state, &sub, pass, req.peer_addr());
    state.hub.attach(sub.conn, Arc::clone(&conn.info));
    if r.resume.is_none() && r.backlog > 0 {
        conn.resume = "backlog";
    }
    let mut resume = ResumePath::Ring;
    conn.peer = Peer::watch(req.conn_data::<ConnSocket>().map(|s| &s.0));
    conn.frames.push_back(sse::retry_frame(state.retry_ms));
    if let Some(mode @ crate::source::Mode::Polling { .. }) = state.hub.mode() {
        conn.frames
            .push_back(sse::named_frame("mode", None, &mode.to_json()));
    }

    match std::mem::replace(&mut sub.start, Start::Live) {
        Start::Live => {
            conn.last_sent = max_position(r.resume.clone(), sub.head.clone());
            if conn.last_sent > sub.head {
                // Ahead of this gateway: another instance may be a few milliseconds further
                // along, or the id is from a restored cluster or a stepped clock.
                conn.ahead = Some(conn.last_sent.clone());
            }
            if r.resume.is_none() && r.backlog > 0 {
                backlog(state, &mut sub, &mut conn, r.backlog).await?;
            }
        }
        Start::Replay(events) => {
            conn.last_sent = r.resume.clone().unwrap_or_else(|| sub.head.clone());
            for ev in events {
                conn.send_replayed(&ev);
            }
        }
        Start::CatchUp { from, delivered } => {
            conn.last_sent = from.clone();
            let started = match (from.polling(), sub.head.polling()) {
                (None, None) => state.catchups.start(&from, &sub.head, &sub.channels).await,
                (Some(f), Some(h)) => {
                    state
                        .catchups
                        .start_polling(f, h, &sub.channels, delivered.unwrap_or_default())
                        .await
                }
                // A polling position of a gateway watching other collections is foreign.
                (Some(f), None)
                    if f.fingerprint()
                        != crate::position::sources_fingerprint(state.sources.collections()) =>
                {
                    Err(CatchUpError::Unusable(
                        "a polling position from a gateway watching other collections".into(),
                    ))
                }
                // A position of the other mode that memory no longer connects to the present:
                // MongoDB cannot replay across modes, so the client is told.
                _ => Err(CatchUpError::ModeChanged),
            };
            match started {
                Ok(cu) => {
                    state.hub.count_catchup(true);
                    conn.catchup = Some(cu);
                    conn.catchup_started = Some((std::time::Instant::now(), 0));
                    resume = ResumePath::CatchUp;
                    tracing::info!(
                        conn = sub.conn,
                        from = %from,
                        until = %sub.head,
                        channels = %join(&sub.channels),
                        "catch-up started"
                    );
                }
                Err(CatchUpError::Busy) => {
                    state.hub.count_catchup(false);
                    return Err(ApiError::unavailable(
                        "catchup_busy",
                        "too many reconnects are catching up right now; retry shortly",
                        2,
                    ));
                }
                Err(
                    e @ (CatchUpError::HistoryLost
                    | CatchUpError::ModeChanged
                    | CatchUpError::TooFarBehind),
                ) => {
                    state.hub.count_gap();
                    resume = ResumePath::Gap;
                    let (reason, message) = match e {
                        CatchUpError::HistoryLost => ("history_lost", "the requested position is no longer in MongoDB's oplog; events between it and `resumed_at` cannot be replayed"),
                        CatchUpError::TooFarBehind => ("too_far_behind", "the requested polling position is more documents behind than a catch-up replays; events between it and `resumed_at` are not sent"),
                        _ => ("mode_changed", "the requested position belongs to the other streaming mode (change stream / polling) and is older than this gateway's memory; events between it and `resumed_at` cannot be replayed"),
                    };
                    let gap = json!({
                        "reason": reason,
                        "message": message,
                        "last_event_id": from.encode(),
                        "resumed_at": sub.head.encode(),
                    });
                    conn.frames.push_back(sse::named_frame(
                        "gap",
                        Some(sub.head.encode()),
                        &gap.to_string(),
                    ));
                    conn.last_sent = sub.head.clone();
                }
                Err(CatchUpError::Unusable(why)) => {
                    return Err(ApiError::bad_request(
                        "unknown_last_event_id",
                        format!("MongoDB cannot resume from this event id: {}", brief(&why)),
                    ))
                }
                Err(CatchUpError::Failed(why)) => {
                    return Err(ApiError::unavailable(
                        "mongodb_unavailable",
                        format!("catch-up failed: {}", brief(&why)),
                        2,
                    ))
                }
            }
        }
    }

    if r.resume.is_some() {
        state.hub.metrics.resumed(resume);
        conn.resume = resume.as_str();
    }
    conn.opened(&sub);

    let body = futures::stream::unfold((conn, sub), |(mut conn, mut sub)| async move {
        let frame = conn.next(&mut sub).await?;
        conn.hub.metrics.bytes_out(frame.len());
        Some((Ok::<Bytes, Infallible>(frame), (conn, sub)))
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// How long a resume position ahead of the head may wait for the head to reach it.
pub const AHEAD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Resolves at `deadline`; never without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// MongoDB's error messages may quote the resume token, which came from the client: an error
/// body must not echo untrusted input at length.
fn brief(why: &str) -> String {
    const MAX: usize = 200;
    if why.len() <= MAX {
        return why.to_string();
    }
    let mut end = MAX;
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &why[..end])
}

fn max_position(a: Option<Position>, b: Position) -> Position {
    match a {
        Some(a) if a > b => a,
        _ => b,
    }
}

/// Serves `?backlog=N` (see `crate::backlog` for why this is gap- and duplicate-free).
async fn backlog(
    state: &AppState,
    sub: &mut Subscription,
    conn: &mut Conn,
    n: usize,
) -> Result<(), ApiError> {
    let _running = state.hub.metrics.backlog_running();
    let fetched = state.backlogs.fetch(&sub.channels, n).await.map_err(|e| {
        ApiError::unavailable(
            "mongodb_unavailable",
            format!("backlog query failed: {e}"),
            2,
        )
    })?;
    // Polling: a row the poller has not delivered yet (inside its overlap window, not in
    // memory) will arrive live; it must not also be in the backlog. Keys are read before the
    // queue is drained, so a delivery racing this is caught by one check or the other.
    let mut not_yet_polled: Option<(bson::oid::ObjectId, HashSet<Arc<str>>)> = None;
    if let Some(cursor) = sub.head.polling() {
        let delivered = state.hub.recent_keys();
        let high_secs = cursor
            .high()
            .map(|h| crate::source::polling::oid_secs(&h))
            .unwrap_or(0);
        let low = crate::source::polling::window_start(high_secs, state.poll_overlap);
        not_yet_polled = Some((low, delivered));
    } else if let Some(t) = fetched.operation_time {
        // Change streams: wait until the live feed has passed the query, so every document
        // the query saw after H is in the queue by now.
        let passed = |p: &Position| {
            p.cluster_time()
                .is_some_and(|c| (c.time, c.increment) >= (t.time, t.increment))
        };
        let waited =
            tokio::time::timeout(crate::backlog::HANDOFF_WAIT, state.hub.wait_head(passed)).await;
        if waited.is_err() {
            tracing::warn!("backlog: the live feed did not pass the query time in time; de-duplicating with what arrived");
        }
    }
    // Everything queued so far is live and after H; the backlog must not repeat its inserts.
    let mut queued = Vec::new();
    while let Ok(ev) = sub.rx.try_recv() {
        queued.push(ev);
    }
    let live_inserts: HashSet<Arc<str>> = queued
        .iter()
        .filter(|e| e.op == Op::Insert)
        .filter_map(|e| e.key.clone())
        .collect();
    for row in fetched.rows {
        let Some(spec) = state.sources.get(&row.collection) else {
            continue;
        };
        let ev = Event::for_source(sub.head.clone(), spec, Op::Insert, &row.doc);
        let pending = match (&not_yet_polled, row.doc.get("_id")) {
            (Some((low, delivered)), Some(bson::Bson::ObjectId(id))) => {
                id >= low && !ev.key.as_ref().is_some_and(|k| delivered.contains(k))
            }
            _ => false,
        };
        if pending || ev.key.as_ref().is_some_and(|k| live_inserts.contains(k)) {
            continue;
        }
        // Backlog rows carry the subscription head as their id: resuming from any of them
        // continues live with nothing lost.
        conn.frames.push_back(ev.frame.clone());
    }
    for ev in queued {
        conn.send_live(&ev);
    }
    Ok(())
}

struct Conn {
    hub: Arc<crate::hub::Hub>,
    frames: VecDeque<Bytes>,
    catchup: Option<CatchUp>,
    last_sent: Position,
    heartbeat: tokio::time::Interval,
    shutdown: watch::Receiver<bool>,
    done: bool,
    /// A resume position ahead of the head: wait up to [`AHEAD_WAIT`] for the head to reach
    /// it, else tell the client a `gap` rather than stay silent until it does.
    ahead: Option<Position>,
    /// Holds the connection's places in the limits; its deadline is the token's `exp`.
    pass: Pass,
    /// The client's socket, watched for its end: actix notices a client that went away only
    /// when a write fails, one or two heartbeats later, and until then the connection keeps
    /// its queue and its places in the limits.
    peer: Peer,
    id: crate::router::ConnId,
    /// What the admin endpoints show; the events sent and the position held.
    info: Arc<ConnInfo>,
    /// How it started (`ConnInfo::resume`), for the logs.
    resume: &'static str,
    /// Why it ends, when it decided so itself (the hub's `closed_by` wins; else the client).
    end: Option<CloseReason>,
    /// Set once the stream is answered: only then does its end count and get logged.
    opened_at: Option<(std::time::Instant, String)>,
    /// A running catch-up: when it started and the events it sent.
    catchup_started: Option<(std::time::Instant, u64)>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some((at, channels)) = self.opened_at.take() else {
            return;
        };
        if !self.info.finish() {
            return; // counted and logged by an admin close
        }
        // Closed from outside (slow consumer, admin), the socket's shutdown also looks like
        // the client leaving: the hub's reason is the cause.
        let reason = self
            .info
            .closed_by()
            .or(self.end)
            .unwrap_or(CloseReason::Client);
        self.hub.metrics.connection_closed(reason);
        tracing::info!(
            conn = self.id,
            subject = self.info.subject.as_deref().unwrap_or("-"),
            channels = %channels,
            duration_ms = at.elapsed().as_millis() as u64,
            reason = reason.as_str(),
            events_sent = self.info.events_sent.load(std::sync::atomic::Ordering::Relaxed),
            "connection closed"
        );
    }
}

fn join(channels: &[Channel]) -> String {
    channels
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

impl Conn {
    fn new(
        state: &AppState,
        sub: &Subscription,
        pass: Pass,
        remote: Option<std::net::SocketAddr>,
    ) -> Conn {
        let mut heartbeat = tokio::time::interval(state.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.reset(); // the first tick after one period, not immediately
        Conn {
            hub: Arc::clone(&state.hub),
            frames: VecDeque::new(),
            catchup: None,
            ahead: None,
            last_sent: sub.head.clone(),
            heartbeat,
            shutdown: state.hub.shutdown_signal(),
            done: false,
            info: Arc::new(ConnInfo::new(pass.identity.subject.clone(), remote)),
            pass,
            peer: Peer::none(),
            resume: "live",
            end: None,
            opened_at: None,
            catchup_started: None,
            id: sub.conn,
        }
    }

    /// The stream is answered: count it and log it.
    fn opened(&mut self, sub: &Subscription) {
        let _ = self.info.resume.set(self.resume);
        self.info.hold(&self.last_sent);
        self.hub.metrics.connection_opened();
        let channels = join(&sub.channels);
        tracing::info!(
            conn = self.id,
            subject = self.info.subject.as_deref().unwrap_or("-"),
            channels = %channels,
            remote = %self.info.remote.map_or_else(|| "-".to_string(), |a| a.to_string()),
            resume = self.resume,
            "connection opened"
        );
        self.opened_at = Some((std::time::Instant::now(), channels));
    }

    /// Ends the stream for `reason` (the first one given wins).
    fn end(&mut self, reason: CloseReason) {
        self.done = true;
        self.end.get_or_insert(reason);
    }

    /// Sends a live event: its fan-out latency is measured.
    fn send_live(&mut self, ev: &Event) {
        if self.send(ev) && !ev.control {
            self.hub.metrics.delivered(ev.wall_time);
        }
    }

    /// A replayed event (ring, catch-up).
    fn send_replayed(&mut self, ev: &Event) {
        if self.send(ev) && !ev.control {
            self.hub.metrics.delivered(None);
        }
    }

    /// Queues an event unless it was already sent (positions only move forward). True if
    /// it was queued.
    fn send(&mut self, ev: &Event) -> bool {
        if ev.control {
            // A mode switch: positions continue in the new kind from here.
            self.last_sent = ev.position.clone();
            self.frames.push_back(ev.frame.clone());
            return true;
        }
        // A replay across a source switch hands out the previous segment's events, then the
        // current one's: the first event of the other kind continues the connection in it.
        let newer = match ev.position.cmp_same_kind(&self.last_sent) {
            Some(order) => order == std::cmp::Ordering::Greater,
            None => ev.position.kind() != self.last_sent.kind(),
        };
        if newer {
            self.last_sent = ev.position.clone();
            self.frames.push_back(ev.frame.clone());
            self.info
                .events_sent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        newer
    }

    /// The token expired: say so with a named event, then end the stream. The client gets a
    /// fresh token and reconnects with its last id, losing nothing.
    fn expire(&mut self) {
        let body = json!({
            "reason": "token_expired",
            "message": "the access token expired; reconnect with a fresh token and the last event id",
            "expired_at": self.pass.identity.expires_at,
            "last_event_id": self.last_sent.encode(),
        });
        self.frames
            .push_back(sse::named_frame("auth_expired", None, &body.to_string()));
        self.end(CloseReason::AuthExpired);
    }

    async fn next(&mut self, sub: &mut Subscription) -> Option<Bytes> {
        loop {
            if let Some(f) = self.frames.pop_front() {
                if self.frames.is_empty() {
                    self.info.hold(&self.last_sent);
                }
                return Some(f);
            }
            if *self.shutdown.borrow() {
                self.end(CloseReason::Shutdown);
            }
            if self.done {
                return None;
            }
            if let Some(target) = self.ahead.take() {
                self.wait_until_reached(target, sub).await;
                continue;
            }
            if let Some(cu) = self.catchup.as_mut() {
                tokio::select! {
                    ev = cu.events.recv() => match ev {
                        Some(Ok(ev)) => {
                            if let Some((_, n)) = self.catchup_started.as_mut() {
                                *n += 1;
                            }
                            self.send_replayed(&ev);
                        }
                        Some(Err(e)) => {
                            tracing::warn!("catch-up failed mid-stream: {e}; closing so the client resumes");
                            self.catchup_done("failed");
                            self.end(CloseReason::Error);
                        }
                        // Cut short (stalled reader, shutdown): end rather than continue live
                        // over what it did not send; the client resumes from its last id.
                        None if !cu.complete.load(std::sync::atomic::Ordering::SeqCst) => {
                            self.catchup_done("cut short");
                            let why = if *self.shutdown.borrow() {
                                CloseReason::Shutdown
                            } else {
                                CloseReason::SlowConsumer
                            };
                            self.end(why);
                        }
                        None => {
                            self.catchup = None;
                            self.catchup_done("complete");
                        }
                    },
                    _ = self.shutdown.changed() => self.end(CloseReason::Shutdown),
                    // The live queue waits for the catch-up; a comment still keeps proxies
                    // from timing out a long one.
                    _ = self.heartbeat.tick() => self.frames.push_back(sse::comment_frame("heartbeat")),
                    _ = until(self.pass.deadline) => self.expire(),
                    _ = self.peer.gone() => self.end(CloseReason::Client),
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => self.end(CloseReason::Shutdown),
                ev = sub.rx.recv() => match ev {
                    Some(ev) => self.send_live(&ev),
                    // Removed from the router: a slow consumer, an admin close, or a gap
                    // restart; the hub says which (`ConnInfo::closed_by`).
                    None => self.done = true,
                },
                _ = self.heartbeat.tick() => self.heartbeat(sub),
                _ = until(self.pass.deadline) => self.expire(),
                _ = self.peer.gone() => self.end(CloseReason::Client),
            }
        }
    }

    /// Logs the end of a catch-up.
    fn catchup_done(&mut self, how: &str) {
        if let Some((at, events)) = self.catchup_started.take() {
            tracing::info!(
                conn = self.id,
                events,
                duration_ms = at.elapsed().as_millis() as u64,
                "catch-up {how}"
            );
        }
    }

    /// Waits for the head to reach a resume position that was ahead of it. Another instance
    /// a little further along catches up within milliseconds; a position that is never
    /// reached (a restored cluster, a clock step, a forged id) would mean silence for ever, so
    /// after [`AHEAD_WAIT`] the client is told a `gap` and continues from the subscription
    /// head — from which nothing queued is lost.
    async fn wait_until_reached(&mut self, target: Position, sub: &Subscription) {
        let reached = {
            let hub = Arc::clone(&self.hub);
            let wait = hub.wait_head(|h| h >= &target);
            tokio::select! {
                r = tokio::time::timeout(AHEAD_WAIT, wait) => matches!(r, Ok(true)),
                _ = self.shutdown.changed() => { self.end(CloseReason::Shutdown); return; }
                _ = self.peer.gone() => { self.end(CloseReason::Client); return; }
            }
        };
        if reached {
            return;
        }
        self.hub.count_gap();
        self.hub.metrics.resumed(ResumePath::Gap);
        let gap = json!({
            "reason": "position_ahead",
            "message": "the requested position is ahead of everything MongoDB has told this gateway (a restored cluster, a clock step, or an id from elsewhere); events between `resumed_at` and it are sent, nothing before `resumed_at` can be",
            "last_event_id": target.encode(),
            "resumed_at": sub.head.encode(),
        });
        self.frames.push_back(sse::named_frame(
            "gap",
            Some(sub.head.encode()),
            &gap.to_string(),
        ));
        self.last_sent = sub.head.clone();
    }

    /// A comment keeps proxies from timing the connection out; an `id:`-only message moves the
    /// browser's `lastEventId` to the head when nothing for this connection happened, so its
    /// next reconnect resumes from memory instead of an ever older position.
    fn heartbeat(&mut self, sub: &mut Subscription) {
        let head = self.hub.head();
        // Events up to `head` for this connection are already in the queue: take them first.
        while let Ok(ev) = sub.rx.try_recv() {
            self.send_live(&ev);
        }
        self.frames.push_back(sse::comment_frame("heartbeat"));
        if let Some(head) = head {
            if head > self.last_sent {
                self.frames.push_back(sse::id_only_frame(head.encode()));
                self.last_sent = head;
            }
        }
    }
}
