//! `mongo-sse [serve]`: run the gateway. Configuration comes from the environment (see the
//! README); a bad value stops it at once with a message naming the variable and exit code 2.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mongo_sse::config::{AuthMode, Config};
use mongo_sse::gateway::Gateway;

#[derive(Parser)]
#[command(
    name = "mongo-sse",
    version,
    about = "Tail MongoDB with change streams and fan documents out over Server-Sent Events"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve SSE streams (the default). Configured by environment variables.
    Serve,
}

/// Shutdown must finish within this, whatever MongoDB or clients do.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logging first, so that everything after it (configuration warnings included) is in
    // the chosen format.
    let format = std::env::var("SSE_LOG_FORMAT").ok();
    match mongo_sse::config::log_format(format.as_deref()) {
        Ok(f) => mongo_sse::logs::init(f),
        Err(e) => {
            eprintln!("mongo-sse: {e}");
            return ExitCode::from(2);
        }
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
    }
}

fn serve() -> ExitCode {
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str() {
            if name.starts_with("SSE_") && !mongo_sse::config::VARS.contains(&name) {
                tracing::warn!("ignoring unknown variable {name} (a typo?)");
            }
        }
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mongo-sse: {e}");
            return ExitCode::from(2);
        }
    };
    match (config.auth, &config.jwt) {
        (AuthMode::Jwt, Some(jwt)) => tracing::info!(
            algorithm = jwt.algorithm.name(),
            issuer = jwt.issuer.as_deref().unwrap_or("(any)"),
            audience = jwt.audience.as_deref().unwrap_or("(none)"),
            query_tokens = config.allow_query_token,
            "SSE_AUTH=jwt: streams need a token granting their channels"
        ),
        (AuthMode::Jwt, None) => {
            eprintln!("mongo-sse: invalid SSE_AUTH: jwt without SSE_JWT_* settings");
            return ExitCode::from(2);
        }
        (AuthMode::None, _) => {
            tracing::warn!("SSE_AUTH=none: every client can subscribe to every channel")
        }
    }
    if config.allow_query_token {
        tracing::warn!(
            "SSE_ALLOW_QUERY_TOKEN=true: tokens in URLs end up in proxy logs and browser history"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mongo-sse: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let gateway = match Gateway::start(config).await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("mongo-sse: {e:#}");
                return ExitCode::from(2);
            }
        };
        wait_for_signal().await;
        tracing::info!("shutting down: ending streams");
        if tokio::time::timeout(SHUTDOWN_DEADLINE, gateway.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown took longer than {SHUTDOWN_DEADLINE:?}; exiting anyway");
        }
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
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
