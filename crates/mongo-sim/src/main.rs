//! `mongo-sim`: run the simulated replica set as a process, for pymongo, manual testing and the
//! demo. Prints exactly one line on stdout when ready: `mongo-sim listening on HOST:PORT`.

use clap::Parser;
use mongo_sim::{Sim, SimConfig};
use std::io::Write;
use std::net::SocketAddr;

#[derive(Parser, Debug)]
#[command(
    name = "mongo-sim",
    version,
    about = "An in-memory MongoDB replica set on the real wire protocol"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:27017")]
    bind: SocketAddr,
    /// Behave like a standalone mongod (no replica set, no change streams).
    #[arg(long)]
    standalone: bool,
    /// Oplog entries retained; older positions cannot be resumed (ChangeStreamHistoryLost).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    oplog_max_events: u64,
    /// Seconds between TTL monitor passes (MongoDB's ttlMonitorSleepSecs).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    ttl_monitor_sleep_secs: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "mongo_sim=info".into()),
        )
        .init();
    let config = SimConfig {
        bind: args.bind,
        standalone: args.standalone,
        oplog_max_events: args.oplog_max_events as usize,
    };
    let sim = match Sim::start(config).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("mongo-sim: cannot listen on {}: {e}", args.bind);
            return std::process::ExitCode::from(1);
        }
    };
    sim.set_ttl_monitor_interval(std::time::Duration::from_secs(args.ttl_monitor_sleep_secs));
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "mongo-sim listening on {}", sim.addr());
        let _ = out.flush();
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    sim.shutdown().await;
    std::process::ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
