//! A replay in progress: what a background task (a catch-up, a backlog) reads from MongoDB for
//! one connection, handed over one event at a time so that memory stays bounded by the
//! channel, not by how much the client missed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::out::Out;
use crate::event::Event;

pub type Item = Result<Arc<Event>, String>;

/// Items a replay holds between MongoDB and its connection. A document is up to 16 MiB.
pub const CHANNEL: usize = 8;

pub struct Replay {
    pub items: mpsc::Receiver<Item>,
    /// Set when the replay reached its end. Its channel closing without this means it was cut
    /// short (the reader stalled, shutdown): the connection must end, never continue live
    /// over the hole.
    pub complete: Arc<AtomicBool>,
    /// Backlog rows all carry the subscription head as their id and are sent as they come;
    /// catch-up events carry their own positions and are de-duplicated by them.
    pub rows: bool,
    /// Live events taken from the queue while a backlog handed over to it: sent after the
    /// rows, before the queue continues.
    pub then: Vec<Arc<Event>>,
}

impl Replay {
    /// A replay and the producing end its task writes to.
    pub fn channel(
        stall: std::time::Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> (Replay, Producer) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let complete = Arc::new(AtomicBool::new(false));
        (
            Replay {
                items: rx,
                complete: Arc::clone(&complete),
                rows: false,
                then: Vec::new(),
            },
            Producer {
                out: Out::new(tx, stall, shutdown),
                complete,
            },
        )
    }

    /// Nothing to replay.
    pub fn empty() -> Replay {
        let (tx, rx) = mpsc::channel(1);
        drop(tx);
        Replay {
            items: rx,
            complete: Arc::new(AtomicBool::new(true)),
            rows: false,
            then: Vec::new(),
        }
    }

    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::SeqCst)
    }
}

/// The task's end of a [`Replay`].
pub struct Producer {
    pub out: Out<Item>,
    complete: Arc<AtomicBool>,
}

impl Producer {
    /// Sends an event; false when the reader is gone, stalled, or the gateway is stopping.
    pub async fn send(&mut self, ev: Event) -> bool {
        self.out.offer(Ok(Arc::new(ev))).await
    }

    /// The replay failed mid-way: the connection ends and the client resumes.
    pub async fn fail(&mut self, why: String) {
        let _ = self.out.offer(Err(why)).await;
    }

    /// Everything was sent.
    pub fn done(self) {
        self.complete.store(true, Ordering::SeqCst);
    }
}
