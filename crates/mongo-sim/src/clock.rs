//! The cluster clock: every write gets a `Timestamp` strictly greater than the last one, as an
//! oplog optime does. Seconds follow the wall clock; the increment orders writes within a second.

use bson::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct Clock {
    last: Timestamp,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            last: Timestamp {
                time: now_secs(),
                increment: 0,
            },
        }
    }

    /// The time of the last write (MongoDB's `operationTime` for reads).
    pub fn now(&self) -> Timestamp {
        self.last
    }

    /// A new, strictly greater cluster time for a write.
    pub fn tick(&mut self) -> Timestamp {
        let secs = now_secs();
        self.last = if secs > self.last.time {
            Timestamp {
                time: secs,
                increment: 1,
            }
        } else {
            Timestamp {
                time: self.last.time,
                increment: self.last.increment.wrapping_add(1),
            }
        };
        self.last
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing() {
        let mut c = Clock::new();
        let mut prev = c.tick();
        for _ in 0..10_000 {
            let t = c.tick();
            assert!((t.time, t.increment) > (prev.time, prev.increment));
            prev = t;
        }
    }
}
