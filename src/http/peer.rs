//! Learning that a client has gone while it reads nothing. actix notices a closed peer only
//! when a write fails, one or two heartbeats later; until then the connection keeps its queue
//! and its places in the limits. An SSE client sends nothing after its request, so its socket
//! turning readable with no data means it closed its end.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A connection's socket, watched for the client's end. Watching nothing (no socket, or the
/// registration failed) never resolves: heartbeats still find out, later.
pub struct Peer(Option<AsyncFd<PeerFd>>);

impl Peer {
    pub fn none() -> Peer {
        Peer(None)
    }

    /// The duplicate taken at accept (no new descriptor), registered with this worker's
    /// reactor.
    pub fn watch(sock: Option<&Arc<socket2::Socket>>) -> Peer {
        Peer(sock.and_then(register))
    }

    /// Resolves when the client has closed its end (EOF or reset). Should it send anything,
    /// the watch stops (unread bytes would keep it readable) and heartbeats are left to find
    /// out.
    pub async fn gone(&mut self) {
        let gone = match self.0.as_ref() {
            None => false,
            Some(fd) => loop {
                let Ok(mut ready) = fd.readable().await else {
                    break true;
                };
                let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
                // MSG_DONTWAIT: never block the worker, whatever the descriptor's mode.
                match ready.try_io(|s| {
                    s.get_ref()
                        .0
                        .recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT)
                }) {
                    Ok(Ok(0)) | Ok(Err(_)) => break true,
                    Ok(Ok(_)) => break false,
                    Err(_would_block) => continue,
                }
            },
        };
        if !gone {
            self.0 = None;
            std::future::pending::<()>().await;
        }
    }
}

fn register(sock: &Arc<socket2::Socket>) -> Option<AsyncFd<PeerFd>> {
    // SAFETY: `PeerFd` holds an `Arc` of the socket, so the descriptor stays open and refers to
    // the same socket for as long as the `AsyncFd` lives, and `as_raw_fd` always returns it.
    unsafe { AsyncFd::register_with_interest(PeerFd(Arc::clone(sock)), Interest::READABLE) }.ok()
}

struct PeerFd(Arc<socket2::Socket>);

impl AsRawFd for PeerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
