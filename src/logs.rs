//! The process's log output: one line per event, as text (the default) or as one JSON object
//! per line (`SSE_LOG_FORMAT=json`) for log shippers; filtered by `RUST_LOG`.
//!
//! What is logged never carries a token or a connection-string password: the access log
//! redacts tokens in URLs (`http::access_log`), the configuration logs only
//! `Config::redacted_uri`, and the admin and JWT secrets are kept as digests or keys that have
//! no `Display`.

use std::str::FromStr;

/// `SSE_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}` is not one of text, json")),
        }
    }
}

/// The filter when `RUST_LOG` is unset or invalid.
pub const DEFAULT_FILTER: &str = "info,actix_server=warn";

/// Installs the global subscriber, writing to stderr, filtered by `RUST_LOG` or else by
/// `default_filter` (`DEFAULT_FILTER` for `serve`; commands that talk to a person on stdout
/// keep stderr to warnings).
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_two_formats_only() {
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("JSON".parse::<LogFormat>().is_err());
        assert!("".parse::<LogFormat>().is_err());
    }
}
