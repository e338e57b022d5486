//! Exponential backoff with jitter, for everything that retries against MongoDB, and the
//! jitter that spreads browsers told to come back later.
//!
//! Without a floor between attempts, a stream whose `getMore` fails at once (an event over
//! 16 MiB, a fail point, a server refusing the cursor) is reopened thousands of times a second;
//! without jitter, every gateway (and every browser told "retry in 2 s") comes back in the
//! same instant.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A random number without a dependency: `RandomState` is seeded from the OS per instance.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x9E37_79B9_7F4A_7C15);
    h.finish()
}

/// `d` scaled by a random factor in `[1 - spread, 1]` (`spread` in `0..=1`).
pub fn jitter(d: Duration, spread: f64) -> Duration {
    let spread = spread.clamp(0.0, 1.0);
    let unit = (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(1.0 - spread * unit)
}

/// Delays that double from `min` to `max`, each with jitter; [`Backoff::reset`] after a
/// success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The delay before the next attempt (half to all of the current step).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        jitter(d, 0.5)
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let steps: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        let caps = [100, 200, 400, 800, 1000, 1000];
        for (d, cap) in steps.iter().zip(caps) {
            let cap = Duration::from_millis(cap);
            assert!(
                *d <= cap && *d >= cap / 2,
                "{d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        let spread: std::collections::HashSet<Duration> = (0..20)
            .map(|_| jitter(Duration::from_secs(10), 0.5))
            .collect();
        assert!(spread.len() > 1, "jitter varies");
    }
}
