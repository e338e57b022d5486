//! MongoDB's wire protocol framing: the 16-byte header, OP_MSG (the protocol of every modern
//! driver) and OP_QUERY/OP_REPLY, kept only because drivers may open a connection with a legacy
//! `isMaster` handshake. Parsing never trusts a length from the peer: every length is checked
//! against what was actually received, so a hostile message fails this connection only.

use bson::{Bson, Document};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const OP_REPLY: i32 = 1;
pub const OP_QUERY: i32 = 2004;
pub const OP_COMPRESSED: i32 = 2012;
pub const OP_MSG: i32 = 2013;

/// MongoDB's `maxMessageSizeBytes`, advertised in `hello`; anything declared larger is refused
/// before a byte of its body is buffered.
pub const MAX_MESSAGE_SIZE: usize = 48_000_000;
pub const MAX_BSON_OBJECT_SIZE: usize = 16 * 1024 * 1024;
/// MongoDB's `BSONObjMaxInternalSize`: the server's own documents (commands, change events) may
/// exceed the user limit by this much headroom before it refuses them.
pub const MAX_INTERNAL_BSON_OBJECT_SIZE: usize = MAX_BSON_OBJECT_SIZE + 16 * 1024;

const HEADER_LEN: usize = 16;

/// OP_MSG flag bits (MongoDB wire protocol spec).
pub const FLAG_CHECKSUM_PRESENT: u32 = 1;
pub const FLAG_MORE_TO_COME: u32 = 1 << 1;
/// The client accepts a stream of `moreToCome` replies to one `getMore` (exhaust cursors).
pub const FLAG_EXHAUST_ALLOWED: u32 = 1 << 16;

/// Why a connection is being closed. Logged, never sent: the peer broke the protocol, so there
/// is no reply it could understand.
#[derive(Debug, PartialEq)]
pub enum WireError {
    /// The peer closed the connection between messages: not an error at all.
    Closed,
    Io(String),
    BadLength(i64),
    TooLarge(usize),
    UnsupportedOpcode(i32),
    Malformed(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Closed => write!(f, "connection closed by peer"),
            WireError::Io(e) => write!(f, "i/o error: {e}"),
            WireError::BadLength(n) => write!(f, "invalid message length {n}"),
            WireError::TooLarge(n) => {
                write!(
                    f,
                    "message length {n} exceeds maxMessageSizeBytes {MAX_MESSAGE_SIZE}"
                )
            }
            WireError::UnsupportedOpcode(op) => write!(f, "unsupported opcode {op}"),
            WireError::Malformed(m) => write!(f, "malformed message: {m}"),
        }
    }
}

/// One request, decoded.
#[derive(Debug)]
pub enum Request {
    /// OP_MSG: the kind-0 body with every kind-1 document sequence folded into it as an array
    /// field, which is exactly how the server treats them.
    Msg {
        request_id: i32,
        flags: u32,
        body: Document,
    },
    /// OP_QUERY: only the legacy handshake on `admin.$cmd` is served.
    Query {
        request_id: i32,
        collection: String,
        query: Document,
    },
}

impl Request {
    pub fn request_id(&self) -> i32 {
        match self {
            Request::Msg { request_id, .. } | Request::Query { request_id, .. } => *request_id,
        }
    }
}

/// Reads one message. `Err(Closed)` on a clean end of stream before a header.
pub async fn read_request<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Request, WireError> {
    let mut header = [0u8; HEADER_LEN];
    match reader.read_exact(&mut header[..4]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(WireError::Io(e.to_string())),
    }
    let length = i32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    if length < HEADER_LEN as i32 {
        return Err(WireError::BadLength(length as i64));
    }
    let length = length as usize;
    if length > MAX_MESSAGE_SIZE {
        return Err(WireError::TooLarge(length));
    }
    reader
        .read_exact(&mut header[4..])
        .await
        .map_err(|e| WireError::Io(e.to_string()))?;
    let mut body = vec![0u8; length - HEADER_LEN];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| WireError::Io(e.to_string()))?;
    let request_id = i32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let opcode = i32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    decode_body(request_id, opcode, &body)
}

fn decode_body(request_id: i32, opcode: i32, body: &[u8]) -> Result<Request, WireError> {
    match opcode {
        OP_MSG => decode_msg(request_id, body),
        OP_QUERY => decode_query(request_id, body),
        other => Err(WireError::UnsupportedOpcode(other)),
    }
}

fn decode_msg(request_id: i32, body: &[u8]) -> Result<Request, WireError> {
    let mut cur = Cursor::new(body);
    let flags = cur.u32()?;
    // Bits 0-15 are "required": a server must refuse ones it does not know.
    let known = FLAG_CHECKSUM_PRESENT | FLAG_MORE_TO_COME;
    if flags & 0xFFFF & !known != 0 {
        return Err(WireError::Malformed(format!(
            "unknown required flag bits {flags:#x}"
        )));
    }
    let end = if flags & FLAG_CHECKSUM_PRESENT != 0 {
        // The CRC-32C is tolerated, not verified: TCP on loopback already guarantees integrity.
        body.len()
            .checked_sub(4)
            .ok_or_else(|| WireError::Malformed("checksum flag without checksum".into()))?
    } else {
        body.len()
    };
    let mut main: Option<Document> = None;
    let mut sequences: Vec<(String, Vec<Bson>)> = Vec::new();
    while cur.pos < end {
        match cur.u8()? {
            0 => {
                if main.is_some() {
                    return Err(WireError::Malformed("more than one kind-0 section".into()));
                }
                main = Some(cur.document(end)?);
            }
            1 => {
                let start = cur.pos;
                let size = cur.i32()?;
                if size < 4 || start + size as usize > end {
                    return Err(WireError::Malformed(format!("bad sequence size {size}")));
                }
                let seq_end = start + size as usize;
                let ident = cur.cstring(seq_end)?;
                let mut docs = Vec::new();
                while cur.pos < seq_end {
                    docs.push(Bson::Document(cur.document(seq_end)?));
                }
                sequences.push((ident, docs));
            }
            kind => return Err(WireError::Malformed(format!("unknown section kind {kind}"))),
        }
    }
    let mut body = main.ok_or_else(|| WireError::Malformed("no kind-0 section".into()))?;
    for (ident, docs) in sequences {
        body.insert(ident, Bson::Array(docs));
    }
    Ok(Request::Msg {
        request_id,
        flags,
        body,
    })
}

fn decode_query(request_id: i32, body: &[u8]) -> Result<Request, WireError> {
    let mut cur = Cursor::new(body);
    let _flags = cur.i32()?;
    let collection = cur.cstring(body.len())?;
    let _skip = cur.i32()?;
    let _limit = cur.i32()?;
    let query = cur.document(body.len())?;
    Ok(Request::Query {
        request_id,
        collection,
        query,
    })
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| WireError::Malformed("truncated message".into()))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self) -> Result<i32, WireError> {
        Ok(self.u32()? as i32)
    }

    fn cstring(&mut self, limit: usize) -> Result<String, WireError> {
        let rest = &self.buf[self.pos..limit.min(self.buf.len())];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| WireError::Malformed("unterminated cstring".into()))?;
        let s = std::str::from_utf8(&rest[..nul])
            .map_err(|_| WireError::Malformed("cstring is not UTF-8".into()))?
            .to_string();
        self.pos += nul + 1;
        Ok(s)
    }

    /// One BSON document that must end at or before `limit`.
    fn document(&mut self, limit: usize) -> Result<Document, WireError> {
        let start = self.pos;
        let len = self.i32()?;
        if len < 5 || start + len as usize > limit.min(self.buf.len()) {
            return Err(WireError::Malformed(format!(
                "bad BSON document length {len}"
            )));
        }
        if len as usize > MAX_INTERNAL_BSON_OBJECT_SIZE {
            return Err(WireError::Malformed(format!(
                "BSON document of {len} bytes is too large"
            )));
        }
        self.pos = start;
        let bytes = self.take(len as usize)?;
        Document::from_reader(bytes).map_err(|e| WireError::Malformed(format!("invalid BSON: {e}")))
    }
}

fn header(out: &mut Vec<u8>, request_id: i32, response_to: i32, opcode: i32) {
    out.extend_from_slice(&0i32.to_le_bytes()); // patched by `finish`
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&response_to.to_le_bytes());
    out.extend_from_slice(&opcode.to_le_bytes());
}

fn finish(mut out: Vec<u8>) -> Vec<u8> {
    let len = out.len() as i32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    out
}

/// An OP_MSG reply with one kind-0 section.
pub fn encode_msg(request_id: i32, response_to: i32, flags: u32, body: &Document) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    header(&mut out, request_id, response_to, OP_MSG);
    out.extend_from_slice(&flags.to_le_bytes());
    out.push(0);
    // Serialising a Document into a Vec cannot fail: every key is a valid cstring (the parser
    // only produced documents that came from valid BSON) and writing to memory has no I/O errors.
    body.to_writer(&mut out).unwrap_or_else(|e| {
        tracing::error!("failed to serialise reply: {e}");
    });
    finish(out)
}

/// An OP_REPLY carrying one document, for the legacy handshake.
pub fn encode_reply(request_id: i32, response_to: i32, doc: &Document) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    header(&mut out, request_id, response_to, OP_REPLY);
    out.extend_from_slice(&8i32.to_le_bytes()); // AwaitCapable
    out.extend_from_slice(&0i64.to_le_bytes()); // cursorID
    out.extend_from_slice(&0i32.to_le_bytes()); // startingFrom
    out.extend_from_slice(&1i32.to_le_bytes()); // numberReturned
    doc.to_writer(&mut out).unwrap_or_else(|e| {
        tracing::error!("failed to serialise reply: {e}");
    });
    finish(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn msg_bytes(flags: u32, sections: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        header(&mut out, 7, 0, OP_MSG);
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(sections);
        finish(out)
    }

    fn doc_bytes(d: &Document) -> Vec<u8> {
        let mut v = Vec::new();
        d.to_writer(&mut v).unwrap();
        v
    }

    async fn parse(bytes: Vec<u8>) -> Result<Request, WireError> {
        read_request(&mut bytes.as_slice()).await
    }

    #[tokio::test]
    async fn folds_document_sequences_into_the_body() {
        let mut sections = vec![0u8];
        sections.extend(doc_bytes(&doc! {"insert": "c", "$db": "d"}));
        let d1 = doc_bytes(&doc! {"a": 1});
        let d2 = doc_bytes(&doc! {"a": 2});
        let mut seq = Vec::new();
        seq.extend_from_slice(b"documents\0");
        seq.extend(&d1);
        seq.extend(&d2);
        sections.push(1);
        sections.extend(((seq.len() + 4) as i32).to_le_bytes());
        sections.extend(seq);
        match parse(msg_bytes(0, &sections)).await.unwrap() {
            Request::Msg {
                body, request_id, ..
            } => {
                assert_eq!(request_id, 7);
                assert_eq!(body.get_array("documents").unwrap().len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn tolerates_a_checksum() {
        let mut sections = vec![0u8];
        sections.extend(doc_bytes(&doc! {"ping": 1}));
        sections.extend([1, 2, 3, 4]);
        assert!(parse(msg_bytes(FLAG_CHECKSUM_PRESENT, &sections))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn rejects_hostile_framing() {
        let mut too_short = msg_bytes(0, &[]);
        too_short[..4].copy_from_slice(&3i32.to_le_bytes());
        assert_eq!(parse(too_short).await.unwrap_err(), WireError::BadLength(3));

        let mut huge = msg_bytes(0, &[]);
        huge[..4].copy_from_slice(&(50_000_000i32).to_le_bytes());
        assert!(matches!(parse(huge).await, Err(WireError::TooLarge(_))));

        let mut truncated_bson = vec![0u8];
        truncated_bson.extend(&doc_bytes(&doc! {"ping": 1})[..6]);
        assert!(matches!(
            parse(msg_bytes(0, &truncated_bson)).await,
            Err(WireError::Malformed(_))
        ));

        let mut other = msg_bytes(0, &[]);
        other[12..16].copy_from_slice(&2001i32.to_le_bytes());
        assert_eq!(
            parse(other).await.unwrap_err(),
            WireError::UnsupportedOpcode(2001)
        );

        assert_eq!(parse(Vec::new()).await.unwrap_err(), WireError::Closed);
    }
}
