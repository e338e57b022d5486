//! `POST /v1/publish`: services send events to channels without writing a collection of
//! their own. The gateway inserts each into the events collection (`SSE_EVENTS_COLLECTION`),
//! which every instance tails like any other source, so a publish on one instance reaches the
//! subscribers of all of them and is resumable like everything else. MongoDB stays the only
//! shared component.
//!
//! Body: `{"channel": "…", "data": <any JSON>}`, or an array of 1 to [`MAX_BATCH`] of them
//! (one `insert` command), at most [`MAX_BODY_BYTES`]. The whole body is validated before
//! anything is written, so a 4xx never leaves part of a batch behind.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bson::oid::ObjectId;
use bson::{Bson, Document};
use futures::StreamExt;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::channel::Channel;
use crate::routing::SourceSpec;

/// Largest accepted body (64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most events in one batch.
pub const MAX_BATCH: usize = 100;
/// Nesting allowed inside `data`: MongoDB refuses documents nested deeper than 100 levels,
/// and the stored document adds its own; a 400 here beats a failed insert.
pub const MAX_DATA_DEPTH: usize = 64;
/// How long the insert may take before the answer is a 503 (MongoDB down or unreachable).
const INSERT_TIMEOUT: Duration = Duration::from_secs(10);
/// `Retry-After` of a 503.
const RETRY_AFTER_SECS: u64 = 2;

/// One validated event.
struct Item {
    channel: Channel,
    data: Bson,
}

pub async fn publish(
    req: HttpRequest,
    state: web::Data<AppState>,
    mut body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Some(events) = state.sources.published() else {
        return Err(ApiError::not_found());
    };
    let identity = state.gate.auth.authenticate(&req)?;
    check_content_type(&req)?;
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > MAX_BODY_BYTES as u64 {
            return Err(too_large());
        }
    }
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("invalid_json", format!("cannot read the body: {e}"))
        })?;
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    let (items, batch) = parse(&bytes)?;
    let channels: Vec<Channel> = items.iter().map(|i| i.channel.clone()).collect();
    identity.authorize_publish(&channels)?;

    let now = bson::DateTime::now();
    let mut ids = Vec::with_capacity(items.len());
    let docs: Vec<Document> = items
        .into_iter()
        .map(|i| {
            let id = ObjectId::new();
            ids.push(id);
            SourceSpec::published_document(id, &i.channel, i.data, now)
        })
        .collect();
    let coll = state.db.collection::<Document>(&events.collection);
    let insert = state
        .runtime
        .spawn(async move { coll.insert_many(docs).await.map(|_| ()) });
    let asked = std::time::Instant::now();
    match tokio::time::timeout(INSERT_TIMEOUT, insert).await {
        Ok(Ok(Ok(()))) => {
            tracing::debug!(first = ?ids.first(), took = ?asked.elapsed(), "published");
        }
        Ok(Ok(Err(e))) => {
            return Err(ApiError::unavailable(
                "mongodb_unavailable",
                format!("the insert into MongoDB failed: {e}"),
                RETRY_AFTER_SECS,
            ))
        }
        Ok(Err(_)) | Err(_) => {
            return Err(ApiError::unavailable(
                "mongodb_unavailable",
                format!("MongoDB did not take the insert within {INSERT_TIMEOUT:?}"),
                RETRY_AFTER_SECS,
            ))
        }
    }
    let answers: Vec<Value> = ids
        .iter()
        .zip(&channels)
        .map(|(id, ch)| json!({"id": id.to_hex(), "channel": ch.as_str()}))
        .collect();
    let body = if batch {
        Value::Array(answers)
    } else {
        answers.into_iter().next().unwrap_or(Value::Null)
    };
    Ok(HttpResponse::build(StatusCode::ACCEPTED)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body))
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn check_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "send Content-Type: application/json (got {:?})",
            truncate(ct)
        ),
    ))
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The items of a body, and whether it was a batch (an array).
fn parse(bytes: &[u8]) -> Result<(Vec<Item>, bool), ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    match value {
        Value::Array(list) => {
            if list.is_empty() {
                return Err(ApiError::bad_request(
                    "invalid_json",
                    "the batch is empty: send 1 to 100 events",
                ));
            }
            if list.len() > MAX_BATCH {
                return Err(ApiError::bad_request(
                    "too_many_events",
                    format!(
                        "the batch has {} events, at most {MAX_BATCH} are allowed",
                        list.len()
                    ),
                ));
            }
            let items = list
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    item(v).map_err(|e| {
                        ApiError {
                            message: format!("event {i} of the batch: {}", e.message),
                            ..e
                        }
                        .with_field("index", json!(i))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((items, true))
        }
        other => Ok((vec![item(&other)?], false)),
    }
}

fn item(v: &Value) -> Result<Item, ApiError> {
    let Value::Object(obj) = v else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "expected an object {\"channel\": \"…\", \"data\": …}",
        ));
    };
    let channel = match obj.get("channel") {
        Some(Value::String(s)) => Channel::parse(s).map_err(|e| {
            ApiError::bad_request("invalid_channel", format!("channel {:?}: {e}", truncate(s)))
        })?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_channel",
                "\"channel\" must be a string",
            ))
        }
        None => {
            return Err(ApiError::bad_request(
                "invalid_channel",
                "\"channel\" is missing",
            ))
        }
    };
    let Some(data) = obj.get("data") else {
        return Err(ApiError::bad_request("missing_data", "\"data\" is missing"));
    };
    Ok(Item {
        channel,
        data: to_bson(data, 0)?,
    })
}

/// Plain JSON to BSON, as given: no Extended JSON interpretation (`{"$oid": …}` stays an
/// object), integers as Int64 (or Double beyond it). Field names MongoDB or BSON cannot store
/// (NUL inside, `$` first) and excessive nesting are refused here rather than half-inserted.
fn to_bson(v: &Value, depth: usize) -> Result<Bson, ApiError> {
    if depth > MAX_DATA_DEPTH {
        return Err(ApiError::bad_request(
            "invalid_json",
            format!("\"data\" is nested deeper than {MAX_DATA_DEPTH} levels"),
        ));
    }
    Ok(match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Bson::Int64(i),
            None => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(a) => Bson::Array(
            a.iter()
                .map(|e| to_bson(e, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => {
            let mut d = Document::new();
            for (k, e) in o {
                if k.contains('\0') || k.starts_with('$') {
                    return Err(ApiError::bad_request(
                        "invalid_json",
                        format!(
                            "field name {:?} in \"data\": names must not start with '$' or contain NUL",
                            truncate(k)
                        ),
                    ));
                }
                d.insert(k.clone(), to_bson(e, depth + 1)?);
            }
            Bson::Document(d)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> &'static str {
        parse(body.as_bytes()).err().map(|e| e.code).unwrap_or("ok")
    }

    #[test]
    fn validates_everything_before_writing() {
        assert_eq!(code(r#"{"channel":"a:b","data":{"x":[1,2.5,null]}}"#), "ok");
        assert_eq!(code(r#"{"channel":"a","data":null}"#), "ok");
        assert_eq!(
            code(r#"[{"channel":"a","data":1},{"channel":"b","data":2}]"#),
            "ok"
        );
        assert_eq!(code(""), "invalid_json");
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code("[]"), "invalid_json");
        assert_eq!(code("3"), "invalid_json");
        assert_eq!(code(r#"{"data":1}"#), "invalid_channel");
        assert_eq!(code(r#"{"channel":7,"data":1}"#), "invalid_channel");
        assert_eq!(code(r#"{"channel":"a b","data":1}"#), "invalid_channel");
        assert_eq!(
            code(r#"{"channel":"a:b:c:d:e","data":1}"#),
            "invalid_channel"
        );
        assert_eq!(code(r#"{"channel":"a"}"#), "missing_data");
        assert_eq!(code(r#"{"channel":"a","data":{"$set":1}}"#), "invalid_json");
        assert_eq!(
            code(r#"{"channel":"a","data":{"a\u0000":1}}"#),
            "invalid_json"
        );
        let deep = "[".repeat(80) + &"]".repeat(80);
        assert_eq!(
            code(&format!(r#"{{"channel":"a","data":{deep}}}"#)),
            "invalid_json"
        );
        let e = parse(br#"[{"channel":"a","data":1},{"channel":"","data":2}]"#)
            .err()
            .unwrap();
        assert_eq!(e.code, "invalid_channel");
        assert_eq!(e.field("index"), Some(&json!(1)));
        let many = format!("[{}]", vec![r#"{"channel":"a","data":1}"#; 101].join(","));
        assert_eq!(code(&many), "too_many_events");
    }

    #[test]
    fn data_round_trips_as_plain_json() {
        let v = json!({"$oid": "x"});
        assert!(to_bson(&v, 0).is_err());
        let v =
            json!({"oid": {"k": "65a1b2c3d4e5f60718293a4b"}, "n": 1, "big": 1e300, "u": u64::MAX});
        let b = to_bson(&v, 0).unwrap();
        let back = crate::doc_json::bson_to_json(&b);
        assert_eq!(back["oid"], v["oid"]);
        assert_eq!(back["n"], json!(1));
        assert_eq!(back["big"], json!(1e300));
    }
}
