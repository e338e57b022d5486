//! A bare HTTP/1.1 GET over a socket with a small receive buffer, for the readers the
//! slow-consumer fault may pause. A browser tab that stops reading leaves its socket unread;
//! on loopback, autotuned buffers of several megabytes would then hide the stall from the
//! gateway for minutes. A 4 KiB `SO_RCVBUF` set before connecting keeps the window small, so
//! the gateway's own per-connection queue is what fills up, as it would behind a slow network.

use std::pin::Pin;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

pub type Body = Pin<Box<dyn Stream<Item = anyhow::Result<Bytes>> + Send>>;

pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Body,
}

/// `GET path` on 127.0.0.1:`port` with `headers`; the body de-chunked as it arrives.
pub async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Response> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    // The head: at most 64 KiB.
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 65536 {
            bail!("response head over 64 KiB");
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the response head");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let mut content_type = String::new();
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-type" {
                content_type = v.to_string();
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let body = futures::stream::unfold(
        (stream, Dechunk::new(chunked, rest), false),
        |(mut stream, mut de, done)| async move {
            if done {
                return None;
            }
            // Bounded: each pass reads from the socket or ends.
            loop {
                match de.take() {
                    Ok(Some(b)) if !b.is_empty() => return Some((Ok(b), (stream, de, false))),
                    Ok(Some(_)) => {}
                    Ok(None) => return None,
                    Err(e) => return Some((Err(e), (stream, de, true))),
                }
                let mut chunk = vec![0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) => {
                        return if de.finished() {
                            None
                        } else {
                            Some((
                                Err(anyhow::anyhow!("connection closed mid-body")),
                                (stream, de, true),
                            ))
                        }
                    }
                    Ok(n) => de.push(&chunk[..n]),
                    Err(e) => return Some((Err(e.into()), (stream, de, true))),
                }
            }
        },
    );
    Ok(Response {
        status,
        content_type,
        body: Box::pin(body),
    })
}

/// Chunked transfer decoding (or identity until close).
struct Dechunk {
    chunked: bool,
    buf: Vec<u8>,
    /// Bytes left in the current chunk (plus its CRLF), when inside one.
    left: Option<usize>,
    ended: bool,
}

impl Dechunk {
    fn new(chunked: bool, initial: Vec<u8>) -> Dechunk {
        Dechunk {
            chunked,
            buf: initial,
            left: None,
            ended: false,
        }
    }

    fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    fn finished(&self) -> bool {
        self.ended || !self.chunked
    }

    /// Decoded bytes available now (`Some(empty)`: need more input; `None`: body over).
    fn take(&mut self) -> anyhow::Result<Option<Bytes>> {
        if self.ended {
            return Ok(None);
        }
        if !self.chunked {
            return Ok(Some(Bytes::from(std::mem::take(&mut self.buf))));
        }
        let mut out = Vec::new();
        loop {
            match self.left {
                Some(n) if n > 2 => {
                    let k = (n - 2).min(self.buf.len());
                    out.extend(self.buf.drain(..k));
                    self.left = Some(n - k);
                    if k == 0 {
                        return Ok(Some(out.into()));
                    }
                }
                Some(_) => {
                    // The CRLF after the chunk's data.
                    if self.buf.len() < 2 {
                        return Ok(Some(out.into()));
                    }
                    self.buf.drain(..2);
                    self.left = None;
                }
                None => {
                    let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                        if self.buf.len() > 1024 {
                            bail!("chunk size line over 1 KiB");
                        }
                        return Ok(Some(out.into()));
                    };
                    let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                    let size =
                        usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                            .with_context(|| format!("bad chunk size {line:?}"))?;
                    self.buf.drain(..i + 2);
                    if size == 0 {
                        self.ended = true;
                        return Ok(if out.is_empty() {
                            None
                        } else {
                            Some(out.into())
                        });
                    }
                    self.left = Some(size + 2);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Dechunk;

    #[test]
    fn dechunks_across_arbitrary_splits() {
        let wire = b"5\r\nhello\r\n7;x=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = Dechunk::new(true, wire[..split].to_vec());
            let mut got = Vec::new();
            got.extend_from_slice(&d.take().expect("valid").unwrap_or_default());
            d.push(&wire[split..]);
            while let Some(b) = d.take().expect("valid") {
                if b.is_empty() {
                    break;
                }
                got.extend_from_slice(&b);
            }
            assert_eq!(got, b"hello, world", "split at {split}");
            assert!(d.finished());
        }
    }
}
