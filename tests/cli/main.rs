//! The `mongo-sse` binary's commands as a person runs them: `demo` end to end (the
//! walkthrough), `check` against replica-set and standalone MongoDBs and bad configuration,
//! and `--help`. Each test runs the real binary as a child process with a clean environment.

#[path = "../common/mod.rs"]
mod common;

mod check;
mod demo;
mod help;

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_mongo-sse");

/// The binary with a clean environment: nothing from the developer's shell leaks in.
pub fn command(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_clear()
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

/// Runs to exit (bounded): `(exit code, stdout, stderr)`.
pub async fn run(args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let child = command(args, vars).spawn().expect("spawn mongo-sse");
    let out = common::within(
        Duration::from_secs(60),
        &format!("mongo-sse {args:?} to exit"),
        child.wait_with_output(),
    )
    .await
    .expect("wait for mongo-sse");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
