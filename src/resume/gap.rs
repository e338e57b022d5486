//! The `gap` event: what a client is told, before anything else, when it cannot be resumed
//! exactly (invariant 2). Its id is where the stream continues from, so a reconnect after it
//! does not ask for the same impossible stretch again.

use bytes::Bytes;
use serde_json::json;

use crate::position::Position;
use crate::sse;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The position fell off MongoDB's oplog.
    HistoryLost,
    /// A polling position further behind than a catch-up replays.
    TooFarBehind,
    /// A position of the other streaming mode, older than memory.
    ModeChanged,
    /// A position the head never reached (a restored cluster, a clock step, a forged id).
    PositionAhead,
    /// A polling position counting late documents the way another poller saw them (see
    /// `hub::Recount`).
    LateOrderUnknown,
}

impl GapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::HistoryLost => "history_lost",
            GapReason::TooFarBehind => "too_far_behind",
            GapReason::ModeChanged => "mode_changed",
            GapReason::PositionAhead => "position_ahead",
            GapReason::LateOrderUnknown => "late_order_unknown",
        }
    }

    fn message(self) -> &'static str {
        match self {
            GapReason::HistoryLost => "the requested position is no longer in MongoDB's oplog; events between it and `resumed_at` cannot be replayed",
            GapReason::TooFarBehind => "the requested polling position is more documents behind than a catch-up replays; events between it and `resumed_at` are not sent",
            GapReason::ModeChanged => "the requested position belongs to the other streaming mode (change stream / polling) and is older than this gateway's memory; events between it and `resumed_at` cannot be replayed",
            GapReason::PositionAhead => "the requested position is ahead of everything MongoDB has told this gateway and ahead of its clock (a restored cluster, a clock step, a forged id); events between `resumed_at` and it are sent, nothing before `resumed_at` can be",
            GapReason::LateOrderUnknown => "the requested polling position counts documents that arrived late the way another gateway (or an earlier poller of this one) saw them; this gateway cannot tell which of them the client has, so late documents before `resumed_at` may be missing; nothing is repeated",
        }
    }
}

/// The `gap` frame for a client that asked for `last_event_id` and continues at `resumed_at`.
pub fn frame(reason: GapReason, last_event_id: &Position, resumed_at: &Position) -> Bytes {
    let body = json!({
        "reason": reason.as_str(),
        "message": reason.message(),
        "last_event_id": last_event_id.encode(),
        "resumed_at": resumed_at.encode(),
    });
    sse::named_frame("gap", Some(resumed_at.encode()), &body.to_string())
}
