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

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::watch;

use super::error::ApiError;
use super::gate::Pass;
use super::peer::{Left, Peer};
use super::query::{self, StreamRequest};
use super::{AppState, ConnSocket};
use crate::channel::Channel;
use crate::event::Event;
use crate::hub::{ConnInfo, SubscribeError, Subscription};
use crate::metrics::{CloseReason, ResumePath};
use crate::position::Position;
use crate::resume::gap::{self, GapReason};
use crate::resume::replay::Replay;
use crate::resume::{Refusal, Resumed};
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
    let socket = req.conn_data::<ConnSocket>().copied();
    let closer: crate::hub::Closer = match socket {
        Some(sock) => Box::new(move || sock.shutdown()),
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
    if let (Some(peers), Some(sock)) = (&state.peers, socket) {
        conn.peer = peers.watch(sock.fd());
    }
    conn.frames.push_back(sse::retry_frame(state.retry_ms));
    let resumed = state
        .resume
        .open(&state.hub, &mut sub, r.resume.as_ref(), r.backlog)
        .await
        .map_err(|e| match e {
            Refusal::Busy(code) => ApiError::unavailable(
                code,
                if code == "backlog_busy" {
                    "too many backlogs are being served right now; retry shortly"
                } else {
                    "too many reconnects are catching up right now; retry shortly"
                },
                2,
            ),
            Refusal::Unusable(why) => ApiError::bad_request(
                "unknown_last_event_id",
                format!("MongoDB cannot resume from this event id: {}", brief(&why)),
            ),
            Refusal::Failed(why) => ApiError::unavailable("mongodb_unavailable", brief(&why), 2),
        })?;
    conn.start(resumed);
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

struct Conn {
    hub: Arc<crate::hub::Hub>,
    frames: VecDeque<Bytes>,
    /// A catch-up or backlog streaming from MongoDB; the live queue waits behind it.
    replay: Option<Replay>,
    last_sent: Position,
    heartbeat: tokio::time::Interval,
    shutdown: watch::Receiver<bool>,
    done: bool,
    /// A resume position ahead of the head: wait up to [`AHEAD_WAIT`] for the head to reach
    /// it, else tell the client a `gap` rather than stay silent until it does.
    ahead: Option<Position>,
    /// See `Resumed::seen_through`.
    seen_through: Option<bson::oid::ObjectId>,
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
    /// The running replay: when it started and the events it sent.
    replay_started: Option<(std::time::Instant, u64)>,
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
            replay: None,
            ahead: None,
            seen_through: None,
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
            replay_started: None,
            id: sub.conn,
        }
    }

    /// Takes over what the resume decided: first frames, ring events, a replay.
    fn start(&mut self, r: Resumed) {
        self.resume = r.label;
        self.last_sent = r.last_sent;
        self.ahead = r.ahead;
        self.seen_through = r.seen_through;
        self.frames.extend(r.frames);
        for ev in &r.events {
            self.send_replayed(ev);
        }
        if r.replay.is_some() {
            self.replay_started = Some((std::time::Instant::now(), 0));
        }
        self.replay = r.replay;
    }

    /// The stream is answered: count it and log it.
    fn opened(&mut self, sub: &Subscription) {
        let _ = self.info.resume.set(self.resume);
        self.info.hold(&self.last_sent);
        self.hub.metrics.connection_opened();
        let channels = crate::channel::join(&sub.channels);
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

    /// A backlog row: it carries the subscription head as its id, like every row.
    fn send_row(&mut self, ev: &Event) {
        self.frames.push_back(ev.frame.clone());
        self.info
            .events_sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.hub.metrics.delivered(None);
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
        if let Some(through) = self.seen_through {
            let id = ev.key.as_deref().and_then(crate::event::key_object_id);
            if id.is_some_and(|id| id <= through) {
                return false;
            }
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
            if let Some(replay) = self.replay.as_mut() {
                tokio::select! {
                    item = replay.items.recv() => match item {
                        Some(Ok(ev)) => {
                            if let Some((_, n)) = self.replay_started.as_mut() {
                                *n += 1;
                            }
                            if replay.rows {
                                self.send_row(&ev);
                            } else {
                                self.send_replayed(&ev);
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!("replay failed mid-stream: {e}; closing so the client resumes");
                            self.replay_done("failed");
                            self.end(CloseReason::Error);
                        }
                        // Cut short (stalled reader, shutdown): end rather than continue live
                        // over what it did not send; the client resumes from its last id.
                        None if !replay.is_complete() => {
                            self.replay_done("cut short");
                            let why = if *self.shutdown.borrow() {
                                CloseReason::Shutdown
                            } else {
                                CloseReason::SlowConsumer
                            };
                            self.end(why);
                        }
                        None => {
                            let then = std::mem::take(&mut replay.then);
                            self.replay = None;
                            self.replay_done("complete");
                            for ev in then {
                                self.send_live(&ev);
                            }
                        }
                    },
                    _ = self.shutdown.changed() => self.end(CloseReason::Shutdown),
                    // The live queue waits for the replay; a comment still keeps proxies
                    // from timing out a long one.
                    _ = self.heartbeat.tick() => self.frames.push_back(sse::comment_frame("heartbeat")),
                    _ = until(self.pass.deadline) => self.expire(),
                    left = self.peer.gone() => self.peer_left(left),
                }
                continue;
            }
            tokio::select! {
                biased;
                ev = sub.rx.recv() => match ev {
                    Some(ev) => self.send_live(&ev),
                    // Removed from the router: a slow consumer, an admin close, a gap
                    // restart, or shutdown (`Hub::begin_shutdown`); the hub says which
                    // (`ConnInfo::closed_by`, the shutdown flag) once its lock is free.
                    None => {
                        self.hub.settle();
                        if *self.shutdown.borrow() {
                            self.end(CloseReason::Shutdown);
                        }
                        self.done = true;
                    }
                },
                _ = self.heartbeat.tick() => self.heartbeat(sub),
                _ = until(self.pass.deadline) => self.expire(),
                left = self.peer.gone() => self.peer_left(left),
            }
        }
    }

    /// A client that sent end of file may only have half-closed and still read: write at once,
    /// and a client that really closed answers with a reset the peer watch reports next.
    fn peer_left(&mut self, left: Left) {
        match left {
            Left::Closed => self.end(CloseReason::Client),
            Left::ReadClosed => self.frames.push_back(sse::comment_frame("heartbeat")),
        }
    }

    /// Logs the end of a catch-up or backlog.
    fn replay_done(&mut self, how: &str) {
        if let Some((at, events)) = self.replay_started.take() {
            tracing::info!(
                conn = self.id,
                events,
                duration_ms = at.elapsed().as_millis() as u64,
                "{} {how}",
                if self.resume == "backlog" {
                    "backlog"
                } else {
                    "catch-up"
                }
            );
        }
    }

    /// Waits for the head to reach a resume position that was ahead of it and that no
    /// gateway may have reached yet: beyond the clock horizon, or a polling id of no other
    /// poller (another gateway's ids within the horizon need no wait, see `Resumer::open`).
    /// Such a position may never be reached (a restored cluster, a clock step, a forged id),
    /// which would mean silence for ever, so after [`AHEAD_WAIT`] the client is told a `gap`
    /// and continues from the subscription head — from which nothing queued is lost.
    async fn wait_until_reached(&mut self, target: Position, sub: &Subscription) {
        let reached = {
            let hub = Arc::clone(&self.hub);
            let wait = hub.wait_head(|h| h >= &target);
            tokio::select! {
                r = tokio::time::timeout(AHEAD_WAIT, wait) => matches!(r, Ok(true)),
                _ = self.shutdown.changed() => { self.end(CloseReason::Shutdown); return; }
                left = self.peer.gone() => {
                    if left == Left::ReadClosed {
                        // Back to `next` to write the probe, then wait again.
                        self.ahead = Some(target);
                    }
                    self.peer_left(left);
                    return;
                }
            }
        };
        if reached {
            return;
        }
        self.hub.count_gap();
        self.hub.metrics.resumed(ResumePath::Gap);
        self.frames
            .push_back(gap::frame(GapReason::PositionAhead, &target, &sub.head));
        self.last_sent = sub.head.clone();
        // Never another gateway's position within the clock horizon: that one needs no wait
        // (`Resumer::open`), the resume is exact.
    }

    /// A comment keeps proxies from timing the connection out; an `id:`-only message moves the
    /// browser's `lastEventId` to the head when nothing for this connection happened, so its
    /// next reconnect resumes from memory instead of an ever older position.
    fn heartbeat(&mut self, sub: &mut Subscription) {
        let head = sub.delivered_head();
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
