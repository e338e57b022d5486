//! Scale #14: one file descriptor per streaming connection. Watching a client's socket for its
//! end used to take a duplicate descriptor per connection, so a gateway under a 20 000
//! open-file limit failed to accept at about 10 000 streams. The gateway runs as a child
//! process here so that its descriptors are its own, not shared with the other tests.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;
use crate::process::Served;

const STREAMS: usize = 200;

/// Descriptors the process has open now.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the gateway's /proc/<pid>/fd")
        .count()
}

/// Opens a stream by hand and reads until its `retry:` frame: answered and subscribed.
async fn open_stream(base: &str) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
        stream_path(&["logs:fd"], None, None)
    );
    sock.write_all(req.as_bytes()).await.expect("send request");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("retry:") {
        let n = sock.read(&mut buf).await.expect("read the stream");
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    sock
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_connection_costs_one_descriptor() {
    let mongo = Mongo::start("descriptors").await;
    let served = Served::start(&mongo, &[("SSE_HEARTBEAT_SECS", "3600")]).await;
    let pid = served.child.id().expect("running");
    // One plain request first, so that lazily opened descriptors (MongoDB connections, the
    // first worker's state) are in the baseline, not in the difference.
    wait_ready(&served.base).await;
    let baseline = open_fds(pid);

    let mut streams = Vec::with_capacity(STREAMS);
    within(WAIT, "opening the streams", async {
        for _ in 0..STREAMS {
            streams.push(open_stream(&served.base).await);
        }
    })
    .await;
    let with_streams = open_fds(pid);
    let per_stream = (with_streams - baseline) as f64 / STREAMS as f64;
    // A few MongoDB pool connections may open meanwhile; a duplicate per stream would be 2.0.
    assert!(
        per_stream < 1.1,
        "{with_streams} descriptors with {STREAMS} streams, {baseline} without: {per_stream:.2} per stream"
    );

    drop(streams);
    eventually(
        Duration::from_secs(10),
        "the closed streams' descriptors to be released",
        || (open_fds(pid) <= baseline + 5).then_some(()),
    )
    .await;
}
