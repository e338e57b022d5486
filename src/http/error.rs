//! Every refusal is a JSON body with a stable machine-readable `error` code and a sentence for
//! humans, and the right status: hostile or broken input gets a 4xx, never a 500 or a panic
//! (invariant 5).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// Rarely used parts, boxed to keep `Result<_, ApiError>` small.
    pub details: Option<Box<Details>>,
}

/// A challenge header and more members of the JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Details {
    /// `WWW-Authenticate` for 401s (RFC 6750 `Bearer` challenges).
    pub www_authenticate: Option<String>,
    /// More members of the JSON body, e.g. the refused `channels` of a 403.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            details: None,
        }
    }

    /// 429 with `Retry-After`.
    pub fn too_many_requests(
        code: &'static str,
        message: impl Into<String>,
        retry_after_secs: u64,
    ) -> Self {
        ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    pub fn with_challenge(mut self, www_authenticate: String) -> Self {
        self.details
            .get_or_insert_with(Default::default)
            .www_authenticate = Some(www_authenticate);
        self
    }

    pub fn with_field(mut self, key: &str, value: serde_json::Value) -> Self {
        self.details
            .get_or_insert_with(Default::default)
            .fields
            .insert(key.to_string(), value);
        self
    }

    pub fn www_authenticate(&self) -> Option<&str> {
        self.details.as_ref()?.www_authenticate.as_deref()
    }

    /// A member of the JSON body besides `error` and `message`.
    pub fn field(&self, key: &str) -> Option<&serde_json::Value> {
        self.details.as_ref()?.fields.get(key)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unavailable(
        code: &'static str,
        message: impl Into<String>,
        retry_after_secs: u64,
    ) -> Self {
        ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        r.insert_header((header::CACHE_CONTROL, "no-store"));
        if let Some(s) = self.retry_after_secs {
            r.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if let Some(c) = self.www_authenticate() {
            r.insert_header((header::WWW_AUTHENTICATE, c));
        }
        let mut body = serde_json::Map::new();
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        if let Some(d) = &self.details {
            for (k, v) in &d.fields {
                body.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        r.json(serde_json::Value::Object(body))
    }
}
