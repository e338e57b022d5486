//! Where background work (catch-ups, backlogs) is spawned: on the runtime that owns the
//! MongoDB driver's connections, tracked so that shutdown can wait for every task, and with
//! the shutdown signal every task watches so that the wait is short.

use std::future::Future;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

#[derive(Clone)]
pub struct Tasks {
    runtime: Handle,
    tracker: TaskTracker,
    shutdown: watch::Receiver<bool>,
}

impl Tasks {
    pub fn new(runtime: Handle, shutdown: watch::Receiver<bool>) -> Tasks {
        Tasks {
            runtime,
            tracker: TaskTracker::new(),
            shutdown,
        }
    }

    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn_on(task, &self.runtime)
    }

    /// The signal every task stops at.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Stops accepting new tasks and waits for the running ones.
    pub async fn close_and_wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}
