//! Accepting connections and serving requests on each. A connection is a loop of
//! read-request, execute, write-reply; a protocol violation closes that connection alone (with
//! the reason logged), never the server.

use crate::commands::{self, Conn, Outcome};
use crate::error::CommandError;
use crate::state::Shared;
use crate::wire::{self, Request, WireError};
use bson::Document;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

static NEXT_RESPONSE_ID: AtomicI32 = AtomicI32::new(1);

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let mut next_conn = 0i64;
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    next_conn += 1;
                    let shared = shared.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(connection(stream, shared, next_conn, shutdown));
                }
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = crate::state::stopped(&mut stop) => break,
        }
    }
}

async fn connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    id: i64,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    shared.connections_current.fetch_add(1, Ordering::Relaxed);
    shared.connections_total.fetch_add(1, Ordering::Relaxed);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut conn = Conn { id, app_name: None };
    loop {
        let request = tokio::select! {
            r = wire::read_request(&mut rd) => r,
            _ = crate::state::stopped(&mut shutdown) => break,
        };
        let reply = match request {
            Err(WireError::Closed) => break,
            Err(e) => {
                tracing::warn!(connection = id, "closing connection: {e}");
                break;
            }
            Ok(Request::Msg {
                request_id,
                flags,
                body,
            }) => {
                let db = match body.get_str("$db") {
                    Ok(db) => db.to_string(),
                    Err(_) => {
                        let err =
                            CommandError::new(40571, "OP_MSG requests require a $db argument");
                        let bytes = wire::encode_msg(next_id(), request_id, 0, &err.to_document());
                        if wr.write_all(&bytes).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                let exhaust = flags & wire::FLAG_EXHAUST_ALLOWED != 0
                    && body.keys().next().map(String::as_str) == Some("getMore");
                let again = exhaust.then(|| body.clone());
                match commands::execute(&shared, &mut conn, body, &db).await {
                    Outcome::Close => break,
                    // moreToCome from the client: an unacknowledged write wants no reply.
                    Outcome::Reply(_) if flags & wire::FLAG_MORE_TO_COME != 0 => continue,
                    Outcome::Reply(doc) => match again {
                        Some(get_more) if open_cursor(&doc) => {
                            match exhaust_replies(
                                &shared, &mut conn, &mut wr, request_id, get_more, doc, &db,
                            )
                            .await
                            {
                                Ok(()) => continue,
                                Err(()) => break,
                            }
                        }
                        _ => wire::encode_msg(next_id(), request_id, 0, &doc),
                    },
                }
            }
            Ok(Request::Query {
                request_id,
                collection,
                query,
            }) => match legacy_handshake(&shared, &mut conn, &collection, query).await {
                Some(doc) => wire::encode_reply(next_id(), request_id, &doc),
                None => break,
            },
        };
        if let Err(e) = wr.write_all(&reply).await {
            tracing::debug!(connection = id, "write failed: {e}");
            break;
        }
    }
    shared.connections_current.fetch_sub(1, Ordering::Relaxed);
}

/// Whether a reply leaves its cursor open (a non-zero `cursor.id`).
fn open_cursor(reply: &Document) -> bool {
    reply
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_i64("id").ok())
        .is_some_and(|id| id != 0)
}

/// An exhaust `getMore`: the server keeps answering, each reply flagged `moreToCome` and
/// responding to the previous one, until the cursor is exhausted or fails; that last reply
/// goes without the flag and the client speaks again.
async fn exhaust_replies(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    wr: &mut (impl AsyncWriteExt + Unpin),
    request_id: i32,
    get_more: Document,
    first: Document,
    db: &str,
) -> Result<(), ()> {
    let mut reply = first;
    let mut response_to = request_id;
    loop {
        let id = next_id();
        let more = open_cursor(&reply);
        let flags = if more { wire::FLAG_MORE_TO_COME } else { 0 };
        if wr
            .write_all(&wire::encode_msg(id, response_to, flags, &reply))
            .await
            .is_err()
        {
            return Err(());
        }
        if !more {
            return Ok(());
        }
        response_to = id;
        reply = match commands::execute(shared, conn, get_more.clone(), db).await {
            Outcome::Reply(doc) => doc,
            Outcome::Close => return Err(()),
        };
    }
}

/// OP_QUERY is served only for the handshake, as MongoDB 6.0+ does; anything else is told so.
async fn legacy_handshake(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    collection: &str,
    query: Document,
) -> Option<Document> {
    let query = match query.get_document("$query") {
        Ok(q) => q.clone(),
        Err(_) => query,
    };
    let name = query.keys().next().map(String::as_str).unwrap_or("");
    let db = collection.strip_suffix(".$cmd").unwrap_or("");
    if !db.is_empty() && matches!(name, "isMaster" | "ismaster" | "hello") {
        return match commands::execute(shared, conn, query, db).await {
            Outcome::Reply(d) => Some(d),
            Outcome::Close => None,
        };
    }
    Some(
        CommandError::new(352, "Unsupported OP_QUERY command: only the isMaster/hello handshake is served over OP_QUERY")
            .to_document(),
    )
}

fn next_id() -> i32 {
    NEXT_RESPONSE_ID.fetch_add(1, Ordering::Relaxed)
}
