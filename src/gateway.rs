//! Wiring: one MongoDB client, one source, one hub, one HTTP server — and the order in which
//! they stop. Shutdown ends every stream first (browsers reconnect, to this instance's
//! successor or another), then the server, then the source.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use mongodb::options::ClientOptions;
use mongodb::Client;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::history::Budget;
use crate::http::gate::Gate;
use crate::http::{self, AppState, ConnSocket};
use crate::hub::Hub;
use crate::resume::{ResumeConfig, Resumer};
use crate::source::change_stream::Watcher;
use crate::source::supervisor::{SourceStats, Supervisor};
use crate::tasks::Tasks;

/// How long streams get to end before connections are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub struct Gateway {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    /// Polls, documents found and mode switches.
    pub source_stats: Arc<SourceStats>,
    server: actix_web::dev::ServerHandle,
    serving: JoinHandle<std::io::Result<()>>,
    watcher: JoinHandle<()>,
    /// The task that tells streams their client has gone (`http::peer`).
    peer_watch: Option<JoinHandle<()>>,
    tasks: Tasks,
}

impl Gateway {
    /// Connects (lazily: MongoDB may come up later), starts the source and serves HTTP. Must
    /// run inside a multi-threaded tokio runtime, which then owns all MongoDB I/O.
    pub async fn start(mut config: Config) -> anyhow::Result<Gateway> {
        let mut options = ClientOptions::parse(&config.mongodb_uri)
            .await
            .with_context(|| format!("invalid MONGODB_URI {}", config.redacted_uri()))?;
        // Every read here already resumes from a position of its own (the supervisor reopens
        // the change stream, a poll runs again, a catch-up or backlog ends and the client
        // resumes). The driver's own retry of a change stream's resume `aggregate` forgets the
        // resume token (mongodb 3.9) and restarts at "now", skipping events silently: a
        // failed read must reach our code instead. Overrides `retryReads` in the URI.
        options.retry_reads = Some(false);
        let client = Client::with_options(options)
            .with_context(|| format!("invalid MONGODB_URI {}", config.redacted_uri()))?;
        let db = client.database(&config.mongodb_db);
        // Before the gate reads the limits: an unset SSE_MAX_CONNECTIONS becomes what the
        // open-file limit carries.
        crate::limits::apply_open_file_limit(&mut config.limits);
        let gate = Gate::from_config(&config).map_err(anyhow::Error::msg)?;
        let admin_token = web::Data::new(config.admin_token.clone());
        let hub = Hub::new(
            Budget::new(config.history_events, config.history_bytes),
            Budget::new(config.queue_len, config.queue_bytes),
        );
        let runtime = Handle::current();
        // Catch-ups and backlogs run as tasks of their own (on the runtime that owns MongoDB
        // I/O); shutdown waits for every one of them.
        let tasks = Tasks::new(runtime.clone(), hub.shutdown_signal());

        let source_stats = Arc::new(SourceStats::default());
        let supervisor = Supervisor {
            watcher: Watcher {
                db: db.clone(),
                sources: config.sources.clone(),
                hub: Arc::clone(&hub),
            },
            config: config.source.clone(),
            stats: Arc::clone(&source_stats),
        };
        let watcher = tokio::spawn(supervisor.run(hub.shutdown_signal()));
        tasks.spawn(warn_if_migrations_pending(
            db.clone(),
            hub.shutdown_signal(),
        ));

        // One epoll set for every streaming socket, driven on this runtime (see http::peer).
        let (peers, peer_watch) = match crate::http::peer::PeerWatch::new() {
            Ok(p) => {
                let run = tokio::spawn(Arc::clone(&p).run(hub.shutdown_signal()));
                (Some(p), Some(run))
            }
            Err(e) => {
                tracing::warn!("cannot watch clients' sockets ({e}); a client that leaves is noticed at the next heartbeat");
                (None, None)
            }
        };
        let state = web::Data::new(AppState {
            hub: Arc::clone(&hub),
            resume: Resumer::new(
                client.clone(),
                db.clone(),
                config.sources.clone(),
                tasks.clone(),
                ResumeConfig {
                    catchup_concurrency: config.catchup_concurrency,
                    catchup_queue: config.catchup_queue,
                    backlog_concurrency: config.backlog_concurrency,
                    stall: config.catchup_stall,
                    poll_overlap: config.source.poll_overlap,
                },
            ),
            sources: config.sources.clone(),
            db,
            runtime,
            max_channels: config.max_channels,
            heartbeat: config.heartbeat,
            retry_ms: config.retry_ms,
            gate,
            metrics_public: config.metrics_public,
            peers,
        });
        let server =
            // Middleware runs outside in: the access log sees every request (tokens redacted),
            // CORS headers reach every answer including refusals, sizes are checked first.
            HttpServer::new(move || {
                App::new()
                    .app_data(state.clone())
                    .app_data(admin_token.clone())
                    .wrap(from_fn(http::gate::enforce_sizes))
                    .wrap(from_fn(http::cors::middleware))
                    .wrap(from_fn(http::access_log::middleware))
                    .configure(http::routes)
            })
                .on_connect(|conn, ext| {
                    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                        if let Some(sock) = ConnSocket::of(tcp) {
                            ext.insert(sock);
                        }
                    }
                })
                .disable_signals()
                .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
                .bind(config.bind)
                .with_context(|| format!("cannot listen on SSE_BIND={}", config.bind))?;
        let addr = *server.addrs().first().context("bound to no address")?;
        let server = server.run();
        let handle = server.handle();
        let serving = tokio::spawn(server);
        tracing::info!(%addr, db = %config.mongodb_db, "mongo-sse serving");
        Ok(Gateway {
            addr,
            hub,
            server: handle,
            serving,
            watcher,
            peer_watch,
            tasks,
            source_stats,
        })
    }

    /// Ends the streams, stops the server and the source, and waits for every catch-up and
    /// backlog task (each watches the shutdown signal).
    pub async fn shutdown(self) {
        self.hub.begin_shutdown();
        self.server.stop(true).await;
        let _ = self.serving.await;
        let _ = self.watcher.await;
        if let Some(peer_watch) = self.peer_watch {
            let _ = peer_watch.await;
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.close_and_wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tasks.running(),
                "catch-up or backlog tasks still running after {SHUTDOWN_GRACE:?}; leaving them"
            );
        }
    }

    /// Catch-up, backlog and start-up tasks running now (for tests and metrics).
    pub fn running_tasks(&self) -> usize {
        self.tasks.running()
    }
}

/// `serve` works without migrations (queries are only slower without their indexes), so
/// pending ones are a warning, never a failure. MongoDB may be down at start: one try, bounded.
async fn warn_if_migrations_pending(
    db: mongodb::Database,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let files = match crate::migrate::embedded() {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("cannot read the embedded migrations: {e}");
            return;
        }
    };
    let checked = tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(30), crate::migrate::pending(&db, &files)) => r,
        _ = shutdown.wait_for(|stop| *stop) => return,
    };
    match checked {
        Ok(Ok(p)) if p.is_empty() => tracing::debug!("migrations: all applied"),
        Ok(Ok(p)) => tracing::warn!(
            pending = %p.join(", "),
            "migrations pending: run `mongo-sse migrate` (indexes the backlog, catch-up and TTL need)"
        ),
        Ok(Err(e)) => tracing::warn!("migrations: {e}"),
        Err(_) => tracing::warn!("migrations: MongoDB did not answer within 30 s; not checked"),
    }
}
