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
    /// Apply the migrations compiled into the binary (indexes, TTL), in order, each once;
    /// recorded in the `_migrations` collection. Same environment variables as `serve`
    /// (`SSE_AUTH` may be left out).
    Migrate {
        /// Say what would be applied, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Shutdown must finish within this, whatever MongoDB or clients do.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,actix_server=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
        Command::Migrate { dry_run } => migrate(dry_run),
    }
}

fn migrate(dry_run: bool) -> ExitCode {
    // migrate serves nothing, so access control is irrelevant to it: SSE_AUTH may be unset.
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    if !vars.iter().any(|(k, _)| k == "SSE_AUTH") {
        vars.insert(0, ("SSE_AUTH".to_owned(), "none".to_owned()));
    }
    let config = match Config::from_iter(vars) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mongo-sse: {e}");
            return ExitCode::from(2);
        }
    };
    let files = match mongo_sse::migrate::embedded() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mongo-sse migrate: {e}");
            return ExitCode::from(1);
        }
    };
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
        let client = match mongodb::Client::with_uri_str(&config.mongodb_uri).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "mongo-sse: invalid MONGODB_URI {}: {e}",
                    config.redacted_uri()
                );
                return ExitCode::from(2);
            }
        };
        let db = client.database(&config.mongodb_db);
        if dry_run {
            println!("dry run: nothing is changed");
        }
        match mongo_sse::migrate::run(&db, &config, &files, dry_run).await {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mongo-sse migrate: {e}");
                ExitCode::from(1)
            }
        }
    })
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
