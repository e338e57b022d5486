//! `mongo-sse migrate`: the versioned files of `migrations/` (compiled into the binary, so it
//! works from any directory), applied in order, once, and recorded in `_migrations`.
//!
//! **File format.** `NNNN_name.json` (four digits, then `[a-z0-9_]`), a JSON object:
//! ```json
//! {"description": "…",
//!  "create_indexes": ["$source_indexes",
//!    {"collection": "{{SSE_EVENTS_COLLECTION}}", "key": {"published_at": 1},
//!     "name": "published_at_ttl", "expireAfterSeconds": "{{SSE_EVENTS_TTL_SECS}}"}]}
//! ```
//! Each entry of `create_indexes` is an index (`collection`, `key`, optional `name`,
//! `unique`, `expireAfterSeconds`) or `"$source_indexes"`, which stands for
//! [`crate::indexes::source_indexes`] of the configuration. A string that is exactly
//! `{{VAR}}` is replaced by that setting (`SSE_EVENTS_COLLECTION`, `SSE_EVENTS_TTL_SECS`).
//! An index whose key pattern already exists (under any name) is left alone.
//!
//! **Checksums and configuration.** The checksum is the SHA-256 of the file's bytes, so it says
//! whether the *file* changed, never whether the configuration did: an applied file whose
//! bytes changed is refused, naming it. What a file expanded to with the configuration of the
//! run that applied it is recorded beside it (`indexes`). When the configuration later needs
//! more (a source added to `SSE_SOURCES`), `migrate` creates the missing indexes of applied
//! files and adds them to the record; it never drops one. A TTL that differs from an existing
//! TTL index is reported, not changed (that takes a `collMod`).
//!
//! **Concurrency.** A run claims a file by inserting its record (`state: "applying"`) before
//! applying it; a unique index on `version` lets only one run's insert succeed. The other run
//! waits for the record to say `applied`, then goes on to the next file.

use std::fmt;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::Database;
use rust_embed::RustEmbed;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::indexes::{index_name, source_indexes, RequiredIndex};
use crate::source::server_code;

/// Where applied migrations are recorded.
pub const COLLECTION: &str = "_migrations";
/// The unique index that makes concurrent runs safe.
pub const VERSION_INDEX: &str = "version_unique";
/// How long a run waits for another run that claimed a file.
const WAIT_FOR_OTHER_RUN: Duration = Duration::from_secs(60);
const DUPLICATE_KEY: i32 = 11000;
const NAMESPACE_NOT_FOUND: i32 = 26;

#[derive(RustEmbed)]
#[folder = "migrations/"]
#[include = "*.json"]
struct Embedded;

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationFile {
    /// `0001_source_indexes.json`.
    pub file: String,
    pub version: i64,
    /// `source_indexes`.
    pub name: String,
    /// `sha256:<hex>` of the bytes.
    pub checksum: String,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrateError {
    /// A file that cannot be used (name, JSON, an unknown template variable...).
    File { file: String, why: String },
    /// An applied file whose bytes changed since.
    Changed {
        file: String,
        recorded: String,
        current: String,
    },
    /// Another run claimed the file and did not finish within the wait.
    Busy { file: String, since: String },
    /// MongoDB failed.
    Mongo(String),
}

impl fmt::Display for MigrateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrateError::File { file, why } => write!(f, "migrations/{file}: {why}"),
            MigrateError::Changed { file, recorded, current } => write!(
                f,
                "migrations/{file} was changed after it was applied (recorded {recorded}, now {current}); \
                 applied migrations must not be edited: restore it and add a new file"
            ),
            MigrateError::Busy { file, since } => write!(
                f,
                "migrations/{file} is being applied by another run since {since} and did not finish within \
                 {WAIT_FOR_OTHER_RUN:?}; if that run crashed, delete its record from {COLLECTION} (version) and run again"
            ),
            MigrateError::Mongo(why) => write!(f, "MongoDB: {why}"),
        }
    }
}

impl std::error::Error for MigrateError {}

impl From<mongodb::error::Error> for MigrateError {
    fn from(e: mongodb::error::Error) -> Self {
        MigrateError::Mongo(e.to_string())
    }
}

fn file_err(file: &str, why: impl Into<String>) -> MigrateError {
    MigrateError::File {
        file: file.to_owned(),
        why: why.into(),
    }
}

/// The files compiled into the binary, in version order.
pub fn embedded() -> Result<Vec<MigrationFile>, MigrateError> {
    let mut files = Vec::new();
    for name in Embedded::iter() {
        if let Some(f) = Embedded::get(&name) {
            files.push((name.to_string(), f.data.into_owned()));
        }
    }
    from_files(files)
}

/// Validates names (`NNNN_name.json`, versions unique) and sorts by version.
pub fn from_files(files: Vec<(String, Vec<u8>)>) -> Result<Vec<MigrationFile>, MigrateError> {
    let mut out: Vec<MigrationFile> = Vec::new();
    for (file, body) in files {
        let stem = file
            .strip_suffix(".json")
            .ok_or_else(|| file_err(&file, "migration files end in .json"))?;
        let (num, name) = stem
            .split_once('_')
            .ok_or_else(|| file_err(&file, "expected NNNN_name.json"))?;
        if num.len() != 4 || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(file_err(
                &file,
                "expected a four-digit version: NNNN_name.json",
            ));
        }
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        {
            return Err(file_err(&file, "the name after the version is [a-z0-9_]+"));
        }
        let version: i64 = num.parse().map_err(|_| file_err(&file, "bad version"))?;
        if let Some(other) = out.iter().find(|m| m.version == version) {
            return Err(file_err(
                &file,
                format!("version {num} is also used by {}", other.file),
            ));
        }
        let checksum = format!("sha256:{:x}", Sha256::digest(&body));
        out.push(MigrationFile {
            name: name.to_owned(),
            file,
            version,
            checksum,
            body,
        });
    }
    out.sort_by_key(|m| m.version);
    Ok(out)
}

impl MigrationFile {
    /// The indexes this file stands for with `config`.
    pub fn expand(&self, config: &Config) -> Result<Vec<RequiredIndex>, MigrateError> {
        let v: Value = serde_json::from_slice(&self.body)
            .map_err(|e| file_err(&self.file, format!("not valid JSON: {e}")))?;
        let Value::Object(top) = v else {
            return Err(file_err(&self.file, "expected a JSON object"));
        };
        for k in top.keys() {
            if !matches!(k.as_str(), "description" | "create_indexes") {
                return Err(file_err(&self.file, format!("unknown member {k:?}")));
            }
        }
        let Some(Value::Array(steps)) = top.get("create_indexes") else {
            return Err(file_err(&self.file, "\"create_indexes\" must be an array"));
        };
        let mut out = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            match step {
                Value::String(s) if s == "$source_indexes" => out.extend(source_indexes(config)),
                Value::Object(_) => {
                    let step = substitute(step, config).map_err(|why| {
                        file_err(&self.file, format!("create_indexes[{i}]: {why}"))
                    })?;
                    out.push(explicit(&step).map_err(|why| {
                        file_err(&self.file, format!("create_indexes[{i}]: {why}"))
                    })?);
                }
                _ => {
                    return Err(file_err(
                        &self.file,
                        format!(
                            "create_indexes[{i}]: expected an index object or \"$source_indexes\""
                        ),
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// Replaces every string that is exactly `{{VAR}}`.
fn substitute(v: &Value, config: &Config) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) if s.contains("{{") => {
            let var = s
                .strip_prefix("{{")
                .and_then(|r| r.strip_suffix("}}"))
                .ok_or_else(|| {
                    format!("{s:?}: a template must be the whole string, {{{{VAR}}}}")
                })?;
            match var {
                "SSE_EVENTS_COLLECTION" => Value::String(config.events_collection.clone()),
                "SSE_EVENTS_TTL_SECS" => Value::from(config.events_ttl_secs),
                "MONGODB_DB" => Value::String(config.mongodb_db.clone()),
                other => return Err(format!("unknown template variable {other:?}")),
            }
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|e| substitute(e, config))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, e)| Ok((k.clone(), substitute(e, config)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn explicit(v: &Value) -> Result<RequiredIndex, String> {
    let Value::Object(o) = v else {
        return Err("expected an object".into());
    };
    for k in o.keys() {
        if !matches!(
            k.as_str(),
            "collection" | "key" | "name" | "unique" | "expireAfterSeconds"
        ) {
            return Err(format!("unknown member {k:?}"));
        }
    }
    let collection = o
        .get("collection")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .ok_or("\"collection\" must be a non-empty string")?;
    let Some(Value::Object(k)) = o.get("key") else {
        return Err("\"key\" must be an object like {\"field\": 1}".into());
    };
    if k.is_empty() {
        return Err("\"key\" is empty".into());
    }
    let mut key = Document::new();
    for (f, dir) in k {
        match dir.as_i64() {
            Some(d @ (1 | -1)) => key.insert(f.clone(), d as i32),
            _ => return Err(format!("key {f:?}: direction must be 1 or -1")),
        };
    }
    let name = match o.get("name") {
        None => index_name(&key),
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        Some(_) => return Err("\"name\" must be a non-empty string".into()),
    };
    let unique = match o.get("unique") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("\"unique\" must be true or false".into()),
    };
    let expire_after_secs = match o.get("expireAfterSeconds") {
        None => None,
        Some(n) => Some(
            n.as_u64()
                .ok_or("\"expireAfterSeconds\" must be a non-negative integer")?,
        ),
    };
    Ok(RequiredIndex {
        collection: collection.to_owned(),
        key,
        name,
        expire_after_secs,
        unique,
        purpose: "declared in a migration file",
    })
}

/// A record of `_migrations`, as far as a run needs it.
#[derive(Debug, Clone)]
struct Record {
    checksum: String,
    applied: bool,
    started_at: String,
    indexes: Vec<(String, String)>,
}

fn record(d: &Document) -> Option<(i64, Record)> {
    let version = match d.get("version")? {
        Bson::Int32(n) => i64::from(*n),
        Bson::Int64(n) => *n,
        _ => return None,
    };
    let indexes = d
        .get_array("indexes")
        .map(|a| {
            a.iter()
                .filter_map(|i| {
                    let i = i.as_document()?;
                    Some((
                        i.get_str("collection").ok()?.to_owned(),
                        i.get_str("name").ok()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Some((
        version,
        Record {
            checksum: d.get_str("checksum").unwrap_or_default().to_owned(),
            applied: d.get_str("state").ok() == Some("applied"),
            started_at: d
                .get_datetime("started_at")
                .map(|t| t.to_string())
                .unwrap_or_default(),
            indexes,
        },
    ))
}

async fn records(db: &Database) -> Result<Vec<(i64, Record)>, MigrateError> {
    let docs: Vec<Document> = db
        .collection::<Document>(COLLECTION)
        .find(doc! {})
        .await?
        .try_collect()
        .await?;
    Ok(docs.iter().filter_map(record).collect())
}

async fn record_of(db: &Database, version: i64) -> Result<Option<Record>, MigrateError> {
    let d = db
        .collection::<Document>(COLLECTION)
        .find_one(doc! {"version": version})
        .await?;
    Ok(d.as_ref().and_then(record).map(|(_, r)| r))
}

/// Files not applied yet (or still being applied), for `serve`'s warning. Fails like `run`
/// on a changed file.
pub async fn pending(db: &Database, files: &[MigrationFile]) -> Result<Vec<String>, MigrateError> {
    let recs = records(db).await?;
    let mut out = Vec::new();
    for f in files {
        match recs.iter().find(|(v, _)| *v == f.version) {
            Some((_, r)) if r.checksum != f.checksum => {
                return Err(MigrateError::Changed {
                    file: f.file.clone(),
                    recorded: r.checksum.clone(),
                    current: f.checksum.clone(),
                })
            }
            Some((_, r)) if r.applied => {}
            _ => out.push(f.file.clone()),
        }
    }
    Ok(out)
}

fn describe(i: &RequiredIndex) -> String {
    let mut s = format!("{}.{} {}", i.collection, i.name, i.key);
    if let Some(t) = i.expire_after_secs {
        s.push_str(&format!(" expireAfterSeconds={t}"));
    }
    if i.unique {
        s.push_str(" unique");
    }
    s
}

async fn list_indexes(db: &Database, coll: &str) -> Result<Vec<Document>, MigrateError> {
    match db.run_command(doc! {"listIndexes": coll}).await {
        Ok(reply) => Ok(reply
            .get_document("cursor")
            .and_then(|c| c.get_array("firstBatch"))
            .map(|a| a.iter().filter_map(|d| d.as_document().cloned()).collect())
            .unwrap_or_default()),
        Err(e) if server_code(&e) == Some(NAMESPACE_NOT_FOUND) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Creates `idx` unless an index with its key pattern exists; says what happened.
async fn ensure_index(db: &Database, idx: &RequiredIndex) -> Result<String, MigrateError> {
    let listed = list_indexes(db, &idx.collection).await?;
    if let Some(l) = listed.iter().find(|l| idx.same_key(l)) {
        let name = l.get_str("name").unwrap_or("?");
        let have = RequiredIndex::listed_ttl(l);
        return Ok(match idx.expire_after_secs {
            Some(want) if have != Some(want as i64) => format!(
                "exists as {name} with expireAfterSeconds {have:?}, not {want}: not changed \
                 (use collMod to change a TTL)"
            ),
            _ => format!("exists as {name}"),
        });
    }
    db.run_command(doc! {
        "createIndexes": idx.collection.clone(),
        "indexes": [idx.to_command_spec()],
    })
    .await?;
    Ok("created".to_owned())
}

fn index_docs(indexes: &[RequiredIndex]) -> Vec<Bson> {
    indexes
        .iter()
        .map(|i| {
            let mut d = i.to_command_spec();
            d.insert("collection", i.collection.clone());
            Bson::Document(d)
        })
        .collect()
}

/// Applies what is pending, in order, and returns what it did, one line per step (printed by
/// `mongo-sse migrate`). With `dry_run`, reads only and says what it would do.
pub async fn run(
    db: &Database,
    config: &Config,
    files: &[MigrationFile],
    dry_run: bool,
) -> Result<Vec<String>, MigrateError> {
    // Every file must expand before anything is written.
    let plans: Vec<Vec<RequiredIndex>> = files
        .iter()
        .map(|f| f.expand(config))
        .collect::<Result<_, _>>()?;
    let recs = records(db).await?;
    for f in files {
        if let Some((_, r)) = recs.iter().find(|(v, _)| *v == f.version) {
            if r.checksum != f.checksum {
                return Err(MigrateError::Changed {
                    file: f.file.clone(),
                    recorded: r.checksum.clone(),
                    current: f.checksum.clone(),
                });
            }
        }
    }
    let mut lines = Vec::new();
    for (v, _) in &recs {
        if !files.iter().any(|f| f.version == *v) {
            lines.push(format!(
                "warning: {COLLECTION} records version {v:04}, which no file has"
            ));
        }
    }
    let coll = db.collection::<Document>(COLLECTION);
    if !dry_run {
        ensure_index(
            db,
            &RequiredIndex {
                collection: COLLECTION.to_owned(),
                key: doc! {"version": 1_i32},
                name: VERSION_INDEX.to_owned(),
                expire_after_secs: None,
                unique: true,
                purpose: "one record per migration",
            },
        )
        .await?;
    }
    for (f, plan) in files.iter().zip(&plans) {
        let existing = recs
            .iter()
            .find(|(v, _)| *v == f.version)
            .map(|(_, r)| r.clone());
        match existing {
            Some(r) if r.applied => {
                // Applied; the configuration may need more of it now (a new source).
                let missing: Vec<&RequiredIndex> = plan
                    .iter()
                    .filter(|i| {
                        !r.indexes
                            .iter()
                            .any(|(c, n)| *c == i.collection && *n == i.name)
                    })
                    .collect();
                if missing.is_empty() {
                    lines.push(format!("{}: already applied", f.file));
                    continue;
                }
                for i in &missing {
                    if dry_run {
                        lines.push(format!(
                            "{}: applied; would create {} (the configuration needs it now)",
                            f.file,
                            describe(i)
                        ));
                    } else {
                        let what = ensure_index(db, i).await?;
                        lines.push(format!("{}: applied; {}: {what}", f.file, describe(i)));
                    }
                }
                if !dry_run {
                    let added: Vec<RequiredIndex> = missing.into_iter().cloned().collect();
                    coll.update_one(
                        doc! {"version": f.version},
                        doc! {"$push": {"indexes": {"$each": index_docs(&added)}}},
                    )
                    .await?;
                }
                continue;
            }
            _ if dry_run => {
                lines.push(format!("{}: would apply", f.file));
                for i in plan {
                    lines.push(format!("  would ensure {}", describe(i)));
                }
                continue;
            }
            Some(_) => {
                // Claimed by another run (its record says "applying").
                wait_for_other_run(db, f).await?;
                lines.push(format!("{}: applied by another run", f.file));
                continue;
            }
            None => {}
        }
        let claim = doc! {
            "version": f.version,
            "name": f.name.clone(),
            "file": f.file.clone(),
            "checksum": f.checksum.clone(),
            "state": "applying",
            "started_at": bson::DateTime::now(),
            "by": format!("{}:{}", hostname(), std::process::id()),
        };
        match coll.insert_one(claim).await {
            Ok(_) => {}
            Err(e) if server_code(&e) == Some(DUPLICATE_KEY) => {
                wait_for_other_run(db, f).await?;
                lines.push(format!("{}: applied by another run", f.file));
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        let mut applied = Vec::new();
        for i in plan {
            match ensure_index(db, i).await {
                Ok(what) => applied.push(format!("  {}: {what}", describe(i))),
                Err(e) => {
                    // Release the claim so that the next run tries again.
                    let _ = coll.delete_one(doc! {"version": f.version}).await;
                    return Err(e);
                }
            }
        }
        coll.update_one(
            doc! {"version": f.version},
            doc! {"$set": {
                "state": "applied",
                "applied_at": bson::DateTime::now(),
                "indexes": index_docs(plan),
            }},
        )
        .await?;
        lines.push(format!("{}: applied", f.file));
        lines.extend(applied);
    }
    Ok(lines)
}

async fn wait_for_other_run(db: &Database, f: &MigrationFile) -> Result<(), MigrateError> {
    let deadline = Instant::now() + WAIT_FOR_OTHER_RUN;
    loop {
        match record_of(db, f.version).await? {
            Some(r) if r.checksum != f.checksum => {
                return Err(MigrateError::Changed {
                    file: f.file.clone(),
                    recorded: r.checksum,
                    current: f.checksum.clone(),
                })
            }
            Some(r) if r.applied => return Ok(()),
            Some(r) if Instant::now() >= deadline => {
                return Err(MigrateError::Busy {
                    file: f.file.clone(),
                    since: r.started_at,
                })
            }
            // Gone: the other run failed and released it. Not retried here: say so.
            None => {
                return Err(MigrateError::Mongo(format!(
                    "another run gave up applying migrations/{}; run migrate again",
                    f.file
                )))
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_iter([
            ("SSE_AUTH".to_owned(), "none".to_owned()),
            ("SSE_EVENTS_TTL_SECS".to_owned(), "120".to_owned()),
        ])
        .unwrap()
    }

    #[test]
    fn embedded_files_expand_to_the_required_indexes() {
        let files = embedded().unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(names, ["0001_source_indexes.json", "0002_events_ttl.json"]);
        let c = config();
        let key = |i: &RequiredIndex| {
            (
                i.collection.clone(),
                i.key.clone(),
                i.name.clone(),
                i.expire_after_secs,
                i.unique,
            )
        };
        let all: Vec<_> = files
            .iter()
            .flat_map(|f| f.expand(&c).unwrap())
            .map(|i| key(&i))
            .collect();
        // What `check` asks for is exactly what the migrations create.
        let required: Vec<_> = crate::indexes::required_indexes(&c)
            .iter()
            .map(key)
            .collect();
        assert_eq!(all, required);
        assert!(files[0].checksum.starts_with("sha256:"));
    }

    #[test]
    fn bad_files_are_named() {
        let bad = |name: &str, body: &str| {
            let e = from_files(vec![(name.to_owned(), body.as_bytes().to_vec())])
                .and_then(|f| f[0].expand(&config()).map(|_| ()))
                .unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
            e.to_string()
        };
        bad("1_x.json", "{}");
        bad("0001_X.json", "{}");
        bad("0001_x.yaml", "{}");
        bad("0001_x.json", "nope");
        bad("0001_x.json", r#"{"create_indexes": 1}"#);
        assert!(bad(
            "0001_x.json",
            r#"{"create_indexes": [{"collection": "{{NOPE}}", "key": {"a": 1}}]}"#
        )
        .contains("NOPE"));
        bad(
            "0001_x.json",
            r#"{"create_indexes": [{"collection": "c", "key": {"a": 2}}]}"#,
        );
        bad(
            "0001_x.json",
            r#"{"create_indexes": [{"collection": "c", "key": {"a": 1}, "sparse": true}]}"#,
        );
        let dup = from_files(vec![
            ("0001_a.json".into(), b"{}".to_vec()),
            ("0001_b.json".into(), b"{}".to_vec()),
        ])
        .unwrap_err();
        assert!(dup.to_string().contains("0001_a.json"), "{dup}");
    }
}
