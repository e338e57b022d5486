//! Learning that a client has gone while it reads nothing. actix notices a closed peer only
//! when a write fails, one or two heartbeats later; until then the connection keeps its queue
//! and its places in the limits. An SSE client sends nothing after its request, so news about
//! its socket's end is news about the client.
//!
//! That news is ambiguous. End of file means the client will send nothing more: it closed its
//! socket, or it only shut its sending side (`shutdown(SHUT_WR)`, legal HTTP/1.1 that some
//! proxies and tools use) and still reads. Nothing on our side tells the two apart until we
//! write: a closed socket answers a write with a reset, a half-closed one takes it. So end of
//! file is reported as [`Left::ReadClosed`], the stream writes something at once, and the
//! watch then waits for hang-up or error ([`Left::Closed`]).
//!
//! **One descriptor per connection.** The socket is already registered with actix's reactor,
//! and an epoll set takes a descriptor once, so watching it there would need a duplicate
//! descriptor per connection — a third of the open-file limit spent on watching. Instead the
//! process has one epoll set of its own ([`PeerWatch`]) that holds every streaming socket,
//! asking only for `EPOLLRDHUP` (end of file), edge-triggered: data from the client, and our
//! own writes, never wake it. One task turns its events into wake-ups of the connections.
//!
//! Registrations are never removed by hand. The kernel drops one when the socket closes; a
//! descriptor number that is reused afterwards by another connection is registered afresh.
//! Removing by number could remove that other connection's registration instead, if actix
//! closed ours first. A connection that outlives its stream (keep-alive, a next request)
//! re-registers its socket under a new token ([`libc::EPOLL_CTL_MOD`]).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;
use tokio::sync::{watch, Notify};

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

/// Bits of [`Slot::seen`].
const READ_CLOSED: u8 = 1;
const CLOSED: u8 = 2;

/// One watched connection: what its socket reported, and its waiting stream.
#[derive(Default)]
struct Slot {
    seen: AtomicU8,
    wake: Notify,
}

/// The process's epoll set of streaming sockets, and the connections waiting on them.
pub struct PeerWatch {
    epoll: AsyncFd<OwnedFd>,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    next_token: AtomicU64,
}

/// Events taken from the set per `epoll_wait`.
const BATCH: usize = 256;

impl PeerWatch {
    /// An empty set, registered with the current tokio runtime (which must have I/O enabled):
    /// [`PeerWatch::run`] must then be driven on that runtime.
    pub fn new() -> io::Result<Arc<PeerWatch>> {
        // SAFETY: epoll_create1 has no preconditions; a valid result is a new descriptor that
        // nothing else owns.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the `OwnedFd` moves into the `AsyncFd` and lives exactly as long as its
        // registration, always returning the same descriptor.
        let epoll =
            unsafe { AsyncFd::register_with_interest(epoll, tokio::io::Interest::READABLE) }?;
        Ok(Arc::new(PeerWatch {
            epoll,
            slots: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
        }))
    }

    /// Watches `fd`, a connected socket that stays open at least as long as the [`Peer`]
    /// (actix drops a response's body before it closes the connection). Watching fails
    /// quietly: heartbeats still find out, later.
    pub fn watch(self: &Arc<Self>, fd: RawFd) -> Peer {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::default());
        self.slots_lock().insert(token, Arc::clone(&slot));
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        let epfd = self.epoll.get_ref().as_raw_fd();
        // SAFETY: plain system calls on descriptors we hold; `ev` outlives them.
        let mut rc = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
            // A previous stream on this connection registered it: take it over.
            rc = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_MOD, fd, &mut ev) };
        }
        if rc != 0 {
            tracing::debug!("cannot watch a connection: {}", io::Error::last_os_error());
            self.slots_lock().remove(&token);
            return Peer::none();
        }
        Peer {
            watched: Some(Watched {
                watch: Arc::clone(self),
                token,
                slot,
            }),
            told_read_closed: false,
        }
    }

    /// Connections being watched (for tests).
    pub fn watching(&self) -> usize {
        self.slots_lock().len()
    }

    /// Turns the set's events into wake-ups until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; BATCH];
        loop {
            let mut ready = tokio::select! {
                r = self.epoll.readable() => match r {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!("the peer watch stopped: {e}; closed clients are noticed at the next write");
                        return;
                    }
                },
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            // Drain the set; the readiness is cleared only when it says it is empty.
            let taken = ready.try_io(|epoll| {
                // SAFETY: `events` has room for BATCH entries; timeout 0 never blocks.
                let n = unsafe {
                    libc::epoll_wait(
                        epoll.get_ref().as_raw_fd(),
                        events.as_mut_ptr(),
                        BATCH as i32,
                        0,
                    )
                };
                match n {
                    n if n > 0 => Ok(n as usize),
                    0 => Err(io::ErrorKind::WouldBlock.into()),
                    _ => Err(io::Error::last_os_error()),
                }
            });
            match taken {
                Ok(Ok(n)) => self.dispatch(&events[..n]),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => {
                    tracing::warn!(
                        "the peer watch stopped: {e}; closed clients are noticed at the next write"
                    );
                    return;
                }
                Err(_would_block) => {}
            }
        }
    }

    fn dispatch(&self, events: &[libc::epoll_event]) {
        let slots = self.slots_lock();
        for ev in events {
            let (bits, token) = (ev.events, ev.u64);
            // A token no longer here belongs to a stream that ended: its connection went on
            // (keep-alive) and reports its end to nobody.
            let Some(slot) = slots.get(&token) else {
                continue;
            };
            let mut seen = 0;
            if bits & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                seen |= CLOSED;
            }
            if bits & libc::EPOLLRDHUP as u32 != 0 {
                seen |= READ_CLOSED;
            }
            if seen != 0 {
                slot.seen.fetch_or(seen, Ordering::Release);
                // Stores a permit when the stream is not waiting now: nothing is lost.
                slot.wake.notify_one();
            }
        }
    }

    fn slots_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        // Nothing panics under this lock; a poisoned map is still a valid map.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Watched {
    watch: Arc<PeerWatch>,
    token: u64,
    slot: Arc<Slot>,
}

/// A connection's socket, watched for the client's end. Watching nothing (no socket, or the
/// registration failed) never resolves: heartbeats still find out, later.
pub struct Peer {
    watched: Option<Watched>,
    /// [`Left::ReadClosed`] was reported: from now on only [`Left::Closed`] is news.
    told_read_closed: bool,
}

impl Peer {
    pub fn none() -> Peer {
        Peer {
            watched: None,
            told_read_closed: false,
        }
    }

    /// Resolves when there is news of the client's end (see [`Left`]). Cancel-safe: usable in
    /// `select!`, a wake-up that arrives meanwhile is kept.
    pub async fn gone(&mut self) -> Left {
        let Some(w) = self.watched.as_ref() else {
            return std::future::pending().await;
        };
        loop {
            let seen = w.slot.seen.load(Ordering::Acquire);
            if seen & CLOSED != 0 {
                return Left::Closed;
            }
            if seen & READ_CLOSED != 0 && !self.told_read_closed {
                self.told_read_closed = true;
                return Left::ReadClosed;
            }
            w.slot.wake.notified().await;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(w) = self.watched.take() {
            w.watch.slots_lock().remove(&w.token);
        }
    }
}

/// A streaming connection's socket, as taken when it was accepted: its descriptor (no
/// duplicate), and its inode, which tells it from a later socket given the same number.
#[derive(Debug, Clone, Copy)]
pub struct ConnSocket {
    fd: RawFd,
    inode: u64,
}

impl ConnSocket {
    pub fn of(sock: &impl AsRawFd) -> Option<ConnSocket> {
        let fd = sock.as_raw_fd();
        Some(ConnSocket {
            fd,
            inode: inode(fd)?,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Shuts the socket both ways, so that a response stream nobody polls any more (its
    /// client stopped reading) fails its next write and ends. Called under the hub lock while
    /// the connection is registered there, which it is only while its body exists: actix drops
    /// the body before it closes the socket. The inode check guards that reasoning.
    pub fn shutdown(&self) {
        if inode(self.fd) == Some(self.inode) {
            // SAFETY: a plain system call on a descriptor that is still this connection's.
            unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        }
    }
}

fn inode(fd: RawFd) -> Option<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer on success and nothing on failure.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so the buffer is initialised.
    Some(unsafe { st.assume_init() }.st_ino)
}
