//! The `text/event-stream` wire format.
//!
//! Frames are built once into [`Bytes`] and the same buffer is written to every subscriber, so
//! fan-out costs a reference count, not a serialization. Field syntax follows the HTML
//! Standard, "Server-sent events", section 9.2.6 "Interpreting an event stream":
//! <https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>.
//!
//! Lines end at CR, LF or CRLF, so a value containing any of them would end its field early and
//! the rest would be parsed as a new field: an injection. Multi-line payloads and comments are
//! therefore split into one field per line (which the parser joins back with `\n` for `data`);
//! single-line fields (`id`, `event`) have CR and LF removed.

use bytes::{BufMut, Bytes, BytesMut};

/// `id: <id>\ndata: <json>\n\n`: one event carrying a position and a JSON payload.
///
/// `json` is normally compact `serde_json` output, which has no raw newlines; if it does
/// contain CR or LF it is split into several `data:` lines, which the browser reassembles.
pub fn data_frame(id: &str, json: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(id.len() + json.len() + 14);
    put_single_line(&mut buf, "id", id);
    put_multi_line(&mut buf, "data", json);
    buf.put_u8(b'\n');
    buf.freeze()
}

/// `event: <event>\n[id: <id>\n]data: <json>\n\n`: a named event (e.g. `gap`), which browsers
/// deliver to `addEventListener(<event>)` rather than `onmessage`.
pub fn named_frame(event: &str, id: Option<&str>, json: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(event.len() + json.len() + 64);
    put_single_line(&mut buf, "event", event);
    if let Some(id) = id {
        put_single_line(&mut buf, "id", id);
    }
    put_multi_line(&mut buf, "data", json);
    buf.put_u8(b'\n');
    buf.freeze()
}

/// `id: <id>\n\n`: moves the client's position without delivering a message.
///
/// Used when the head advances without an event for this subscriber (quiet database, or
/// events on other channels), so a reconnect resumes from a recent position instead of
/// replaying a long stretch. It works because the HTML Standard's "dispatch the event"
/// algorithm first sets the event source's last event ID string from the buffer and only then
/// returns early when the data buffer is empty:
/// <https://html.spec.whatwg.org/multipage/server-sent-events.html#dispatchMessage>.
pub fn id_only_frame(id: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(id.len() + 6);
    put_single_line(&mut buf, "id", id);
    buf.put_u8(b'\n');
    buf.freeze()
}

/// `: <text>\n\n`: a comment, ignored by the client. Used as a heartbeat so proxies and load
/// balancers do not close an idle stream.
pub fn comment_frame(text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 4);
    for line in lines(text) {
        buf.put_slice(b": ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// `retry: <ms>\n\n`: the reconnection delay the browser should use.
pub fn retry_frame(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// Splits at CRLF, CR or LF, as the event-stream parser does.
fn lines(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

fn put_multi_line(buf: &mut BytesMut, field: &str, value: &str) {
    for line in lines(value) {
        buf.put_slice(field.as_bytes());
        buf.put_slice(b": ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
}

fn put_single_line(buf: &mut BytesMut, field: &str, value: &str) {
    buf.put_slice(field.as_bytes());
    buf.put_slice(b": ");
    if value.contains(['\r', '\n']) {
        for part in value.split(['\r', '\n']) {
            buf.put_slice(part.as_bytes());
        }
    } else {
        buf.put_slice(value.as_bytes());
    }
    buf.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data() {
        assert_eq!(
            &data_frame("c.82AB", r#"{"a":1}"#)[..],
            b"id: c.82AB\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(&data_frame("c.1", "")[..], b"id: c.1\ndata: \n\n");
    }

    #[test]
    fn data_with_newlines_is_split() {
        assert_eq!(
            &data_frame("1", "a\nb\r\nc\rd")[..],
            b"id: 1\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        // The parser appends "\n" per data line and strips the last one: "a\n\n" -> "a\n",
        // the original value.
        assert_eq!(&data_frame("1", "a\n")[..], b"id: 1\ndata: a\ndata: \n\n");
    }

    #[test]
    fn named() {
        assert_eq!(
            &named_frame("gap", Some("c.00"), r#"{"x":true}"#)[..],
            b"event: gap\nid: c.00\ndata: {\"x\":true}\n\n"
        );
        assert_eq!(
            &named_frame("error", None, "{}")[..],
            b"event: error\ndata: {}\n\n"
        );
    }

    #[test]
    fn id_only() {
        assert_eq!(&id_only_frame("c.AB")[..], b"id: c.AB\n\n");
    }

    #[test]
    fn single_line_fields_cannot_inject() {
        assert_eq!(&id_only_frame("a\ndata: x")[..], b"id: adata: x\n\n");
        assert_eq!(
            &named_frame("a\r\nb", None, "1")[..],
            b"event: ab\ndata: 1\n\n"
        );
    }

    #[test]
    fn comment_and_retry() {
        assert_eq!(&comment_frame("ping")[..], b": ping\n\n");
        assert_eq!(&comment_frame("a\nb")[..], b": a\n: b\n\n");
        assert_eq!(&comment_frame("")[..], b": \n\n");
        assert_eq!(&retry_frame(3000)[..], b"retry: 3000\n\n");
        assert_eq!(&retry_frame(0)[..], b"retry: 0\n\n");
    }
}
