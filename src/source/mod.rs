//! Where events come from. The gateway runs exactly one source per process (invariant 4:
//! MongoDB load does not grow with browsers); it feeds the [`Hub`](crate::hub::Hub) in
//! commit order. Today that is a database-level change stream; the polling fallback will be a
//! second implementation behind the same hub calls (`source_started`, `publish`, `advance`).

pub mod change_stream;
pub mod pipeline;

use mongodb::error::{Error, ErrorKind};

/// MongoDB's server error codes the gateway acts on.
pub mod codes {
    /// The resume point fell off the oplog.
    pub const CHANGE_STREAM_HISTORY_LOST: i32 = 286;
    /// The resume token is not one this deployment can resume from.
    pub const CHANGE_STREAM_FATAL_ERROR: i32 = 280;
    pub const INVALID_RESUME_TOKEN: i32 = 260;
    pub const BAD_VALUE: i32 = 2;
    pub const FAILED_TO_PARSE: i32 = 9;
}

/// The server error code of a command failure, if that is what `e` is.
pub fn server_code(e: &Error) -> Option<i32> {
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

/// The resume point is gone: an exact resume is impossible.
pub fn is_history_lost(e: &Error) -> bool {
    server_code(e) == Some(codes::CHANGE_STREAM_HISTORY_LOST)
}

/// The server rejected the token itself (foreign, corrupt, or not resumable here).
pub fn is_unusable_token(e: &Error) -> bool {
    matches!(
        server_code(e),
        Some(
            codes::CHANGE_STREAM_FATAL_ERROR
                | codes::INVALID_RESUME_TOKEN
                | codes::BAD_VALUE
                | codes::FAILED_TO_PARSE
        )
    )
}
