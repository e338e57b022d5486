//! Hardening #12: a client's end of file is not its end. A client that sends its request and
//! then shuts its sending side (`shutdown(SHUT_WR)`, legal HTTP/1.1, done by some proxies and
//! tools) still reads, and keeps its stream; a client that closes its socket is still
//! forgotten at once, not at the next heartbeat. The clients here speak HTTP/1.1 by hand on a
//! raw socket, since no HTTP client library lets a test half-close.

use std::time::Duration;

use mongo_sse::hub::Stats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Heartbeats far apart: whatever notices a closed client here, it is not a heartbeat.
const QUIET: &[(&str, &str)] = &[("SSE_HEARTBEAT_SECS", "3600")];

/// How long a closed client may stay registered: far less than any heartbeat interval.
const PROMPTLY: Duration = Duration::from_secs(5);

/// Opens a stream of `channel` by hand and reads until the `retry:` frame (the stream is
/// answered and subscribed), including the end of the chunk that carries it.
async fn open_raw(gw: &mongo_sse::gateway::Gateway, channel: &str) -> (TcpStream, Vec<u8>) {
    let mut sock = TcpStream::connect(gw.addr).await.expect("connect");
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
        stream_path(&[channel], None, None)
    );
    sock.write_all(req.as_bytes()).await.expect("send request");
    let mut got = Vec::new();
    read_until(
        &mut sock,
        &mut got,
        "the response and its retry frame",
        |b| {
            let text = String::from_utf8_lossy(b);
            text.contains("retry:") && text.ends_with("\n\n\r\n")
        },
    )
    .await;
    let head = String::from_utf8_lossy(&got);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    (sock, got)
}

/// Reads into `got` until `done(got)`; fails if the stream ends first.
async fn read_until(
    sock: &mut TcpStream,
    got: &mut Vec<u8>,
    what: &str,
    done: impl Fn(&[u8]) -> bool,
) {
    within(WAIT, what, async {
        let mut buf = [0u8; 4096];
        while !done(got) {
            match sock.read(&mut buf).await {
                Ok(0) => panic!(
                    "the gateway ended the stream before {what}; received:\n{}",
                    String::from_utf8_lossy(got)
                ),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("reading before {what}: {e}"),
            }
        }
    })
    .await
}

async fn connections_become(gw: &mongo_sse::gateway::Gateway, n: u64, what: &str) {
    eventually(PROMPTLY, what, || {
        (Stats::get(&gw.hub.stats.connections_open) == n).then_some(())
    })
    .await;
}

/// Used to be ended as soon as the gateway saw the end of file, although the client reads on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_keeps_its_stream() {
    let mongo = Mongo::start("half_closed").await;
    let gw = start_gateway(&mongo, QUIET).await;
    let (mut sock, mut got) = open_raw(&gw, "logs:w1").await;
    sock.shutdown().await.expect("shutdown(SHUT_WR)");

    // An event after the half-close is delivered, and so is one after the gateway's probe.
    for seq in [424_201, 424_202] {
        mongo.insert("w1", "f1", seq).await;
        let marker = format!("\"seq\":{seq}");
        read_until(&mut sock, &mut got, &format!("the event {seq}"), |b| {
            String::from_utf8_lossy(b).contains(&marker)
        })
        .await;
    }
    assert_eq!(Stats::get(&gw.hub.stats.connections_open), 1);

    // Closing it after the half-close is noticed at the next write (an event here).
    drop(sock);
    mongo.insert("w1", "f1", 424_203).await;
    connections_become(
        &gw,
        0,
        "the half-closed client that then closed to be unregistered",
    )
    .await;
    gw.shutdown().await;
}

/// End of file no longer ends the stream by itself; a client that really closed must still
/// be noticed without waiting for a heartbeat (an hour here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_closes_its_socket_is_unregistered_promptly() {
    let mongo = Mongo::start("raw_close").await;
    let gw = start_gateway(&mongo, QUIET).await;
    let (a, _) = open_raw(&gw, "logs:w1").await;
    let (b, _) = open_raw(&gw, "logs:w1:f1").await;
    assert_eq!(Stats::get(&gw.hub.stats.connections_open), 2);
    // Everything sent was read: the close is a plain FIN, not a reset for unread data.
    drop(a);
    connections_become(&gw, 1, "the closed client to be unregistered").await;
    drop(b);
    connections_become(&gw, 0, "the second closed client to be unregistered").await;
    gw.shutdown().await;
}
