//! `mongo-sse [serve]`: run the gateway. Configuration comes from the environment (see the
//! README); a bad value stops it at once with a message naming the variable and exit code 2.
//! `mongo-sse check` diagnoses that configuration against MongoDB; `mongo-sse demo` runs an
//! embedded MongoDB, a synthetic log writer and the gateway together.

use std::net::SocketAddr;
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
    /// Run an embedded MongoDB, a synthetic ETL log writer and the gateway (auth off), and
    /// print the logs page URL. Ctrl-C stops it.
    Demo(DemoArgs),
    /// Check the configuration `serve` would use against MongoDB and say what to fix. Exit 0:
    /// serve would run fully; 1: it would not (reasons printed); 2: bad configuration.
    Check,
    /// Apply the migrations compiled into the binary (indexes, TTL), in order, each once;
    /// recorded in the `_migrations` collection. Same environment variables as `serve`
    /// (`SSE_AUTH` may be left out).
    Migrate {
        /// Say what would be applied, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Log lines written per second.
    #[arg(long, value_name = "N", default_value = "5", value_parser = mongo_sse::demo::parse_rate)]
    rate: f64,
    /// Where the gateway listens (port 0: any free port).
    #[arg(long, value_name = "HOST:PORT", default_value = mongo_sse::config::DEFAULT_BIND, value_parser = mongo_sse::demo::parse_bind)]
    bind: SocketAddr,
    /// Write to and tail this MongoDB (a replica set) instead of the embedded one.
    #[arg(long, value_name = "URI", value_parser = mongo_sse::demo::parse_mongodb_uri)]
    mongodb_uri: Option<String>,
}

/// Shutdown must finish within this, whatever MongoDB or clients do.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    // The demo and check talk to a person on stdout: only warnings on stderr by default.
    let default_filter = match command {
        Command::Serve | Command::Migrate { .. } => mongo_sse::logs::DEFAULT_FILTER,
        Command::Demo(_) | Command::Check => "warn",
    };
    // Logging first, so that everything after it (configuration warnings included) is in
    // the chosen format.
    let format = std::env::var("SSE_LOG_FORMAT").ok();
    match mongo_sse::config::log_format(format.as_deref()) {
        Ok(f) => mongo_sse::logs::init(f, default_filter),
        Err(e) => {
            eprintln!("mongo-sse: {e}");
            return ExitCode::from(2);
        }
    }
    match command {
        Command::Serve => serve(),
        Command::Demo(args) => demo(args),
        Command::Check => check(),
        Command::Migrate { dry_run } => migrate(dry_run),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("mongo-sse: cannot start the runtime: {e}");
            ExitCode::from(1)
        })
}

fn demo(args: DemoArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let opts = mongo_sse::demo::DemoOptions {
        rate: args.rate,
        bind: args.bind,
        mongodb_uri: args.mongodb_uri,
    };
    let result = runtime.block_on(mongo_sse::demo::run(opts, wait_for_signal()));
    // Background tasks (the driver's monitors) must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mongo-sse demo: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn check() -> ExitCode {
    warn_unknown_vars();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mongo-sse check: {e}");
            return ExitCode::from(2);
        }
    };
    if config.auth == AuthMode::Jwt && config.jwt.is_none() {
        eprintln!("mongo-sse check: invalid SSE_AUTH: jwt without SSE_JWT_* settings");
        return ExitCode::from(2);
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let report = runtime.block_on(mongo_sse::check::diagnose(&config));
    runtime.shutdown_timeout(Duration::from_millis(200));
    print!("{}", report.render());
    ExitCode::from(report.exit_code())
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
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
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

fn warn_unknown_vars() {
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str() {
            if name.starts_with("SSE_") && !mongo_sse::config::VARS.contains(&name) {
                tracing::warn!("ignoring unknown variable {name} (a typo?)");
            }
        }
    }
}

fn serve() -> ExitCode {
    warn_unknown_vars();
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
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
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
