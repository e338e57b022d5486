//! The walkthrough: `mongo-sse demo` as a newcomer runs it — the page answers, a stream shows
//! the demo's log lines in order, Ctrl-C stops everything promptly with exit 0 — and its
//! flag errors.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::*;
use crate::{command, run};

const DATASHOP_FIELDS: &[&str] = &[
    "date",
    "level",
    "message",
    "step",
    "workspace_id",
    "workflow_id",
    "run_id",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_demo_page_stream_and_ctrl_c() {
    let mut child = command(&["demo", "--bind", "127.0.0.1:0", "--rate", "50"], &[])
        .spawn()
        .expect("spawn mongo-sse demo");

    // stdout: the banner, whose curl line names the stream URL; stderr: kept for messages.
    let err_log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr");
    let err_reader = {
        let log = Arc::clone(&err_log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let (url_tx, url_rx) = tokio::sync::oneshot::channel::<String>();
    let out_log = Arc::new(Mutex::new(String::new()));
    let stdout = child.stdout.take().expect("stdout");
    let out_reader = {
        let log = Arc::clone(&out_log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut url_tx = Some(url_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("curl -N '").nth(1) {
                    if let (Some(url), Some(tx)) = (rest.split('\'').next(), url_tx.take()) {
                        let _ = tx.send(url.to_string());
                    }
                }
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let stream_url = match tokio::time::timeout(WAIT, url_rx).await {
        Ok(Ok(u)) => u,
        _ => panic!(
            "the demo printed no curl command; stdout:\n{}\nstderr:\n{}",
            out_log.lock().unwrap(),
            err_log.lock().unwrap()
        ),
    };
    let (base, path) = stream_url
        .split_once("/v1/")
        .map(|(b, p)| (b.to_string(), format!("/v1/{p}")))
        .unwrap_or_else(|| panic!("not a stream URL: {stream_url}"));
    let channel = path
        .split("channel=")
        .nth(1)
        .unwrap_or_else(|| panic!("no channel in {stream_url}"))
        .to_string();
    let workspace = channel
        .strip_prefix("logs:")
        .unwrap_or_else(|| panic!("not a logs channel: {channel}"))
        .to_string();
    assert!(
        out_log
            .lock()
            .unwrap()
            .contains(&format!("{base}/?channel=")),
        "the page URL is printed: {}",
        out_log.lock().unwrap()
    );
    wait_ready(&base).await;

    // The page.
    let page = get(&base, "/", &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let ct = page
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(page.body.contains("<html"), "{}", page.body);

    // The stream the banner's curl command opens: demo lines arrive, in commit order.
    let mut sse = Sse::open(&base, &path, None)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {} {}", e.status, e.body));
    sse.expect_retry().await;
    let events = sse.events(15, WAIT).await;
    let mut last_id = String::new();
    let mut last_oid = String::new();
    for ev in &events {
        assert_eq!(ev.event, "message", "{ev:?}");
        let msg = ev.msg();
        assert_eq!(msg.op, "insert");
        assert!(
            msg.channel.starts_with(&format!("{channel}:")),
            "{} on {channel}",
            msg.channel
        );
        for field in DATASHOP_FIELDS {
            assert!(
                msg.doc[*field].as_str().is_some_and(|s| !s.is_empty()),
                "{field} missing in {}",
                msg.doc
            );
        }
        assert_eq!(msg.doc["workspace_id"].as_str(), Some(workspace.as_str()));
        assert!(
            ["debug", "info", "warning", "error", "critical"]
                .contains(&msg.doc["level"].as_str().unwrap_or("")),
            "{}",
            msg.doc
        );
        assert!(
            ["extract", "transform", "load"].contains(&msg.doc["step"].as_str().unwrap_or("")),
            "{}",
            msg.doc
        );
        // Event ids (positions) and document ids both increase: commit order, no repeats.
        assert!(ev.id > last_id, "{} after {last_id}", ev.id);
        let oid = msg.doc["_id"].as_str().unwrap_or("").to_string();
        assert_eq!(oid.len(), 24, "{}", msg.doc);
        assert!(oid > last_oid, "{oid} after {last_oid}");
        last_id.clone_from(&ev.id);
        last_oid = oid;
    }

    // Ctrl-C: the stream ends and the process exits 0 within a couple of seconds.
    let pid = child.id().expect("pid") as libc::pid_t;
    let sent = Instant::now();
    // SAFETY: kill(2) on the child we spawned and still own (it has not been waited for).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = within(
        Duration::from_secs(10),
        "mongo-sse demo to exit after SIGINT",
        child.wait(),
    )
    .await
    .expect("wait");
    let took = sent.elapsed();
    let _ = within(WAIT, "stdout to close", out_reader).await;
    let _ = within(WAIT, "stderr to close", err_reader).await;
    let stderr = err_log.lock().unwrap().clone();
    eprintln!("SIGINT to exit: {took:?}");
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    let rest = sse.drain_to_end(WAIT).await;
    assert!(
        sse.ended.is_some(),
        "the stream ended ({} more events)",
        rest.len()
    );
    assert!(
        out_log.lock().unwrap().contains("demo stopped"),
        "{}",
        out_log.lock().unwrap()
    );
    // A default machine gets no warning, about the open-file limit or anything else.
    assert!(
        !stderr.contains("WARN") && !stderr.contains("open-file"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_flag_errors_exit_2_naming_the_flag() {
    for (args, flag) in [
        (&["demo", "--rate", "abc"][..], "--rate"),
        (&["demo", "--rate", "0"][..], "--rate"),
        (&["demo", "--bind", "nowhere"][..], "--bind"),
        (&["demo", "--mongodb-uri", "http://h"][..], "--mongodb-uri"),
        (&["demo", "--no-such-flag"][..], "--no-such-flag"),
    ] {
        let (code, _, stderr) = run(args, &[]).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}
