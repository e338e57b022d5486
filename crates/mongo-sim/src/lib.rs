//! mongo-sim: an in-memory, single-node MongoDB replica set (`rs0`) speaking the real wire
//! protocol, so the official drivers talk to it unmodified. It exists because no MongoDB server
//! can be installed where mongo-sse is built and tested; its behaviour follows MongoDB's
//! documentation and specifications (it is checked against MongoDB's change-stream spec tests).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sim = mongo_sim::Sim::start(mongo_sim::SimConfig::default()).await?;
//! let uri = sim.uri(); // mongodb://127.0.0.1:PORT/?replicaSet=rs0
//! # Ok(()) }
//! ```

pub mod changestream;
pub mod clock;
pub mod commands;
pub mod cursor;
pub mod error;
pub mod failpoint;
pub mod oplog;
pub mod query;
pub mod server;
pub mod state;
pub mod store;
pub mod ttl;
pub mod wire;

use state::{Shared, State};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How to run a simulated server.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address to listen on; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Behave like a standalone `mongod`: no `setName`, and `$changeStream` fails with 40573.
    pub standalone: bool,
    /// How many oplog entries are retained; resuming from an older position fails with
    /// `ChangeStreamHistoryLost` (286).
    pub oplog_max_events: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            standalone: false,
            oplog_max_events: 1_000_000,
        }
    }
}

/// A running simulated server. Dropping it shuts it down.
pub struct Sim {
    addr: SocketAddr,
    standalone: bool,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Sim {
    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(config: SimConfig) -> std::io::Result<Sim> {
        let listener = TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let host = if addr.ip().is_unspecified() {
            format!("localhost:{}", addr.port())
        } else {
            addr.to_string()
        };
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(
            State::new(config.oplog_max_events),
            config.standalone,
            host,
            rx.clone(),
        ));
        let serving = tokio::spawn(server::serve(listener, shared.clone(), rx.clone()));
        tokio::spawn(reap_cursors(shared.clone(), rx.clone()));
        tokio::spawn(ttl::monitor(
            shared.clone(),
            shared.ttl_interval.subscribe(),
            rx,
        ));
        Ok(Sim {
            addr,
            standalone: config.standalone,
            shutdown: tx,
            task: Some(serving),
            shared,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A connection string for drivers: replica-set discovery, or a direct connection when
    /// standalone.
    pub fn uri(&self) -> String {
        if self.standalone {
            self.direct_uri()
        } else {
            format!("mongodb://{}/?replicaSet=rs0", self.shared.host)
        }
    }

    /// A connection string that skips replica-set discovery.
    pub fn direct_uri(&self) -> String {
        format!("mongodb://{}/?directConnection=true", self.shared.host)
    }

    /// How often the TTL monitor deletes expired documents (MongoDB's `ttlMonitorSleepSecs`,
    /// 60 s by default); tests shorten it to see expiry without waiting a minute. The next pass
    /// comes one new interval after the call.
    pub fn set_ttl_monitor_interval(&self, interval: Duration) {
        let _ = self
            .shared
            .ttl_interval
            .send(interval.max(Duration::from_millis(1)));
    }

    /// The number of client connections currently open.
    pub fn connections(&self) -> i64 {
        self.shared
            .connections_current
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops accepting, ends every connection and waits for the accept loop to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn reap_cursors(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {
                let n = shared.lock().cursors.reap_idle(Instant::now());
                if n > 0 {
                    tracing::debug!("reaped {n} idle cursors");
                }
            }
            _ = crate::state::stopped(&mut shutdown) => break,
        }
    }
}
