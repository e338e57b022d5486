//! Bounded concurrency with a bounded waiting line, for the work a reconnect may ask MongoDB
//! for (catch-ups, backlog queries). After a gateway restart every browser reconnects at once;
//! one query or change stream per browser is exactly the load this design exists to avoid, so
//! a few run, a few wait, and the rest are told to come back (`busy`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Slots {
    sem: Arc<Semaphore>,
    size: usize,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Why no slot was given.
#[derive(Debug, PartialEq, Eq)]
pub enum NoSlot {
    /// Every slot is busy and the waiting line is full.
    Busy,
    /// Shutting down.
    Closed,
}

impl Slots {
    /// `size` slots (at least one) and at most `max_waiting` waiting for one.
    pub fn new(size: usize, max_waiting: usize) -> Slots {
        let size = size.max(1);
        Slots {
            sem: Arc::new(Semaphore::new(size)),
            size,
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// A slot, waiting in line if there is room in it.
    pub async fn take(&self) -> Result<OwnedSemaphorePermit, NoSlot> {
        if let Ok(p) = Arc::clone(&self.sem).try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(NoSlot::Busy);
        }
        let permit = Arc::clone(&self.sem).acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        permit.map_err(|_| NoSlot::Closed)
    }

    /// Slots in use and waiters, for the metrics.
    pub fn running_and_queued(&self) -> (usize, usize) {
        let running = self.size.saturating_sub(self.sem.available_permits());
        (running, self.waiting.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_line_is_refused_and_a_freed_slot_goes_to_the_waiter() {
        let slots = Arc::new(Slots::new(1, 1));
        let first = slots.take().await.unwrap();
        let s2 = Arc::clone(&slots);
        let waiter = tokio::spawn(async move { s2.take().await.map(|_| ()) });
        // The waiter is in line once the count says so.
        while slots.running_and_queued() != (1, 1) {
            tokio::task::yield_now().await;
        }
        assert_eq!(slots.take().await.err(), Some(NoSlot::Busy));
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(slots.running_and_queued(), (0, 0));
    }
}
