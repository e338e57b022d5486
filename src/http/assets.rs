//! The browser side served by the gateway itself: the live logs page at `/` and the files of
//! `client/` (the SSE client, the React bindings, the page's script and style) under
//! `/client/`.
//!
//! Serving them from the gateway, rather than from a CDN or a separate web server, means the
//! page is same-origin with the stream (no CORS, the session cookie just works) and that the
//! strictest useful policy holds: the page is sent with `Content-Security-Policy: default-src
//! 'self'`, so it can run no inline script or style and talk to no other host.
//!
//! The files are compiled into the binary (rust-embed; a release build embeds them, a debug
//! build reads them from the source tree so edits show without a rebuild), so the binary runs
//! from any directory and an instance can never serve a page from another version than its own
//! client library.
//!
//! Caching: nothing here has a fingerprinted name (there is no build step), so a long `max-age`
//! would let a browser run yesterday's `logs.js` against today's page after a deploy. Every
//! answer is `Cache-Control: no-cache` with a strong `ETag` instead: a browser revalidates on
//! each load and gets a body-less 304 while the file is unchanged, which is one small round trip.
//! Text files are gzipped once, on first request, when the client accepts gzip (`Vary:
//! Accept-Encoding`; the gzipped variant has its own ETag, as it is another representation).

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use flate2::write::GzEncoder;
use flate2::Compression;
use rust_embed::RustEmbed;

use super::error::ApiError;

#[derive(RustEmbed)]
#[folder = "client/"]
#[include = "*.html"]
#[include = "*.js"]
#[include = "*.css"]
#[include = "*.svg"]
#[include = "*.png"]
struct Client;

/// The policy of the logs page. `default-src 'self'` is the point (no inline script or style,
/// no other host); `base-uri` and `form-action` do not fall back to `default-src`, so they are
/// pinned too: an injected `<base>` or form could otherwise redirect relative URLs or posts.
pub const PAGE_CSP: &str = "default-src 'self'; base-uri 'self'; form-action 'self'";

/// Files at least this large are worth compressing; below, gzip's header outweighs the gain.
const GZIP_MIN_BYTES: usize = 256;

/// `GET /`: the live logs page.
pub async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, "index.html")
        .map(|mut r| {
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_CSP),
            );
            r
        })
        .unwrap_or_else(|e| actix_web::ResponseError::error_response(&e))
}

/// `GET /client/{path}`: a file of `client/`.
pub async fn file(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    serve(&req, &path)
}

/// `Content-Type` by extension: the few kinds `client/` holds. JavaScript must be
/// `text/javascript` for `<script type="module">` to run at all (browsers refuse module scripts
/// with a non-JavaScript MIME type), and `nosniff` is set on every answer.
fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

fn compressible(path: &str) -> bool {
    !path.ends_with(".png")
}

/// One file's bytes as sent: identity or gzip, with its ETag.
struct Variant {
    etag: String,
    body: web::Bytes,
}

/// Gzipped variants, computed once per content hash (a debug build reading from disk may see a
/// file change, which changes its hash).
fn gzip_cache() -> &'static Mutex<HashMap<[u8; 32], Arc<Variant>>> {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], Arc<Variant>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn gzipped(hash: [u8; 32], etag: &str, data: &[u8]) -> Arc<Variant> {
    let mut cache = gzip_cache().lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(cache.entry(hash).or_insert_with(|| {
        let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 3), Compression::best());
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(data);
        let body = enc.finish().unwrap_or_default();
        Arc::new(Variant {
            etag: format!("{}-gz\"", etag.trim_end_matches('"')),
            body: web::Bytes::from(body),
        })
    }))
}

/// Whether `Accept-Encoding` accepts gzip: listed (or `*`) without `q=0`.
fn accepts_gzip(req: &HttpRequest) -> bool {
    let Some(v) = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    v.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("").to_ascii_lowercase();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (coding == "gzip" || coding == "*") && !refused
    })
}

/// Whether `If-None-Match` names `etag` (or is `*`). Weak comparison, as RFC 9110 §13.1.2
/// prescribes for `If-None-Match`.
fn not_modified(req: &HttpRequest, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || bare(t) == etag)
}

fn serve(req: &HttpRequest, path: &str) -> Result<HttpResponse, ApiError> {
    // Embedded names are plain relative paths. A debug build reads from disk, so refuse
    // anything that could step outside `client/` before asking (rust-embed checks too).
    let escapes = path.starts_with('/')
        || path.contains('\\')
        || path.split('/').any(|seg| seg == ".." || seg.is_empty());
    let Some(file) = (!escapes).then(|| Client::get(path)).flatten() else {
        return Err(ApiError::not_found());
    };
    let hash = file.metadata.sha256_hash();
    let etag = hash[..16].iter().fold(String::from("\""), |mut s, b| {
        s.push_str(&format!("{b:02x}"));
        s
    }) + "\"";
    let gzip = compressible(path) && file.data.len() >= GZIP_MIN_BYTES && accepts_gzip(req);
    let variant = if gzip {
        gzipped(hash, &etag, &file.data)
    } else {
        Arc::new(Variant {
            etag,
            body: web::Bytes::from(file.data.into_owned()),
        })
    };

    let fresh = not_modified(req, &variant.etag);
    let mut r = HttpResponse::build(if fresh {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    });
    r.insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, variant.etag.as_str()))
        .insert_header((header::VARY, "Accept-Encoding"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if fresh {
        return Ok(r.finish());
    }
    r.insert_header((header::CONTENT_TYPE, content_type(path)));
    if gzip {
        r.insert_header((header::CONTENT_ENCODING, "gzip"));
    }
    Ok(r.body(variant.body.clone()))
}

/// The asset routes, registered by [`super::routes`].
pub fn routes(cfg: &mut web::ServiceConfig) {
    use actix_web::guard;
    let get_or_head = || guard::Any(guard::Get()).or(guard::Head());
    cfg.route("/", web::route().guard(get_or_head()).to(index))
        .route(
            "/client/{path:.*}",
            web::route().guard(get_or_head()).to(file),
        );
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::{call_service, init_service, read_body, TestRequest};
    use actix_web::App;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn app() -> App<
        impl actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        App::new().configure(routes)
    }

    fn header(r: &actix_web::dev::ServiceResponse, name: header::HeaderName) -> &str {
        r.headers()
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    #[actix_web::test]
    async fn page_has_csp_html_type_and_no_inline_code() {
        let app = init_service(app()).await;
        let r = call_service(&app, TestRequest::get().uri("/").to_request()).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, header::CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header(&r, header::CONTENT_SECURITY_POLICY), PAGE_CSP);
        assert!(PAGE_CSP.starts_with("default-src 'self'"));
        assert_eq!(header(&r, header::CACHE_CONTROL), "no-cache");
        let body = String::from_utf8(read_body(r).await.to_vec()).unwrap();
        assert!(body.contains("<script type=\"module\" src=\"client/logs.js\">"));
        // Relative URLs only (a proxy path prefix must keep working), no inline code.
        assert!(
            !body.contains("src=\"/") && !body.contains("href=\"/"),
            "{body}"
        );
        assert!(
            !body.contains("style=") && !body.contains("<style"),
            "{body}"
        );
        assert!(
            !body.contains("<script>") && !body.contains("onclick"),
            "{body}"
        );
    }

    #[actix_web::test]
    async fn content_types() {
        let app = init_service(app()).await;
        for (path, ct) in [
            ("/client/sse-client.js", "text/javascript; charset=utf-8"),
            ("/client/react.js", "text/javascript; charset=utf-8"),
            ("/client/logs.js", "text/javascript; charset=utf-8"),
            ("/client/logs.css", "text/css; charset=utf-8"),
            ("/client/favicon.svg", "image/svg+xml"),
            ("/client/index.html", "text/html; charset=utf-8"),
        ] {
            let r = call_service(&app, TestRequest::get().uri(path).to_request()).await;
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(header(&r, header::CONTENT_TYPE), ct, "{path}");
            assert_eq!(header(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            // Only the page carries the page's policy.
            assert!(r.headers().get(header::CONTENT_SECURITY_POLICY).is_none());
        }
    }

    #[actix_web::test]
    async fn etag_revalidates_with_304() {
        let app = init_service(app()).await;
        let r = call_service(
            &app,
            TestRequest::get().uri("/client/sse-client.js").to_request(),
        )
        .await;
        let etag = header(&r, header::ETAG).to_string();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        for inm in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"x\", {etag}"),
            "*".into(),
        ] {
            let r = call_service(
                &app,
                TestRequest::get()
                    .uri("/client/sse-client.js")
                    .insert_header((header::IF_NONE_MATCH, inm.as_str()))
                    .to_request(),
            )
            .await;
            assert_eq!(r.status(), 304, "If-None-Match: {inm}");
            assert_eq!(header(&r, header::ETAG), etag);
            assert!(read_body(r).await.is_empty());
        }
        let r = call_service(
            &app,
            TestRequest::get()
                .uri("/client/sse-client.js")
                .insert_header((header::IF_NONE_MATCH, "\"stale\""))
                .to_request(),
        )
        .await;
        assert_eq!(r.status(), 200);
    }

    #[actix_web::test]
    async fn gzip_when_accepted_only() {
        let app = init_service(app()).await;
        let plain = call_service(
            &app,
            TestRequest::get().uri("/client/sse-client.js").to_request(),
        )
        .await;
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(header(&plain, header::VARY), "Accept-Encoding");
        let plain_etag = header(&plain, header::ETAG).to_string();
        let plain_body = read_body(plain).await;

        let gz = call_service(
            &app,
            TestRequest::get()
                .uri("/client/sse-client.js")
                .insert_header((header::ACCEPT_ENCODING, "br, gzip;q=0.8"))
                .to_request(),
        )
        .await;
        assert_eq!(header(&gz, header::CONTENT_ENCODING), "gzip");
        let gz_etag = header(&gz, header::ETAG).to_string();
        assert_ne!(gz_etag, plain_etag, "another representation, another ETag");
        let gz_body = read_body(gz).await;
        assert!(gz_body.len() < plain_body.len() / 2, "compressed");
        let mut out = Vec::new();
        GzDecoder::new(&gz_body[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, plain_body.to_vec());

        let refused = call_service(
            &app,
            TestRequest::get()
                .uri("/client/sse-client.js")
                .insert_header((header::ACCEPT_ENCODING, "gzip;q=0, identity"))
                .to_request(),
        )
        .await;
        assert!(refused.headers().get(header::CONTENT_ENCODING).is_none());

        let r = call_service(
            &app,
            TestRequest::get()
                .uri("/client/sse-client.js")
                .insert_header((header::ACCEPT_ENCODING, "gzip"))
                .insert_header((header::IF_NONE_MATCH, gz_etag.as_str()))
                .to_request(),
        )
        .await;
        assert_eq!(r.status(), 304);
    }

    #[actix_web::test]
    async fn unknown_or_escaping_paths_are_json_404s() {
        let app = init_service(app()).await;
        for path in [
            "/client/nope.js",
            "/client/../Cargo.toml",
            "/client/%2e%2e/Cargo.toml",
            "/client/",
            "/client//etc/passwd",
        ] {
            let r = call_service(&app, TestRequest::get().uri(path).to_request()).await;
            assert_eq!(r.status(), 404, "{path}");
            assert_eq!(header(&r, header::CONTENT_TYPE), "application/json");
        }
    }

    #[actix_web::test]
    async fn head_is_answered_like_get() {
        let app = init_service(app()).await;
        let r = call_service(
            &app,
            TestRequest::default()
                .method(actix_web::http::Method::HEAD)
                .uri("/client/logs.css")
                .to_request(),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, header::CONTENT_TYPE), "text/css; charset=utf-8");
    }

    #[test]
    fn accept_encoding_parsing() {
        let req = |v: &str| {
            TestRequest::default()
                .insert_header((header::ACCEPT_ENCODING, v))
                .to_http_request()
        };
        assert!(accepts_gzip(&req("gzip, deflate, br")));
        assert!(accepts_gzip(&req("GZIP")));
        assert!(accepts_gzip(&req("*")));
        assert!(!accepts_gzip(&req("br")));
        assert!(!accepts_gzip(&req("gzip;q=0")));
        assert!(!accepts_gzip(&req("gzip; q=0.0")));
        assert!(!accepts_gzip(&TestRequest::default().to_http_request()));
    }
}
