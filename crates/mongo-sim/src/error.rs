//! MongoDB's command errors, carried as values so every failure reaches the client in the
//! shape a real server uses (`ok: 0`, `errmsg`, `code`, `codeName`, `errorLabels`). Drivers
//! decide whether to retry or resume from exactly these fields, so they must be faithful.

use bson::{doc, Document};

/// An error a command answers with. `code` and `code_name` follow MongoDB's
/// `error_codes.yml`; labels are the ones the server would attach.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandError {
    pub code: i32,
    pub code_name: &'static str,
    pub message: String,
    pub labels: Vec<String>,
    /// Extra reply fields some errors carry (`keyPattern`/`keyValue` on duplicate keys).
    pub extra: Option<Box<Document>>,
}

impl CommandError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CommandError {
            code,
            code_name: code_name(code),
            message: message.into(),
            labels: Vec::new(),
            extra: None,
        }
    }

    pub fn with_extra(mut self, extra: Document) -> Self {
        self.extra = Some(Box::new(extra));
        self
    }

    pub fn with_label(mut self, label: &str) -> Self {
        if !self.labels.iter().any(|l| l == label) {
            self.labels.push(label.to_string());
        }
        self
    }

    /// Wraps the message as MongoDB reports a failure inside a running query (`Executor error
    /// during getMore :: caused by :: ...`), which clients that match on messages expect.
    pub fn with_context(mut self, context: &str) -> Self {
        self.message = format!("{context} :: caused by :: {}", self.message);
        self
    }

    pub fn bad_value(message: impl Into<String>) -> Self {
        Self::new(codes::BAD_VALUE, message)
    }

    pub fn type_mismatch(message: impl Into<String>) -> Self {
        Self::new(codes::TYPE_MISMATCH, message)
    }

    pub fn invalid_namespace(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_NAMESPACE, message)
    }

    pub fn failed_to_parse(message: impl Into<String>) -> Self {
        Self::new(codes::FAILED_TO_PARSE, message)
    }

    /// The reply document, as `{ok: 0, errmsg, code, codeName, errorLabels?}`.
    pub fn to_document(&self) -> Document {
        let mut d = doc! {
            "ok": 0.0,
            "errmsg": self.message.clone(),
            "code": self.code,
            "codeName": self.code_name,
        };
        if !self.labels.is_empty() {
            d.insert("errorLabels", self.labels.clone());
        }
        for (k, v) in self.extra.iter().flat_map(|e| e.iter()) {
            d.insert(k.clone(), v.clone());
        }
        d
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code_name, self.code, self.message)
    }
}

impl std::error::Error for CommandError {}

pub type CommandResult<T> = Result<T, CommandError>;

/// The codes mongo-sim can answer with, named as in MongoDB's `error_codes.yml`.
pub mod codes {
    pub const INTERNAL_ERROR: i32 = 1;
    pub const BAD_VALUE: i32 = 2;
    pub const NO_SUCH_KEY: i32 = 4;
    pub const HOST_UNREACHABLE: i32 = 6;
    pub const HOST_NOT_FOUND: i32 = 7;
    pub const FAILED_TO_PARSE: i32 = 9;
    pub const UNAUTHORIZED: i32 = 13;
    pub const TYPE_MISMATCH: i32 = 14;
    pub const ILLEGAL_OPERATION: i32 = 20;
    pub const NAMESPACE_NOT_FOUND: i32 = 26;
    pub const NO_MATCHING_DOCUMENT: i32 = 47;
    pub const DOLLAR_PREFIXED_FIELD_NAME: i32 = 52;
    pub const INVALID_ID_FIELD: i32 = 53;
    pub const UNKNOWN_REPL_WRITE_CONCERN: i32 = 79;
    pub const UNSATISFIABLE_WRITE_CONCERN: i32 = 100;
    pub const DOCUMENT_VALIDATION_FAILURE: i32 = 121;
    pub const INDEX_NOT_FOUND: i32 = 27;
    pub const CURSOR_NOT_FOUND: i32 = 43;
    pub const NAMESPACE_EXISTS: i32 = 48;
    pub const MAX_TIME_MS_EXPIRED: i32 = 50;
    pub const COMMAND_NOT_FOUND: i32 = 59;
    pub const COMMAND_NOT_SUPPORTED: i32 = 115;
    pub const INTERRUPTED: i32 = 11601;
    pub const IMMUTABLE_FIELD: i32 = 66;
    pub const INVALID_OPTIONS: i32 = 72;
    pub const INVALID_NAMESPACE: i32 = 73;
    pub const INDEX_OPTIONS_CONFLICT: i32 = 85;
    pub const INDEX_KEY_SPECS_CONFLICT: i32 = 86;
    pub const NETWORK_TIMEOUT: i32 = 89;
    pub const SHUTDOWN_IN_PROGRESS: i32 = 91;
    pub const PRIMARY_STEPPED_DOWN: i32 = 189;
    pub const CHANGE_STREAM_FATAL_ERROR: i32 = 280;
    pub const CHANGE_STREAM_HISTORY_LOST: i32 = 286;
    pub const CAPPED_POSITION_LOST: i32 = 136;
    pub const DUPLICATE_KEY: i32 = 11000;
    pub const NOT_WRITABLE_PRIMARY: i32 = 10107;
    pub const BSON_OBJECT_TOO_LARGE: i32 = 10334;
    pub const UNRECOGNIZED_PIPELINE_STAGE: i32 = 40324;
    pub const LOCATION_40415: i32 = 40415;
    pub const CHANGE_STREAM_NOT_REPLICA_SET: i32 = 40573;
}

/// MongoDB's name for a code. Codes without a name in `error_codes.yml` (the many `uassert`
/// locations such as 15975, and whatever a fail point injects) are `Location<code>`, as the
/// server names them.
pub fn code_name(code: i32) -> &'static str {
    match code {
        1 => "InternalError",
        8 => "UnknownError",
        28 => "PathNotViable",
        64 => "WriteConcernFailed",
        67 => "CannotCreateIndex",
        100 => "UnsatisfiableWriteConcern",
        352 => "UnsupportedOpQueryCommand",
        2 => "BadValue",
        4 => "NoSuchKey",
        6 => "HostUnreachable",
        7 => "HostNotFound",
        9 => "FailedToParse",
        11 => "UserNotFound",
        13 => "Unauthorized",
        14 => "TypeMismatch",
        20 => "IllegalOperation",
        26 => "NamespaceNotFound",
        27 => "IndexNotFound",
        40 => "ConflictingUpdateOperators",
        43 => "CursorNotFound",
        48 => "NamespaceExists",
        50 => "MaxTimeMSExpired",
        52 => "DollarPrefixedFieldName",
        53 => "InvalidIdField",
        79 => "UnknownReplWriteConcern",
        121 => "DocumentValidationFailure",
        59 => "CommandNotFound",
        115 => "CommandNotSupported",
        63 => "StaleShardVersion",
        66 => "ImmutableField",
        72 => "InvalidOptions",
        73 => "InvalidNamespace",
        85 => "IndexOptionsConflict",
        86 => "IndexKeySpecsConflict",
        89 => "NetworkTimeout",
        91 => "ShutdownInProgress",
        112 => "WriteConflict",
        133 => "FailedToSatisfyReadPreference",
        136 => "CappedPositionLost",
        134 => "ReadConcernMajorityNotAvailableYet",
        150 => "StaleEpoch",
        175 => "QueryPlanKilled",
        189 => "PrimarySteppedDown",
        202 => "NetworkInterfaceExceededTimeLimit",
        216 => "ElectionInProgress",
        234 => "RetryChangeStream",
        262 => "ExceededTimeLimit",
        280 => "ChangeStreamFatalError",
        286 => "ChangeStreamHistoryLost",
        9001 => "SocketException",
        10107 => "NotWritablePrimary",
        10334 => "BSONObjectTooLarge",
        11000 => "DuplicateKey",
        11600 => "InterruptedAtShutdown",
        11601 => "Interrupted",
        11602 => "InterruptedDueToReplStateChange",
        13388 => "StaleConfig",
        13435 => "NotPrimaryNoSecondaryOk",
        13436 => "NotPrimaryOrSecondary",
        47 => "NoMatchingDocument",
        260 => "InvalidResumeToken",
        _ => location_name(code),
    }
}

/// `Location<code>`, interned so `CommandError` can keep a `&'static str`; one small string per
/// distinct code ever answered.
fn location_name(code: i32) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashMap<i32, &'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    names
        .entry(code)
        .or_insert_with(|| Box::leak(format!("Location{code}").into_boxed_str()))
}

/// The codes after which MongoDB marks a change-stream `getMore` failure with the
/// `ResumableChangeStreamError` label (the server-side list behind the driver spec's allow-list).
pub fn is_resumable_change_stream_code(code: i32) -> bool {
    matches!(
        code,
        6 | 7
            | 89
            | 91
            | 133
            | 150
            | 189
            | 234
            | 262
            | 9001
            | 10107
            | 11600
            | 11602
            | 13388
            | 13435
            | 13436
            | 63
    )
}
