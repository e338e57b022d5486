//! The event-stream format as the HTML standard's `EventSource` parses it: lines end at LF, CR
//! or CRLF; `data:` lines accumulate; `event:` names the message; `id:` sets the last event id
//! (unless it contains NUL) and is kept even when the message has no data (so id-only
//! heartbeats move it); `retry:` (digits only) sets the reconnection time; a blank line
//! dispatches.

/// A dispatched message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub event: String,
    pub data: String,
    /// The last event id when it was dispatched (its own `id:`, or the one before).
    pub id: String,
}

#[derive(Default)]
pub struct Parser {
    line: Vec<u8>,
    last_was_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    id_buffer: Option<String>,
    /// The last event id, as `EventSource.lastEventId`.
    pub last_event_id: Option<String>,
    /// The reconnection time a `retry:` field set.
    pub retry_ms: Option<u64>,
}

impl Parser {
    /// A parser for a new connection: the last event id carries over, as in a browser.
    pub fn new(last_event_id: Option<String>) -> Parser {
        Parser {
            id_buffer: last_event_id.clone(),
            last_event_id,
            ..Parser::default()
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.last_was_cr => self.last_was_cr = false,
                b'\n' | b'\r' => {
                    self.last_was_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&String::from_utf8_lossy(&line), &mut out);
                }
                _ => {
                    self.last_was_cr = false;
                    self.line.push(b);
                }
            }
        }
        out
    }

    fn line_done(&mut self, line: &str, out: &mut Vec<Message>) {
        if line.is_empty() {
            self.last_event_id = self.id_buffer.clone();
            let event = std::mem::take(&mut self.event);
            if self.has_data {
                self.has_data = false;
                out.push(Message {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    },
                    data: std::mem::take(&mut self.data),
                    id: self.last_event_id.clone().unwrap_or_default(),
                });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = value.to_string(),
            "id" if !value.contains('\0') => {
                self.id_buffer = (!value.is_empty()).then(|| value.to_string());
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry_ms = value.parse().ok();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_retry_and_events_as_a_browser_sees_them() {
        let mut p = Parser::new(Some("old".into()));
        assert!(p.feed(b"retry: 1500\n\nid: a1\nda").is_empty());
        assert_eq!(p.retry_ms, Some(1500));
        let msgs = p.feed(b"ta: {\"x\":1}\r\n\r\nevent: gap\ndata: {}\n\nid: a2\n\n: hb\n\n");
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].event, "message");
        assert_eq!(msgs[1].event, "gap");
        assert_eq!((msgs[0].id.as_str(), msgs[1].id.as_str()), ("a1", "a1"));
        // An id-only message moves the last event id without dispatching anything.
        assert_eq!(p.last_event_id.as_deref(), Some("a2"));
    }
}
