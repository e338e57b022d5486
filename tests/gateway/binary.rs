//! The `mongo-sse` binary: configuration errors exit 2 naming the variable; SIGTERM ends the
//! streams and exits 0 well within 10 s.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_mongo-sse");

/// A clean environment: nothing from the developer's shell (a stray `SSE_AUTH`) leaks in.
fn command(vars: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

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

/// Removes ANSI escape sequences, in case the log output is colored anyway.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_and_exits_0() {
    let mongo = Mongo::start("binary").await;
    let mut child = command(&[
        ("SSE_AUTH", "none"),
        ("MONGODB_URI", &mongo.uri),
        ("MONGODB_DB", &mongo.db_name),
        ("SSE_BIND", "127.0.0.1:0"),
    ])
    .arg("serve")
    .spawn()
    .expect("spawn mongo-sse");

    // Keep reading stderr (a full pipe would block the process), remembering it for messages,
    // and hand over the address from "mongo-sse serving addr=…".
    let log = Arc::new(Mutex::new(String::new()));
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                let line = strip_ansi(&line);
                if line.contains("mongo-sse serving") {
                    if let Some(addr) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                    {
                        if let Some(tx) = addr_tx.take() {
                            let _ = tx.send(addr.to_string());
                        }
                    }
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let addr = match tokio::time::timeout(WAIT, addr_rx).await {
        Ok(Ok(addr)) => addr,
        _ => panic!(
            "mongo-sse did not log its address; stderr:\n{}",
            log.lock().unwrap()
        ),
    };
    let base = format!("http://{addr}");
    wait_ready(&base).await;

    let mut sse = Sse::subscribe(&base, &["logs:w1"], None).await;
    mongo.insert("w1", "f1", 1).await;
    assert_eq!(sse.next_event(WAIT).await.unwrap().seq(), 1);

    let pid = child.id().expect("pid") as libc::pid_t;
    let sent = Instant::now();
    // SAFETY: kill(2) on the child we spawned and still own (it has not been waited for).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);

    // The client's stream ends (it would reconnect elsewhere) ...
    let rest = sse.drain_to_end(Duration::from_secs(10)).await;
    assert!(rest.is_empty(), "{rest:?}");
    // ... and the process exits 0, well within 10 s.
    let status = within(
        Duration::from_secs(10),
        "mongo-sse to exit after SIGTERM",
        child.wait(),
    )
    .await
    .expect("wait");
    let took = sent.elapsed();
    let _ = within(WAIT, "stderr to close", reader).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", log.lock().unwrap());
    // A default start (SSE_MAX_CONNECTIONS unset) derives the cap from the open-file limit
    // instead of warning about it.
    let log_text = log.lock().unwrap().clone();
    assert!(
        !log_text
            .lines()
            .any(|l| l.contains("WARN") && l.contains("open-file")),
        "{log_text}"
    );
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    eprintln!("SIGTERM to exit: {took:?}");
    // While shutting down it no longer accepts.
    assert!(http().get(format!("{base}/healthz")).send().await.is_err());
}
