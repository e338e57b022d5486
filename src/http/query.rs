//! The stream request: which channels, where to resume, how much backlog. Parsed from the raw
//! query string because `channel` repeats; every problem is reported precisely, and a request
//! is rejected as a whole rather than silently trimmed.

use super::error::ApiError;
use crate::channel::Channel;
use crate::position::{Position, MAX_LEN};
use crate::resume::backlog::MAX_BACKLOG;

#[derive(Debug, Clone, PartialEq)]
pub struct StreamRequest {
    pub channels: Vec<Channel>,
    pub resume: Option<Position>,
    pub backlog: usize,
}

/// Parses `channel=…&channel=…&lastEventId=…&backlog=N`. `last_event_id_header` is the
/// `Last-Event-ID` header; the query parameter wins (a page reload cannot set the header, so
/// pages pass the id they stored in the URL).
pub fn parse(
    query: &str,
    last_event_id_header: Option<&str>,
    max_channels: usize,
    fixed_channel: Option<Channel>,
) -> Result<StreamRequest, ApiError> {
    let mut channels: Vec<Channel> = fixed_channel.into_iter().collect();
    let mut last_event_id: Option<String> = None;
    let mut backlog: Option<String> = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "channel" => {
                if channels.len() >= max_channels {
                    return Err(ApiError::bad_request(
                        "too_many_channels",
                        format!("at most {max_channels} channels per connection"),
                    ));
                }
                let ch = Channel::parse(&value).map_err(|e| {
                    ApiError::bad_request(
                        "invalid_channel",
                        format!("channel {:?}: {e}", truncate(&value)),
                    )
                })?;
                if !channels.contains(&ch) {
                    channels.push(ch);
                }
            }
            "lastEventId" => last_event_id = Some(value.into_owned()),
            "backlog" => backlog = Some(value.into_owned()),
            // Unknown parameters (cache busters, tracking) are ignored, as browsers add them.
            _ => {}
        }
    }
    if channels.is_empty() {
        return Err(ApiError::bad_request(
            "missing_channel",
            "give at least one channel=… parameter",
        ));
    }
    let id = last_event_id
        .as_deref()
        .or(last_event_id_header)
        .filter(|s| !s.is_empty());
    let resume = id
        .map(|s| {
            Position::decode(s).map_err(|e| {
                ApiError::bad_request(
                    "invalid_last_event_id",
                    format!(
                        "event id {:?} is not one this service issued: {e}",
                        truncate(s)
                    ),
                )
            })
        })
        .transpose()?;
    let backlog = match backlog.as_deref() {
        None | Some("") => 0,
        Some(b) => match b.parse::<usize>() {
            Ok(n) if n <= MAX_BACKLOG => n,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_backlog",
                    format!("backlog must be a whole number from 0 to {MAX_BACKLOG}"),
                ))
            }
        },
    };
    Ok(StreamRequest {
        channels,
        resume,
        backlog,
    })
}

/// Echoed input is cut short: an error message must not become an amplifier.
fn truncate(s: &str) -> String {
    let max = 64.min(MAX_LEN);
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repeated_channels_and_prefers_the_query_id() {
        let r = parse(
            "channel=logs:w1&channel=logs:w2:f1&channel=logs:w1&lastEventId=c.82AA&backlog=5&_=1",
            Some("c.82BB"),
            32,
            None,
        )
        .unwrap();
        assert_eq!(r.channels.len(), 2);
        assert_eq!(r.resume.unwrap().encode(), "c.82AA");
        assert_eq!(r.backlog, 5);
        let r = parse("channel=logs", Some("c.82BB"), 32, None).unwrap();
        assert_eq!(r.resume.unwrap().encode(), "c.82BB");
    }

    #[test]
    fn rejects_bad_input_with_codes() {
        let code = |q: &str, h: Option<&str>| parse(q, h, 2, None).unwrap_err().code;
        assert_eq!(code("", None), "missing_channel");
        assert_eq!(
            code("channel=a&channel=b&channel=c", None),
            "too_many_channels"
        );
        assert_eq!(code("channel=a%20b", None), "invalid_channel");
        assert_eq!(code("channel=a:b:c:d:e", None), "invalid_channel");
        assert_eq!(
            code("channel=a&lastEventId=nope", None),
            "invalid_last_event_id"
        );
        assert_eq!(code("channel=a", Some("c.zz")), "invalid_last_event_id");
        assert_eq!(code("channel=a&backlog=1001", None), "invalid_backlog");
        assert_eq!(code("channel=a&backlog=-1", None), "invalid_backlog");
        let long = "x".repeat(5000);
        let e = parse(&format!("channel={long}"), None, 2, None).unwrap_err();
        assert!(e.message.len() < 200);
    }
}
