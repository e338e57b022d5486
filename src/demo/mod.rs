//! `mongo-sse demo`: everything in one process, nothing to install — an in-process mongo-sim
//! (or a real MongoDB with `--mongodb-uri`), the synthetic ETL log [`writer`], and the gateway
//! with access control off, serving the live logs page at `/`.
//!
//! The demo reads no `SSE_*` variables: it is configured by its flags alone, so a shell set up
//! for `serve` (say `SSE_AUTH=jwt`) does not change what the demo shows. It writes to and tails
//! the database [`DEMO_DB`], never the `datashop` database a real deployment watches.
//!
//! Stopping (Ctrl-C, SIGTERM) goes top-down: the writer first (so nothing writes into a server
//! that is going away), then the gateway (ends the streams, stops the server and the source),
//! then the sim.

pub mod writer;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context;
use mongo_sim::{Sim, SimConfig};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::gateway::Gateway;

/// The database the demo writes to and tails.
pub const DEMO_DB: &str = "mongo_sse_demo";

/// The embedded sim keeps this many oplog entries (hours of demo at the default rate),
/// so memory stays bounded however long the demo runs.
const DEMO_OPLOG_EVENTS: usize = 200_000;

/// Stopping must not hang on anything: past this, the demo exits anyway.
const STOP_DEADLINE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Log lines per second.
    pub rate: f64,
    pub bind: SocketAddr,
    /// A real MongoDB (a replica set, for change streams) instead of the embedded sim.
    pub mongodb_uri: Option<String>,
}

/// `--rate`: a positive number of lines per second, at most [`writer::MAX_RATE`].
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= writer::MAX_RATE => Ok(r),
        _ => Err(format!(
            "expected a number of lines per second above 0 and at most {}, got {s:?}",
            writer::MAX_RATE
        )),
    }
}

/// `--bind`: `HOST:PORT` (a name such as `localhost` is resolved; port 0 picks a free one).
pub fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    match s.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => Ok(a),
        _ => Err(format!(
            "expected HOST:PORT such as 127.0.0.1:8080, got {s:?}"
        )),
    }
}

/// `--mongodb-uri`: a MongoDB connection string (not echoed back: it may hold a password).
pub fn parse_mongodb_uri(s: &str) -> Result<String, String> {
    if s.starts_with("mongodb://") || s.starts_with("mongodb+srv://") {
        Ok(s.to_owned())
    } else {
        Err("expected a connection string starting with mongodb:// or mongodb+srv://".into())
    }
}

/// A URL a browser on this machine can open for `addr` (an unspecified address is reached
/// through loopback).
pub fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// Runs the demo until `stop` completes, then stops everything.
pub async fn run(opts: DemoOptions, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let sim = match &opts.mongodb_uri {
        Some(_) => None,
        None => Some(
            Sim::start(SimConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], 0)),
                standalone: false,
                oplog_max_events: DEMO_OPLOG_EVENTS,
            })
            .await
            .context("cannot start the embedded mongo-sim")?,
        ),
    };
    let uri = match (&opts.mongodb_uri, &sim) {
        (Some(uri), _) => uri.clone(),
        (None, Some(sim)) => sim.uri(),
        (None, None) => anyhow::bail!("no MongoDB to use"),
    };
    let config = Config::from_iter([
        ("SSE_AUTH".to_owned(), "none".to_owned()),
        ("MONGODB_URI".to_owned(), uri.clone()),
        ("MONGODB_DB".to_owned(), DEMO_DB.to_owned()),
        ("SSE_BIND".to_owned(), opts.bind.to_string()),
    ])
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let where_ = match &sim {
        Some(_) => format!("embedded mongo-sim at {}", config.redacted_uri()),
        None => config.redacted_uri(),
    };
    let client = mongodb::Client::with_uri_str(&uri)
        .await
        .context("invalid --mongodb-uri")?;
    // The demo's database is its own: it applies the migrations as `mongo-sse migrate` would,
    // so the gateway starts with the indexes it needs (and without a warning about them).
    let files = crate::migrate::embedded().map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::migrate::run(&client.database(DEMO_DB), &config, &files, false)
        .await
        .map_err(|e| anyhow::anyhow!("cannot apply the migrations to {DEMO_DB}: {e}"))?;
    let gateway = Gateway::start(config)
        .await
        .with_context(|| format!("cannot start the gateway on --bind {}", opts.bind))?;

    let logs = client.database(DEMO_DB).collection("logs");
    let stop_writer = CancellationToken::new();
    let writer = tokio::spawn(writer::Writer::new(logs, opts.rate).run(stop_writer.clone()));

    let base = local_url(gateway.addr);
    let (ws, wfs) = writer::WORKSPACES[0];
    let wf = wfs[0];
    println!("mongo-sse demo");
    println!("  MongoDB:  {where_}, database {DEMO_DB}");
    println!(
        "  Writing:  {} ETL log lines per second into {DEMO_DB}.logs, workspaces {}",
        opts.rate,
        writer::WORKSPACES
            .iter()
            .map(|(w, _)| *w)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  Page:     {base}/?channel=logs:{ws}");
    println!("            {base}/?channel=logs:{ws}:{wf}   (one workflow)");
    println!("  curl:     curl -N '{base}/v1/stream?channel=logs:{ws}'");
    println!("Press Ctrl-C to stop.");

    stop.await;
    let stopping = async {
        stop_writer.cancel();
        let written = writer.await.unwrap_or(0);
        tracing::info!(written, "demo writer stopped");
        gateway.shutdown().await;
        drop(client);
        if let Some(sim) = sim {
            sim.shutdown().await;
        }
    };
    if tokio::time::timeout(STOP_DEADLINE, stopping).await.is_err() {
        tracing::warn!("stopping took longer than {STOP_DEADLINE:?}; exiting anyway");
    }
    println!("mongo-sse demo stopped.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        assert_eq!(parse_rate("5"), Ok(5.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        for bad in ["0", "-1", "abc", "", "NaN", "inf", "10001"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_bind("127.0.0.1:0").unwrap().port(), 0);
        assert!(parse_bind("localhost:8080").is_ok());
        assert!(parse_bind("nowhere").is_err());
        assert!(parse_bind("127.0.0.1").is_err());
        assert!(parse_mongodb_uri("mongodb://h/").is_ok());
        let e = parse_mongodb_uri("http://user:secret@h").unwrap_err();
        assert!(!e.contains("secret"));
    }

    #[test]
    fn urls() {
        assert_eq!(
            local_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(local_url("[::]:80".parse().unwrap()), "http://[::1]:80");
        assert_eq!(
            local_url("10.1.2.3:9000".parse().unwrap()),
            "http://10.1.2.3:9000"
        );
    }
}
