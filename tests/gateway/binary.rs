//! The `mongo-sse` binary: configuration errors exit 2 naming the variable; SIGTERM ends the
//! streams and exits 0 well within 10 s.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::process::{command, Served};

async fn run_to_exit(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let child = command(vars).spawn().expect("spawn mongo-sse");
    let out = within(
        Duration::from_secs(10),
        "mongo-sse to exit on a configuration error",
        child.wait_with_output(),
    )
    .await
    .expect("wait for mongo-sse");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_exit_2_naming_the_variable() {
    let (code, stderr) = run_to_exit(&[("SSE_AUTH", "none"), ("SSE_HEARTBEAT_SECS", "0")]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("SSE_HEARTBEAT_SECS"), "{stderr}");

    let (code, stderr) = run_to_exit(&[("SSE_AUTH", "none"), ("SSE_HEARTBEAT_SECS", "soon")]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("SSE_HEARTBEAT_SECS"), "{stderr}");

    let (code, stderr) = run_to_exit(&[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("SSE_AUTH"), "{stderr}");

    let (code, stderr) = run_to_exit(&[("SSE_AUTH", "none"), ("SSE_BIND", "nowhere")]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("SSE_BIND"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_and_exits_0() {
    let mongo = Mongo::start("binary").await;
    let gateway = Served::start(&mongo, &[]).await;
    let base = gateway.base.clone();

    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    mongo.insert("w1", "f1", 1).await;
    assert_eq!(sse.next_event(WAIT).await.unwrap().seq(), 1);

    let sent = Instant::now();
    gateway.signal(libc::SIGTERM);

    // The client's stream ends (it would reconnect elsewhere) ...
    let rest = sse.drain_to_end(Duration::from_secs(10)).await;
    assert!(rest.is_empty(), "{rest:?}");
    // ... and the process exits 0, well within 10 s.
    let (status, log) = gateway.wait(Duration::from_secs(10)).await;
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "stderr:\n{log}");
    // A default start (SSE_MAX_CONNECTIONS unset) derives the cap from the open-file limit
    // instead of warning about it.
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") && l.contains("open-file")),
        "{log}"
    );
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    eprintln!("SIGTERM to exit: {took:?}");
    // While shutting down it no longer accepts.
    assert!(http().get(format!("{base}/healthz")).send().await.is_err());
}
