//! The producing end of a replay (catch-up or backlog), with how long it waits for its reader
//! to take the next item (`SSE_CATCHUP_STALL_SECS`). A client that asks for a long replay and
//! then reads nothing would otherwise hold its MongoDB work open for ever, and a few dozen of
//! them would refuse every other reconnect.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

pub struct Out<T> {
    pub tx: mpsc::Sender<T>,
    stall: Duration,
    pub shutdown: watch::Receiver<bool>,
}

impl<T> Out<T> {
    pub fn new(tx: mpsc::Sender<T>, stall: Duration, shutdown: watch::Receiver<bool>) -> Out<T> {
        Out {
            tx,
            stall,
            shutdown,
        }
    }

    /// Sends `item` to the reader, or says why not: gone, stalled, or shutting down.
    pub async fn offer(&mut self, item: T) -> bool {
        tokio::select! {
            r = tokio::time::timeout(self.stall, self.tx.send(item)) => match r {
                Ok(Ok(())) => true,
                Ok(Err(_)) => false, // the client went away
                Err(_) => {
                    tracing::info!("replay reader stalled for {:?}; releasing its slot", self.stall);
                    false
                }
            },
            _ = self.shutdown.wait_for(|s| *s) => false,
        }
    }

    /// Resolves when the reader has gone or the gateway is shutting down: what a producer
    /// waiting on MongoDB selects on, so that its work stops with its client.
    pub async fn abandoned(&mut self) {
        tokio::select! {
            _ = self.tx.closed() => {}
            _ = self.shutdown.wait_for(|s| *s) => {}
        }
    }
}
