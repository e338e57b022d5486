//! The `mongo-sse` binary's commands as a person runs them: `demo` end to end (the
//! walkthrough), `check` against replica-set and standalone MongoDBs and bad configuration,
//! and `--help`. Each test runs the real binary as a child process with a clean environment.

#[path = "../common/mod.rs"]
mod common;

mod check;
mod demo;
mod help;

use std::time::Duration;

pub use common::mongo_sse as command;

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
