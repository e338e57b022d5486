//! Learning that a client has gone while it reads nothing. actix notices a closed peer only
//! when a write fails, one or two heartbeats later; until then the connection keeps its queue
//! and its places in the limits. An SSE client sends nothing after its request, so its socket
//! turning readable is news about its end.
//!
//! That news is ambiguous. End of file means the client will send nothing more: it closed its
//! socket, or it only shut its sending side (`shutdown(SHUT_WR)`, legal HTTP/1.1 that some
//! proxies and tools use) and still reads. Nothing on our side tells the two apart until we
//! write: a closed socket answers a write with a reset, a half-closed one takes it. So end of
//! file is reported as [`Left::ReadClosed`], the stream writes something at once, and the
//! watch then waits for the socket to report hang-up or error ([`Left::Closed`]).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::{Interest, Ready};

/// What the watch learned about the client's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// Reset, or hung up: the client is gone and the stream should end.
    Closed,
    /// End of file: gone, or only half-closed and still reading. The stream should write now
    /// (a heartbeat comment is enough): a closed client answers it with a reset, which the
    /// next [`Peer::gone`] reports as [`Left::Closed`]. Reported once per connection.
    ReadClosed,
}

/// A connection's socket, watched for the client's end. Watching nothing (no socket, or the
/// registration failed) never resolves: heartbeats still find out, later.
pub struct Peer {
    fd: Option<AsyncFd<PeerFd>>,
    /// End of file was seen: reads say nothing more, only hang-up or error does.
    read_closed: bool,
}

impl Peer {
    pub fn none() -> Peer {
        Peer {
            fd: None,
            read_closed: false,
        }
    }

    /// The duplicate taken at accept (no new descriptor), registered with this worker's
    /// reactor.
    pub fn watch(sock: Option<&Arc<socket2::Socket>>) -> Peer {
        Peer {
            fd: sock.and_then(register),
            read_closed: false,
        }
    }

    /// Resolves when there is news of the client's end (see [`Left`]). Should the client send
    /// anything, the watch stops (unread bytes would keep it readable) and heartbeats are left
    /// to find out.
    pub async fn gone(&mut self) -> Left {
        let left = match self.fd.as_ref() {
            None => None,
            Some(fd) if self.read_closed => Some(hung_up(fd).await),
            Some(fd) => loop {
                let Ok(mut ready) = fd.ready(Interest::READABLE | CLOSED).await else {
                    break Some(Left::Closed);
                };
                if closed(ready.ready()) {
                    break Some(Left::Closed);
                }
                let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
                // MSG_DONTWAIT: never block the worker, whatever the descriptor's mode.
                match ready.try_io(|s| {
                    s.get_ref()
                        .0
                        .recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT)
                }) {
                    Ok(Ok(0)) => {
                        self.read_closed = true;
                        break Some(Left::ReadClosed);
                    }
                    Ok(Err(_)) => break Some(Left::Closed),
                    Ok(Ok(_)) => break None,
                    Err(_would_block) => continue,
                }
            },
        };
        match left {
            Some(left) => left,
            None => {
                self.fd = None;
                std::future::pending().await
            }
        }
    }
}

/// Hang-up or error on the socket: after end of file, only a reset (the answer of a closed
/// client to our write) or both directions shut brings either.
async fn hung_up(fd: &AsyncFd<PeerFd>) -> Left {
    loop {
        let Ok(mut ready) = fd.ready(CLOSED).await else {
            return Left::Closed;
        };
        if closed(ready.ready()) {
            return Left::Closed;
        }
        ready.clear_ready_matching(Ready::WRITABLE);
    }
}

/// Registered for reading only, the socket never reports plain writability: waiting for
/// "writable" wakes on write-closed (hang-up) alone, and ERROR on an error (a reset).
const CLOSED: Interest = Interest::WRITABLE.add(Interest::ERROR);

fn closed(ready: Ready) -> bool {
    ready.is_write_closed() || ready.is_error()
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
