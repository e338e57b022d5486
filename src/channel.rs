//! Channel names: the unit of subscription.
//!
//! A channel is a colon-separated path such as `logs:w1:f1` (source prefix, workspace,
//! workflow). Subscribing to an ancestor (`logs:w1`) means receiving every descendant's events,
//! so the router looks an event up under its own channel *and* each ancestor. Channel names
//! travel in URLs, headers and JSON, so the alphabet is deliberately small: nothing that needs
//! escaping, nothing that could be confused with the separator.

use std::fmt;
use std::sync::Arc;

/// At most four segments: a source prefix plus three routing fields.
pub const MAX_SEGMENTS: usize = 4;

/// Longest segment, in bytes. Generous for ids (an ObjectId is 24 hex digits, a UUID 36).
pub const MAX_SEGMENT_LEN: usize = 128;

/// Separator between segments.
pub const SEPARATOR: char = ':';

/// A validated channel name. Cheap to clone (the text is shared).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Channel(Arc<str>);

/// Why a string is not a channel name. The message says which segment and why, because it is
/// returned to whoever typed the channel (a browser URL, a publish request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// The whole name is empty.
    Empty,
    /// More than [`MAX_SEGMENTS`] segments.
    TooManySegments { count: usize },
    /// Segment `index` (1-based) is empty, e.g. `logs::f1` or a trailing `:`.
    EmptySegment { index: usize },
    /// Segment `index` (1-based) is longer than [`MAX_SEGMENT_LEN`] bytes.
    SegmentTooLong { index: usize, len: usize },
    /// Segment `index` (1-based) contains a character outside `[A-Za-z0-9_.-]`.
    InvalidChar { index: usize, ch: char },
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::Empty => write!(f, "channel name is empty"),
            ChannelError::TooManySegments { count } => write!(
                f,
                "channel has {count} segments, at most {MAX_SEGMENTS} are allowed"
            ),
            ChannelError::EmptySegment { index } => {
                write!(f, "segment {index} of the channel is empty")
            }
            ChannelError::SegmentTooLong { index, len } => write!(
                f,
                "segment {index} of the channel is {len} bytes long, at most {MAX_SEGMENT_LEN} are allowed"
            ),
            ChannelError::InvalidChar { index, ch } => write!(
                f,
                "segment {index} of the channel contains {ch:?}; allowed are A-Z a-z 0-9 _ . -"
            ),
        }
    }
}

impl std::error::Error for ChannelError {}

/// Whether `s` is a valid channel segment: 1..=128 bytes of `[A-Za-z0-9_.-]`.
///
/// Public so that routing can decide whether a document field value can extend a channel
/// without building an error.
pub fn is_segment(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SEGMENT_LEN && s.bytes().all(is_segment_byte)
}

fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn check_segment(index: usize, seg: &str) -> Result<(), ChannelError> {
    if seg.is_empty() {
        return Err(ChannelError::EmptySegment { index });
    }
    if let Some(ch) = seg
        .chars()
        .find(|c| !c.is_ascii() || !is_segment_byte(*c as u8))
    {
        return Err(ChannelError::InvalidChar { index, ch });
    }
    if seg.len() > MAX_SEGMENT_LEN {
        return Err(ChannelError::SegmentTooLong {
            index,
            len: seg.len(),
        });
    }
    Ok(())
}

impl Channel {
    /// Parses and validates a channel name.
    pub fn parse(s: &str) -> Result<Channel, ChannelError> {
        if s.is_empty() {
            return Err(ChannelError::Empty);
        }
        let count = s.split(SEPARATOR).count();
        if count > MAX_SEGMENTS {
            return Err(ChannelError::TooManySegments { count });
        }
        for (i, seg) in s.split(SEPARATOR).enumerate() {
            check_segment(i + 1, seg)?;
        }
        Ok(Channel(Arc::from(s)))
    }

    /// Builds a channel from segments already known to be valid (routing checks each value
    /// with [`is_segment`] first). Invalid input is still rejected rather than trusted.
    pub fn from_segments<'a>(
        segments: impl IntoIterator<Item = &'a str>,
    ) -> Result<Channel, ChannelError> {
        let mut s = String::new();
        for (i, seg) in segments.into_iter().enumerate() {
            // A segment that carries the separator (`w1%3Ax` in a URL path, decoded) would
            // make more segments than the caller built: another channel than it meant.
            if seg.contains(SEPARATOR) {
                return Err(ChannelError::InvalidChar {
                    index: i + 1,
                    ch: SEPARATOR,
                });
            }
            if i > 0 {
                s.push(SEPARATOR);
            }
            s.push_str(seg);
        }
        Channel::parse(&s)
    }

    /// Wraps a name the caller has already validated (routing checks each piece). Debug
    /// builds re-check it.
    pub(crate) fn new_unchecked(name: String) -> Channel {
        debug_assert!(Channel::parse(&name).is_ok(), "invalid channel {name:?}");
        Channel(Arc::from(name))
    }

    /// The channel name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.split(SEPARATOR)
    }

    /// Number of segments (1..=4).
    pub fn depth(&self) -> usize {
        self.segments().count()
    }

    /// The channel itself, then each ancestor up to the first segment:
    /// `logs:w1:f1`, `logs:w1`, `logs`. The items are slices of this channel's own buffer,
    /// so the router can look each one up without allocating.
    pub fn ancestors_and_self(&self) -> impl Iterator<Item = &str> + '_ {
        std::iter::successors(Some(self.as_str()), |s| s.rfind(SEPARATOR).map(|i| &s[..i]))
    }

    /// Whether an event on `self` is delivered to a subscriber of `other`, i.e. `other` is
    /// `self` or one of its ancestors.
    pub fn is_within(&self, other: &Channel) -> bool {
        self.ancestors_and_self().any(|a| a == other.as_str())
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Channel({:?})", &*self.0)
    }
}

impl AsRef<str> for Channel {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Channel {
    type Err = ChannelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::parse(s)
    }
}

impl serde::Serialize for Channel {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Channel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Channel::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Channels as one comma-separated string, for log lines.
pub fn join(channels: &[Channel]) -> String {
    channels
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for s in [
            "logs",
            "logs:w1",
            "logs:w1:f1",
            "a:b:c:d",
            "A-z_0.9",
            "x:-:_:.",
        ] {
            let c = Channel::parse(s).expect(s);
            assert_eq!(c.as_str(), s);
            assert_eq!(c.to_string(), s);
        }
        let long = "a".repeat(MAX_SEGMENT_LEN);
        assert!(Channel::parse(&format!("logs:{long}")).is_ok());
    }

    #[test]
    fn rejects_with_precise_errors() {
        assert_eq!(Channel::parse(""), Err(ChannelError::Empty));
        assert_eq!(
            Channel::parse("a:b:c:d:e"),
            Err(ChannelError::TooManySegments { count: 5 })
        );
        assert_eq!(
            Channel::parse("logs::f1"),
            Err(ChannelError::EmptySegment { index: 2 })
        );
        assert_eq!(
            Channel::parse("logs:"),
            Err(ChannelError::EmptySegment { index: 2 })
        );
        assert_eq!(
            Channel::parse(":logs"),
            Err(ChannelError::EmptySegment { index: 1 })
        );
        assert_eq!(
            Channel::parse("logs:w 1"),
            Err(ChannelError::InvalidChar { index: 2, ch: ' ' })
        );
        assert_eq!(
            Channel::parse("logs:w1:é"),
            Err(ChannelError::InvalidChar { index: 3, ch: 'é' })
        );
        assert_eq!(
            Channel::parse("logs/w1"),
            Err(ChannelError::InvalidChar { index: 1, ch: '/' })
        );
        let long = "a".repeat(MAX_SEGMENT_LEN + 1);
        assert_eq!(
            Channel::parse(&format!("logs:{long}")),
            Err(ChannelError::SegmentTooLong { index: 2, len: 129 })
        );
        let msg = Channel::parse("logs:w\n1").unwrap_err().to_string();
        assert_eq!(
            msg,
            "segment 2 of the channel contains '\\n'; allowed are A-Z a-z 0-9 _ . -"
        );
    }

    #[test]
    fn ancestors_are_slices_of_the_same_buffer() {
        let c = Channel::parse("logs:w1:f1").unwrap();
        let v: Vec<&str> = c.ancestors_and_self().collect();
        assert_eq!(v, ["logs:w1:f1", "logs:w1", "logs"]);
        for a in &v {
            assert_eq!(a.as_ptr(), c.as_str().as_ptr());
        }
        let root = Channel::parse("logs").unwrap();
        assert_eq!(root.ancestors_and_self().collect::<Vec<_>>(), ["logs"]);
    }

    #[test]
    fn within_and_depth() {
        let c = Channel::parse("logs:w1:f1").unwrap();
        assert_eq!(c.depth(), 3);
        assert!(c.is_within(&Channel::parse("logs:w1").unwrap()));
        assert!(c.is_within(&c));
        assert!(!c.is_within(&Channel::parse("logs:w").unwrap()));
        assert!(!Channel::parse("logs:w1").unwrap().is_within(&c));
    }

    #[test]
    fn is_segment_matches_parse() {
        assert!(is_segment("w1"));
        assert!(!is_segment(""));
        assert!(!is_segment("a:b"));
        assert!(!is_segment(&"a".repeat(129)));
        assert!(!is_segment("ü"));
    }

    #[test]
    fn from_segments_validates() {
        assert_eq!(
            Channel::from_segments(["logs", "w1"]).unwrap().as_str(),
            "logs:w1"
        );
        assert!(Channel::from_segments(["logs", "a:b:c:d"]).is_err());
    }

    #[test]
    fn serde_round_trip_validates() {
        let c: Channel = serde_json::from_str("\"logs:w1\"").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"logs:w1\"");
        assert!(serde_json::from_str::<Channel>("\"logs::\"").is_err());
    }
}
