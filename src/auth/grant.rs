//! Grants: what a token allows. A grant is a channel name whose segments may be `*` (any one
//! segment), and it covers its channel and every channel below it: `logs:w1` covers `logs:w1`
//! and `logs:w1:f9`; `logs:*:f1` covers `logs:w2:f1` but not `logs:w2`; `*` covers everything.
//!
//! Matching is segment by segment, never by string prefix: `logs:w1` must not cover `logs:w10`.

use std::fmt;
use std::sync::Arc;

use crate::channel::{is_segment, Channel, MAX_SEGMENTS, MAX_SEGMENT_LEN, SEPARATOR};

/// The wildcard segment.
pub const ANY: &str = "*";

/// A validated grant. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Grant(Arc<str>);

/// Why a string is not a grant. The message says which segment and why: it ends up in a 401
/// returned to whoever minted the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantError {
    Empty,
    TooManySegments {
        count: usize,
    },
    /// Segment `index` (1-based) is neither `*` nor a channel segment.
    BadSegment {
        index: usize,
    },
}

impl fmt::Display for GrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantError::Empty => write!(f, "grant is empty"),
            GrantError::TooManySegments { count } => write!(
                f,
                "grant has {count} segments, at most {MAX_SEGMENTS} are allowed"
            ),
            GrantError::BadSegment { index } => write!(
                f,
                "segment {index} of the grant is neither * nor 1 to {MAX_SEGMENT_LEN} characters of A-Z a-z 0-9 _ . -"
            ),
        }
    }
}

impl std::error::Error for GrantError {}

impl Grant {
    /// Parses `seg[:seg…]`, 1 to [`MAX_SEGMENTS`] segments, each `*` or a channel segment.
    pub fn parse(s: &str) -> Result<Grant, GrantError> {
        if s.is_empty() {
            return Err(GrantError::Empty);
        }
        let count = s.split(SEPARATOR).count();
        if count > MAX_SEGMENTS {
            return Err(GrantError::TooManySegments { count });
        }
        for (i, seg) in s.split(SEPARATOR).enumerate() {
            if seg != ANY && !is_segment(seg) {
                return Err(GrantError::BadSegment { index: i + 1 });
            }
        }
        Ok(Grant(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this grant allows subscribing to `channel`: the channel has at least as many
    /// segments as the grant, and each of the grant's segments is `*` or equal to the
    /// channel's segment at the same place.
    pub fn covers(&self, channel: &Channel) -> bool {
        let mut ch = channel.segments();
        self.0.split(SEPARATOR).all(|g| match ch.next() {
            Some(c) => g == ANY || g == c,
            None => false,
        })
    }
}

/// Whether any of `grants` covers `channel`.
pub fn any_covers(grants: &[Grant], channel: &Channel) -> bool {
    grants.iter().any(|g| g.covers(channel))
}

/// The channels that none of `grants` covers, in request order.
pub fn uncovered<'a>(grants: &[Grant], channels: &'a [Channel]) -> Vec<&'a Channel> {
    channels.iter().filter(|c| !any_covers(grants, c)).collect()
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Grant({:?})", &*self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Grant {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Grant::parse(&s).map_err(|e| {
            let shown: String = s.chars().take(64).collect();
            serde::de::Error::custom(format!("{shown:?}: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ch(s: &str) -> Channel {
        Channel::parse(s).unwrap()
    }

    fn g(s: &str) -> Grant {
        Grant::parse(s).unwrap()
    }

    #[test]
    fn covers_its_channel_and_below() {
        assert!(g("logs:w1").covers(&ch("logs:w1")));
        assert!(g("logs:w1").covers(&ch("logs:w1:f9")));
        assert!(!g("logs:w1").covers(&ch("logs:w10")));
        assert!(!g("logs:w1").covers(&ch("logs")));
        assert!(!g("logs:w1").covers(&ch("jobs:w1")));
        assert!(g("logs").covers(&ch("logs:a:b:c")));
    }

    #[test]
    fn wildcards_match_one_segment() {
        assert!(g("*").covers(&ch("anything:at:all")));
        assert!(g("logs:*:f1").covers(&ch("logs:w2:f1")));
        assert!(g("logs:*:f1").covers(&ch("logs:w2:f1:x")));
        assert!(!g("logs:*:f1").covers(&ch("logs:w2")));
        assert!(!g("logs:*:f1").covers(&ch("logs:w2:f2")));
        assert!(g("logs:*").covers(&ch("logs:w1")));
        assert!(!g("logs:*").covers(&ch("logs")));
        // `*` is only a whole segment: `w*` is not a pattern, and not a valid segment either.
        assert_eq!(
            Grant::parse("logs:w*"),
            Err(GrantError::BadSegment { index: 2 })
        );
    }

    #[test]
    fn rejects_bad_grants() {
        assert_eq!(Grant::parse(""), Err(GrantError::Empty));
        assert_eq!(
            Grant::parse("a:b:c:d:e"),
            Err(GrantError::TooManySegments { count: 5 })
        );
        assert_eq!(
            Grant::parse("logs::x"),
            Err(GrantError::BadSegment { index: 2 })
        );
        assert_eq!(
            Grant::parse("logs:**"),
            Err(GrantError::BadSegment { index: 2 })
        );
        assert_eq!(
            Grant::parse("a b"),
            Err(GrantError::BadSegment { index: 1 })
        );
        let e: Result<Grant, _> = serde_json::from_str("\"logs:\\n\"");
        assert!(e.unwrap_err().to_string().contains("segment 2"));
    }

    #[test]
    fn lists_the_uncovered_channels() {
        let grants = [g("logs:w1"), g("jobs:*:x")];
        let asked = [
            ch("logs:w1:f1"),
            ch("logs:w2"),
            ch("jobs:a:x"),
            ch("jobs:a"),
        ];
        let refused: Vec<&str> = uncovered(&grants, &asked)
            .into_iter()
            .map(Channel::as_str)
            .collect();
        assert_eq!(refused, ["logs:w2", "jobs:a"]);
        assert_eq!(uncovered(&[], &asked).len(), 4);
    }

    /// The reference: a grant covers a channel when the channel itself or one of its ancestors
    /// has exactly the grant's segment count and matches it segment-wise — computed on strings
    /// rebuilt from scratch, independent of the iterator-based implementation above.
    fn naive_covers(grant: &str, channel: &str) -> bool {
        let gs: Vec<&str> = grant.split(':').collect();
        let cs: Vec<&str> = channel.split(':').collect();
        (1..=cs.len()).any(|n| {
            let prefix = &cs[..n];
            prefix.len() == gs.len() && prefix.iter().zip(&gs).all(|(c, g)| *g == "*" || *g == *c)
        })
    }

    fn segment() -> impl Strategy<Value = String> {
        // A tiny alphabet makes equal segments (and so real matches) frequent.
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("a1".to_string()),
            "[A-Za-z0-9_.-]{1,6}",
        ]
    }

    fn channel_str() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 1..=MAX_SEGMENTS).prop_map(|v| v.join(":"))
    }

    fn grant_str() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![1 => Just("*".to_string()), 3 => segment()],
            1..=MAX_SEGMENTS,
        )
        .prop_map(|v| v.join(":"))
    }

    proptest! {
        #[test]
        fn matching_agrees_with_the_reference(grant in grant_str(), channel in channel_str()) {
            let gr = Grant::parse(&grant).unwrap();
            let c = Channel::parse(&channel).unwrap();
            prop_assert_eq!(gr.covers(&c), naive_covers(&grant, &channel));
        }

        #[test]
        fn a_channel_name_is_a_grant_covering_exactly_itself_and_below(
            a in channel_str(), b in channel_str()
        ) {
            let gr = Grant::parse(&a).unwrap();
            let c = Channel::parse(&b).unwrap();
            prop_assert_eq!(gr.covers(&c), c.is_within(&Channel::parse(&a).unwrap()));
        }

        #[test]
        fn parsing_never_panics_and_accepts_only_the_syntax(s in "\\PC{0,40}") {
            let ok = Grant::parse(&s).is_ok();
            let valid = !s.is_empty()
                && s.split(':').count() <= MAX_SEGMENTS
                && s.split(':').all(|seg| seg == "*" || is_segment(seg));
            prop_assert_eq!(ok, valid);
        }
    }
}
