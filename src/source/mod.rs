//! Where events come from. The gateway runs exactly one source per process (invariant 4:
//! MongoDB load does not grow with browsers); it feeds the [`Hub`](crate::hub::Hub) in
//! commit order. Today that is a database-level change stream; the polling fallback will be a
//! second implementation behind the same hub calls (`source_started`, `publish`, `advance`).

pub mod change_stream;
pub mod pipeline;
pub mod polling;
pub mod supervisor;

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

/// What the browsers are told about how they are being fed (the named `mode` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ChangeStream,
    Polling { interval_ms: u64 },
}

impl Mode {
    pub fn to_json(self) -> String {
        match self {
            Mode::ChangeStream => r#"{"mode":"change_stream"}"#.to_string(),
            Mode::Polling { interval_ms } => {
                format!(r#"{{"mode":"polling","interval_ms":{interval_ms}}}"#)
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::ChangeStream => "change_stream",
            Mode::Polling { .. } => "polling",
        }
    }
}

/// The server errors that mean "change streams are not available here", as opposed to
/// transient failures (network, elections), which are never a reason to switch to polling.
pub const CHANGE_STREAMS_UNAVAILABLE: &[(i32, &str)] = &[
    (
        40573,
        "the server is not a replica set member (Location40573)",
    ),
    (
        13,
        "the user lacks the changeStream privilege (Unauthorized)",
    ),
    (
        115,
        "the server does not support the command (CommandNotSupported)",
    ),
    (
        40324,
        "the server does not know the $changeStream stage (Location40324)",
    ),
];

/// Why change streams are unavailable, if `e` says they are.
pub fn unavailable_reason(e: &Error) -> Option<&'static str> {
    let code = server_code(e)?;
    CHANGE_STREAMS_UNAVAILABLE
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, why)| *why)
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
