//! Events per channel over the last minute, for `GET /admin/channels`: six 10-second buckets
//! per channel (and per ancestor, so `logs:w1` counts every workflow of `w1`). Channels with
//! no event for a minute are forgotten, so memory follows the channels active recently.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

const BUCKET_SECS: u64 = 10;
const BUCKETS: usize = 6;

#[derive(Default)]
pub struct ChannelRates {
    by_channel: HashMap<Box<str>, [(u64, u32); BUCKETS]>,
    last_prune: u64,
}

fn slot_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / BUCKET_SECS)
        .unwrap_or(0)
}

impl ChannelRates {
    /// Counts one event on `channel` and each of its ancestors.
    pub fn record(&mut self, channel: &str) {
        let slot = slot_now();
        let mut end = channel.len();
        loop {
            let name = &channel[..end];
            let buckets = match self.by_channel.get_mut(name) {
                Some(b) => b,
                None => self
                    .by_channel
                    .entry(Box::from(name))
                    .or_insert([(0, 0); BUCKETS]),
            };
            let b = &mut buckets[(slot % BUCKETS as u64) as usize];
            if b.0 != slot {
                *b = (slot, 0);
            }
            b.1 = b.1.saturating_add(1);
            match name.rfind(':') {
                Some(i) => end = i,
                None => break,
            }
        }
        if slot >= self.last_prune + BUCKETS as u64 {
            self.last_prune = slot;
            self.by_channel
                .retain(|_, b| b.iter().any(|(s, n)| *n > 0 && s + BUCKETS as u64 > slot));
        }
    }

    /// Events on `channel` (or below it) in the last minute.
    pub fn last_minute(&self, channel: &str) -> u64 {
        let slot = slot_now();
        self.by_channel.get(channel).map_or(0, |b| {
            b.iter()
                .filter(|(s, _)| s + BUCKETS as u64 > slot)
                .map(|(_, n)| u64::from(*n))
                .sum()
        })
    }

    /// Every channel with an event in the last minute.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        let slot = slot_now();
        self.by_channel
            .iter()
            .filter(move |(_, b)| b.iter().any(|(s, n)| *n > 0 && s + BUCKETS as u64 > slot))
            .map(|(c, _)| &**c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_channels_and_ancestors() {
        let mut r = ChannelRates::default();
        r.record("logs:w1:f1");
        r.record("logs:w1:f2");
        r.record("logs:w2:f1");
        assert_eq!(r.last_minute("logs"), 3);
        assert_eq!(r.last_minute("logs:w1"), 2);
        assert_eq!(r.last_minute("logs:w1:f1"), 1);
        assert_eq!(r.last_minute("logs:w3"), 0);
        assert_eq!(r.channels().count(), 6);
    }
}
