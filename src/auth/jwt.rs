//! JWT verification with the jsonwebtoken crate.
//!
//! The algorithm is fixed by configuration (`SSE_JWT_ALGORITHM`) and the token's own `alg`
//! header is only compared against it, never obeyed: that is what defeats `alg: none` and the
//! classic HS256-signed-with-the-RSA-public-key confusion. HS256 verifies with
//! `SSE_JWT_SECRET`; RS256 and ES256 with the PEM public key in `SSE_JWT_PUBLIC_KEY_FILE`.
//!
//! Time claims: `exp` is required and strict — a stream ends at `exp`, so accepting a token
//! that is already past it would only open a stream that ends at once. `nbf` and `iat` are
//! honoured with `SSE_JWT_LEEWAY_SECS` of tolerance for clocks that disagree a little.

use std::fmt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::grant::Grant;
use super::{AuthError, Claims};

/// Tokens longer than this are refused before any parsing or cryptography.
pub const MAX_TOKEN_LEN: usize = 8192;

/// HMAC secrets shorter than the hash output weaken HS256 (RFC 7518, section 3.2).
pub const MIN_SECRET_LEN: usize = 32;

/// Default `SSE_JWT_LEEWAY_SECS`.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// The algorithms `SSE_JWT_ALGORITHM` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
    Rs256,
    Es256,
}

impl JwtAlgorithm {
    pub fn parse(s: &str) -> Option<JwtAlgorithm> {
        match s {
            "HS256" => Some(JwtAlgorithm::Hs256),
            "RS256" => Some(JwtAlgorithm::Rs256),
            "ES256" => Some(JwtAlgorithm::Es256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Es256 => "ES256",
        }
    }

    fn jsonwebtoken(self) -> Algorithm {
        match self {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
            JwtAlgorithm::Es256 => Algorithm::ES256,
        }
    }
}

/// The verification key, as configured.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// `SSE_JWT_SECRET`, for HS256.
    Secret(Vec<u8>),
    /// The contents of `SSE_JWT_PUBLIC_KEY_FILE`, for RS256 or ES256.
    PublicKeyPem { path: PathBuf, pem: Vec<u8> },
}

/// Validated `SSE_JWT_*` settings.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub algorithm: JwtAlgorithm,
    pub key: JwtKey,
    pub leeway_secs: u64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match &self.key {
            JwtKey::Secret(_) => "secret (redacted)".to_string(),
            JwtKey::PublicKeyPem { path, .. } => format!("public key {}", path.display()),
        };
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field("key", &key)
            .field("leeway_secs", &self.leeway_secs)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The raw `SSE_JWT_*` values (the leeway already parsed as a number).
#[derive(Debug, Default, Clone, Copy)]
pub struct JwtVars<'a> {
    pub algorithm: Option<&'a str>,
    pub secret: Option<&'a str>,
    pub public_key_file: Option<&'a str>,
    pub leeway_secs: u64,
    pub issuer: Option<&'a str>,
    pub audience: Option<&'a str>,
}

/// A configuration problem: the variable to fix and why. The secret is never echoed.
pub type VarError = (&'static str, String);

impl JwtConfig {
    /// Validates the `SSE_JWT_*` variables together, reading and checking the key file now so
    /// that a bad key stops the process at start rather than failing every request.
    pub fn from_vars(v: JwtVars<'_>) -> Result<JwtConfig, VarError> {
        let secret = v.secret.filter(|s| !s.is_empty());
        let key_file = v.public_key_file.filter(|s| !s.is_empty());
        let algorithm = match v.algorithm {
            Some(a) => JwtAlgorithm::parse(a).ok_or_else(|| {
                (
                    "SSE_JWT_ALGORITHM",
                    format!("expected HS256, RS256 or ES256, got {a:?}"),
                )
            })?,
            None if key_file.is_some() => {
                return Err((
                    "SSE_JWT_ALGORITHM",
                    "not set; with SSE_JWT_PUBLIC_KEY_FILE choose RS256 or ES256".to_string(),
                ))
            }
            None => JwtAlgorithm::Hs256,
        };
        let key = match (algorithm, secret, key_file) {
            (_, Some(_), Some(_)) => {
                return Err((
                    "SSE_JWT_SECRET",
                    "set either SSE_JWT_SECRET (HS256) or SSE_JWT_PUBLIC_KEY_FILE (RS256, ES256), not both"
                        .to_string(),
                ))
            }
            (JwtAlgorithm::Hs256, Some(s), None) => {
                if s.len() < MIN_SECRET_LEN {
                    return Err((
                        "SSE_JWT_SECRET",
                        format!(
                            "is {} bytes; HS256 needs at least {MIN_SECRET_LEN} random bytes",
                            s.len()
                        ),
                    ));
                }
                JwtKey::Secret(s.as_bytes().to_vec())
            }
            (JwtAlgorithm::Hs256, None, _) => {
                return Err((
                    "SSE_JWT_SECRET",
                    "not set; SSE_AUTH=jwt with HS256 needs SSE_JWT_SECRET (or set SSE_JWT_ALGORITHM=RS256|ES256 and SSE_JWT_PUBLIC_KEY_FILE)"
                        .to_string(),
                ))
            }
            (alg, Some(_), None) => {
                return Err((
                    "SSE_JWT_SECRET",
                    format!(
                        "{} verifies with a public key: set SSE_JWT_PUBLIC_KEY_FILE instead",
                        alg.name()
                    ),
                ))
            }
            (alg, None, None) => {
                return Err((
                    "SSE_JWT_PUBLIC_KEY_FILE",
                    format!("not set; {} needs a PEM public key file", alg.name()),
                ))
            }
            (alg, None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    (
                        "SSE_JWT_PUBLIC_KEY_FILE",
                        format!("cannot read {path:?}: {e}"),
                    )
                })?;
                let key = JwtKey::PublicKeyPem {
                    path: PathBuf::from(path),
                    pem,
                };
                decoding_key(alg, &key).map_err(|why| {
                    (
                        "SSE_JWT_PUBLIC_KEY_FILE",
                        format!("{path:?} is not a PEM public key for {}: {why}", alg.name()),
                    )
                })?;
                key
            }
        };
        let text = |var: &'static str, s: Option<&str>| -> Result<Option<String>, VarError> {
            match s {
                None => Ok(None),
                Some("") => Err((var, "is empty; unset it to accept any".to_string())),
                Some(s) => Ok(Some(s.to_string())),
            }
        };
        Ok(JwtConfig {
            algorithm,
            key,
            leeway_secs: v.leeway_secs,
            issuer: text("SSE_JWT_ISSUER", v.issuer)?,
            audience: text("SSE_JWT_AUDIENCE", v.audience)?,
        })
    }
}

fn decoding_key(alg: JwtAlgorithm, key: &JwtKey) -> Result<DecodingKey, String> {
    match (alg, key) {
        (JwtAlgorithm::Hs256, JwtKey::Secret(s)) => Ok(DecodingKey::from_secret(s)),
        (JwtAlgorithm::Rs256, JwtKey::PublicKeyPem { pem, .. }) => {
            DecodingKey::from_rsa_pem(pem).map_err(|e| e.to_string())
        }
        (JwtAlgorithm::Es256, JwtKey::PublicKeyPem { pem, .. }) => {
            DecodingKey::from_ec_pem(pem).map_err(|e| e.to_string())
        }
        (alg, _) => Err(format!("{} needs another kind of key", alg.name())),
    }
}

/// Verifies tokens against one configured algorithm and key.
pub struct JwtVerifier {
    algorithm: JwtAlgorithm,
    key: DecodingKey,
    validation: Validation,
    leeway_secs: u64,
}

/// A NumericDate (RFC 7519): seconds since the epoch, an integer or (rarely) a fraction.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumericDate {
    Int(u64),
    Float(f64),
}

impl NumericDate {
    fn secs(&self) -> Option<u64> {
        match *self {
            NumericDate::Int(n) => Some(n),
            NumericDate::Float(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                Some(f as u64)
            }
            NumericDate::Float(_) => None,
        }
    }
}

/// One grant or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Grants {
    One(Grant),
    Many(Vec<Grant>),
}

impl Grants {
    fn into_vec(g: Option<Grants>) -> Vec<Grant> {
        match g {
            None => Vec::new(),
            Some(Grants::One(g)) => vec![g],
            Some(Grants::Many(v)) => v,
        }
    }
}

/// The claims as they arrive. Typed strictly: a `nbf` or `iat` that is not a number fails
/// here instead of being ignored.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    exp: NumericDate,
    nbf: Option<NumericDate>,
    iat: Option<NumericDate>,
    #[serde(default)]
    channels: Option<serde_json::Value>,
    #[serde(default)]
    publish: Option<serde_json::Value>,
}

fn grants(claim: &str, v: Option<serde_json::Value>) -> Result<Vec<Grant>, AuthError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    serde_json::from_value::<Grants>(v.clone())
        .map(|g| Grants::into_vec(Some(g)))
        .map_err(|_| {
            // The untagged enum's own error says nothing useful: find the offending grant.
            let first_bad = match &v {
                serde_json::Value::Array(items) => items.iter().find_map(|i| match i {
                    serde_json::Value::String(s) => Grant::parse(s).err().map(|e| e.to_string()),
                    _ => Some("grants must be strings".to_string()),
                }),
                serde_json::Value::String(s) => Grant::parse(s).err().map(|e| e.to_string()),
                _ => None,
            };
            AuthError::invalid_token(format!(
                "claim {claim:?}: {}",
                first_bad.unwrap_or_else(|| "expected a list of channel grants".to_string())
            ))
        })
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl JwtVerifier {
    pub fn new(cfg: &JwtConfig) -> Result<JwtVerifier, String> {
        let key = decoding_key(cfg.algorithm, &cfg.key)?;
        let mut validation = Validation::new(cfg.algorithm.jsonwebtoken());
        validation.leeway = cfg.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if let Some(aud) = &cfg.audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Ok(JwtVerifier {
            algorithm: cfg.algorithm,
            key,
            validation,
            leeway_secs: cfg.leeway_secs,
        })
    }

    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// Verifies the signature and the claims; the error says why, without the token.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, now_secs())
    }

    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::invalid_token(format!(
                "token is longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation)
            .map_err(|e| self.explain(e.kind()))?;
        let raw = data.claims;
        let exp = raw
            .exp
            .secs()
            .ok_or_else(|| AuthError::invalid_token("claim \"exp\" is not a valid time"))?;
        if exp <= now {
            return Err(AuthError::invalid_token("token expired"));
        }
        let date = |name: &str, d: &Option<NumericDate>| -> Result<Option<u64>, AuthError> {
            d.as_ref()
                .map(|d| {
                    d.secs().ok_or_else(|| {
                        AuthError::invalid_token(format!("claim {name:?} is not a valid time"))
                    })
                })
                .transpose()
        };
        if date("nbf", &raw.nbf)?.is_some_and(|nbf| nbf > now.saturating_add(self.leeway_secs)) {
            return Err(AuthError::invalid_token("token not valid yet (nbf)"));
        }
        if date("iat", &raw.iat)?.is_some_and(|iat| iat > now.saturating_add(self.leeway_secs)) {
            return Err(AuthError::invalid_token("token issued in the future (iat)"));
        }
        let sub = match raw.sub {
            Some(s) if !s.is_empty() && s.len() <= 256 => s,
            Some(_) => {
                return Err(AuthError::invalid_token(
                    "claim \"sub\" must be 1 to 256 bytes",
                ))
            }
            None => return Err(AuthError::invalid_token("token has no \"sub\" claim")),
        };
        Ok(Claims {
            sub,
            exp,
            channels: grants("channels", raw.channels)?,
            publish: grants("publish", raw.publish)?,
        })
    }

    fn explain(&self, kind: &ErrorKind) -> AuthError {
        let why = match kind {
            ErrorKind::ExpiredSignature => "token expired".to_string(),
            ErrorKind::ImmatureSignature => "token not valid yet (nbf)".to_string(),
            ErrorKind::InvalidSignature => "signature does not verify".to_string(),
            ErrorKind::InvalidAlgorithm => format!(
                "token algorithm is not the configured {}",
                self.algorithm.name()
            ),
            ErrorKind::InvalidIssuer => "wrong issuer (iss)".to_string(),
            ErrorKind::InvalidAudience => "wrong audience (aud)".to_string(),
            ErrorKind::MissingRequiredClaim(c) => format!("token has no {c:?} claim"),
            ErrorKind::InvalidClaimFormat(c) => format!("claim {c:?} is malformed"),
            ErrorKind::Json(e) => {
                // "missing field `exp`" helps; "invalid type: string \"…\"" would echo a
                // claim's value, so other messages are not passed on.
                let msg = e.to_string();
                match msg.strip_prefix("missing field ") {
                    Some(rest) => format!(
                        "malformed token: missing claim {}",
                        rest.split(" at line").next().unwrap_or(rest)
                    ),
                    None => "malformed token: a claim has the wrong type".to_string(),
                }
            }
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                "malformed token".to_string()
            }
            _ => "invalid token".to_string(),
        };
        AuthError::invalid_token(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn hs_config() -> JwtConfig {
        JwtConfig::from_vars(JwtVars {
            secret: Some(SECRET),
            leeway_secs: 30,
            ..JwtVars::default()
        })
        .unwrap()
    }

    fn sign(claims: &serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn reason(r: Result<Claims, AuthError>) -> String {
        r.unwrap_err().description
    }

    #[test]
    fn verifies_hs256_and_reads_grants() {
        let v = JwtVerifier::new(&hs_config()).unwrap();
        let now = now_secs();
        let t = sign(
            &json!({"sub": "u1", "exp": now + 60, "iat": now, "nbf": now,
                    "channels": ["logs:w1", "logs:*:f1"], "publish": "events:w1"}),
            SECRET,
        );
        let c = v.verify(&t).unwrap();
        assert_eq!(c.sub, "u1");
        assert_eq!(c.exp, now + 60);
        assert_eq!(c.channels.len(), 2);
        assert_eq!(c.publish[0].as_str(), "events:w1");
    }

    #[test]
    fn refuses_bad_tokens_with_reasons() {
        let v = JwtVerifier::new(&hs_config()).unwrap();
        let now = now_secs();
        let ok = json!({"sub": "u1", "exp": now + 60});
        assert!(reason(v.verify(&sign(&ok, &"x".repeat(32)))).contains("signature"));
        let expired = json!({"sub": "u1", "exp": now - 5});
        assert_eq!(reason(v.verify(&sign(&expired, SECRET))), "token expired");
        let early = json!({"sub": "u1", "exp": now + 600, "nbf": now + 120});
        assert!(reason(v.verify(&sign(&early, SECRET))).contains("nbf"));
        let within_leeway =
            json!({"sub": "u1", "exp": now + 600, "nbf": now + 10, "iat": now + 10});
        assert!(v.verify(&sign(&within_leeway, SECRET)).is_ok());
        let future_iat = json!({"sub": "u1", "exp": now + 600, "iat": now + 120});
        assert!(reason(v.verify(&sign(&future_iat, SECRET))).contains("iat"));
        let string_nbf = json!({"sub": "u1", "exp": now + 600, "nbf": "99999999999"});
        assert!(v.verify(&sign(&string_nbf, SECRET)).is_err());
        let string_exp = json!({"sub": "u1", "exp": "secret-looking-value"});
        let why = reason(v.verify(&sign(&string_exp, SECRET)));
        assert!(!why.contains("secret-looking-value"), "{why}");
        let no_exp = json!({"sub": "u1"});
        assert!(reason(v.verify(&sign(&no_exp, SECRET))).contains("exp"));
        let no_sub = json!({"exp": now + 60});
        assert!(reason(v.verify(&sign(&no_sub, SECRET))).contains("sub"));
        let bad_grant = json!({"sub": "u", "exp": now + 60, "channels": ["ok", "bad grant"]});
        assert!(reason(v.verify(&sign(&bad_grant, SECRET))).contains("\"channels\""));
        // A token with an audience is only accepted where an audience is configured.
        let aud = json!({"sub": "u1", "exp": now + 60, "aud": "x"});
        assert!(reason(v.verify(&sign(&aud, SECRET))).contains("audience"));
        for junk in ["", "a.b", "a.b.c", "....", &"x".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(v.verify(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn alg_none_and_algorithm_confusion_are_refused() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let now = now_secs();
        let payload = b64(&json!({"sub": "u1", "exp": now + 60, "channels": ["*"]}).to_string());
        let v = JwtVerifier::new(&hs_config()).unwrap();
        for alg in ["none", "None", "NONE"] {
            let header = b64(&json!({"alg": alg, "typ": "JWT"}).to_string());
            assert!(v.verify(&format!("{header}.{payload}.")).is_err());
        }
        // RS256 configured; an HS256 token whose HMAC key is the public key's PEM text.
        let rsa = JwtConfig::from_vars(JwtVars {
            algorithm: Some("RS256"),
            public_key_file: Some(&fixture("test-only-rsa-public.pem")),
            ..JwtVars::default()
        })
        .unwrap();
        let pem = std::fs::read_to_string(fixture("test-only-rsa-public.pem")).unwrap();
        let v = JwtVerifier::new(&rsa).unwrap();
        let forged = sign(&json!({"sub": "u1", "exp": now + 60}), &pem);
        assert_eq!(
            reason(v.verify(&forged)),
            "token algorithm is not the configured RS256"
        );
        let key = std::fs::read(fixture("test-only-rsa-private.pem")).unwrap();
        let good = encode(
            &Header::new(Algorithm::RS256),
            &json!({"sub": "u1", "exp": now + 60}),
            &EncodingKey::from_rsa_pem(&key).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&good).unwrap().sub, "u1");
    }

    #[test]
    fn issuer_and_audience() {
        let cfg = JwtConfig::from_vars(JwtVars {
            secret: Some(SECRET),
            issuer: Some("https://idp.example"),
            audience: Some("mongo-sse"),
            ..JwtVars::default()
        })
        .unwrap();
        let v = JwtVerifier::new(&cfg).unwrap();
        let now = now_secs();
        let t = |c: serde_json::Value| sign(&c, SECRET);
        assert!(v
            .verify(&t(json!({"sub": "u", "exp": now + 60, "iss": "https://idp.example", "aud": ["x", "mongo-sse"]})))
            .is_ok());
        assert!(reason(v.verify(&t(
            json!({"sub": "u", "exp": now + 60, "iss": "https://evil", "aud": "mongo-sse"})
        )))
        .contains("issuer"));
        assert!(reason(v.verify(&t(
            json!({"sub": "u", "exp": now + 60, "iss": "https://idp.example", "aud": "other"})
        )))
        .contains("audience"));
        assert!(
            reason(v.verify(&t(json!({"sub": "u", "exp": now + 60, "aud": "mongo-sse"}))))
                .contains("iss")
        );
    }

    #[test]
    fn configuration_errors_name_the_variable() {
        let err = |v: JwtVars| JwtConfig::from_vars(v).unwrap_err();
        assert_eq!(err(JwtVars::default()).0, "SSE_JWT_SECRET");
        assert_eq!(
            err(JwtVars {
                secret: Some("short"),
                ..JwtVars::default()
            }),
            (
                "SSE_JWT_SECRET",
                "is 5 bytes; HS256 needs at least 32 random bytes".to_string()
            )
        );
        assert_eq!(
            err(JwtVars {
                algorithm: Some("none"),
                ..JwtVars::default()
            })
            .0,
            "SSE_JWT_ALGORITHM"
        );
        assert_eq!(
            err(JwtVars {
                public_key_file: Some("/nonexistent"),
                ..JwtVars::default()
            })
            .0,
            "SSE_JWT_ALGORITHM"
        );
        assert_eq!(
            err(JwtVars {
                algorithm: Some("RS256"),
                secret: Some(SECRET),
                ..JwtVars::default()
            })
            .0,
            "SSE_JWT_SECRET"
        );
        let (var, why) = err(JwtVars {
            algorithm: Some("ES256"),
            public_key_file: Some(&fixture("test-only-rsa-public.pem")),
            ..JwtVars::default()
        });
        assert_eq!(var, "SSE_JWT_PUBLIC_KEY_FILE");
        assert!(why.contains("ES256"), "{why}");
        assert_eq!(
            err(JwtVars {
                algorithm: Some("RS256"),
                public_key_file: Some("/nonexistent/key.pem"),
                ..JwtVars::default()
            })
            .0,
            "SSE_JWT_PUBLIC_KEY_FILE"
        );
        assert_eq!(
            err(JwtVars {
                secret: Some(SECRET),
                audience: Some(""),
                ..JwtVars::default()
            })
            .0,
            "SSE_JWT_AUDIENCE"
        );
        assert!(!format!("{:?}", hs_config()).contains(SECRET));
        let es = JwtConfig::from_vars(JwtVars {
            algorithm: Some("ES256"),
            public_key_file: Some(&fixture("test-only-ec-public.pem")),
            ..JwtVars::default()
        })
        .unwrap();
        assert!(JwtVerifier::new(&es).is_ok());
    }
}
