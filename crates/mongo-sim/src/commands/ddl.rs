//! Namespaces and indexes: create, drop, dropDatabase, renameCollection, listCollections,
//! createIndexes, listIndexes, dropIndexes. Drops and renames are logged, so change streams
//! report them (and invalidate) as MongoDB's do.

use super::{batch_size, bool_arg, collection_arg, cursor_reply, doc_arg, int_arg};
use crate::error::{codes, CommandError, CommandResult};
use crate::oplog::{EntryExtra, OpKind};
use crate::query::filter::Filter;
use crate::state::{validate_namespace, Shared};
use crate::store::{Collection, IndexSpec};
use bson::{doc, Bson, Document};

/// The fields of `create` that are collection options (the rest are generic command fields
/// such as `lsid` or `writeConcern`).
const CREATE_OPTIONS: &[&str] = &[
    "capped",
    "size",
    "max",
    "storageEngine",
    "validator",
    "validationLevel",
    "validationAction",
    "indexOptionDefaults",
    "viewOn",
    "pipeline",
    "collation",
    "timeseries",
    "expireAfterSeconds",
    "clusteredIndex",
    "changeStreamPreAndPostImages",
    "encryptedFields",
];

/// Since MongoDB 7.0, creating a collection that exists with identical options succeeds and
/// does nothing; only different options are a `NamespaceExists` error.
pub fn create(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let coll = collection_arg(body, "create")?;
    validate_namespace(db, coll)?;
    let options: Document = body
        .iter()
        .filter(|(k, _)| CREATE_OPTIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    validate_collection_options(&options, "create")?;
    if matches!(options.get("capped"), Some(Bson::Boolean(true))) {
        capped_limits_of(&options)?;
    }
    for unsupported in ["timeseries", "viewOn", "clusteredIndex", "encryptedFields"] {
        if options.contains_key(unsupported)
            && !matches!(options.get(unsupported), Some(Bson::Boolean(false)))
        {
            // Accepting these and behaving like a plain collection would be silently wrong.
            return Err(CommandError::new(
                codes::INVALID_OPTIONS,
                format!("the '{unsupported}' option of create is not supported by mongo-sim"),
            ));
        }
    }
    let mut st = shared.lock();
    if let Some(existing) = st.collection(db, coll) {
        if existing.options == options {
            return Ok(Document::new());
        }
        return Err(CommandError::new(
            codes::NAMESPACE_EXISTS,
            format!("Collection {db}.{coll} already exists with different options."),
        ));
    }
    st.create_collection(db, coll, options)?;
    Ok(Document::new())
}

/// Checks the options `create` and `collMod` share, with MongoDB's errors.
fn validate_collection_options(options: &Document, command: &str) -> CommandResult<()> {
    if let Some(v) = options.get("changeStreamPreAndPostImages") {
        let Bson::Document(d) = v else {
            return Err(CommandError::type_mismatch(format!(
                "BSON field '{command}.changeStreamPreAndPostImages' is the wrong type '{:?}', expected type 'object'",
                v.element_type()
            )));
        };
        for k in d.keys() {
            if k != "enabled" {
                return Err(CommandError::new(
                    codes::LOCATION_40415,
                    format!("BSON field '{command}.changeStreamPreAndPostImages.{k}' is an unknown field."),
                ));
            }
        }
        match d.get("enabled") {
            Some(Bson::Boolean(_)) => {}
            None => {
                return Err(CommandError::new(
                    40414,
                    format!("BSON field '{command}.changeStreamPreAndPostImages.enabled' is missing but a required field"),
                ))
            }
            Some(other) => {
                return Err(CommandError::type_mismatch(format!(
                    "BSON field '{command}.changeStreamPreAndPostImages.enabled' is the wrong type '{:?}', expected type 'bool'",
                    other.element_type()
                )))
            }
        }
    }
    if let Some(v) = options.get("validator") {
        let Bson::Document(d) = v else {
            return Err(CommandError::type_mismatch(format!(
                "BSON field '{command}.validator' is the wrong type '{:?}', expected type 'object'",
                v.element_type()
            )));
        };
        Filter::parse(d).map_err(|e| {
            CommandError::new(
                e.code,
                format!(
                    "Parsing of collection validator failed :: caused by :: {}",
                    e.message
                ),
            )
        })?;
    }
    for (field, allowed) in [
        ("validationLevel", &["off", "strict", "moderate"][..]),
        ("validationAction", &["error", "warn"][..]),
    ] {
        match options.get(field) {
            None => {}
            Some(Bson::String(s)) if allowed.contains(&s.as_str()) => {}
            Some(Bson::String(s)) => {
                return Err(CommandError::bad_value(format!(
                    "Enumeration value '{s}' for field '{command}.{field}' is not a valid value."
                )))
            }
            Some(other) => {
                return Err(CommandError::type_mismatch(format!(
                "BSON field '{command}.{field}' is the wrong type '{:?}', expected type 'string'",
                other.element_type()
            )))
            }
        }
    }
    Ok(())
}

/// Fields every command may carry besides its own (sessions, concerns, API version, ...).
fn is_generic_field(k: &str) -> bool {
    k.starts_with('$')
        || matches!(
            k,
            "lsid"
                | "txnNumber"
                | "writeConcern"
                | "readConcern"
                | "comment"
                | "maxTimeMS"
                | "apiVersion"
                | "apiStrict"
                | "apiDeprecationErrors"
                | "autocommit"
                | "startTransaction"
        )
}

/// `collMod`: collection options (`validator`, `validationLevel`, `validationAction`,
/// `changeStreamPreAndPostImages`) and a TTL index's `expireAfterSeconds`. Logged, so streams
/// with `showExpandedEvents` report a `modify` event.
pub fn coll_mod(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let coll = collection_arg(body, "collMod")?;
    let mut changes = Document::new();
    let mut index = None;
    for (k, v) in body.iter().skip(1) {
        match k.as_str() {
            "validator"
            | "validationLevel"
            | "validationAction"
            | "changeStreamPreAndPostImages" => {
                changes.insert(k.clone(), v.clone());
            }
            "index" => match v {
                Bson::Document(d) => index = Some(d.clone()),
                other => {
                    return Err(CommandError::type_mismatch(format!(
                    "BSON field 'collMod.index' is the wrong type '{:?}', expected type 'object'",
                    other.element_type()
                )))
                }
            },
            k if is_generic_field(k) => {}
            "expireAfterSeconds" | "timeseries" | "viewOn" | "pipeline" | "clusteredIndex"
            | "cappedSize" | "cappedMax" | "recordPreImages" | "prepareUnique" | "dryRun" => {
                return Err(CommandError::new(
                    codes::INVALID_OPTIONS,
                    format!("the collMod option '{k}' is not supported by mongo-sim"),
                ))
            }
            other => {
                return Err(CommandError::new(
                    codes::LOCATION_40415,
                    format!("BSON field 'collMod.{other}' is an unknown field."),
                ))
            }
        }
    }
    validate_collection_options(&changes, "collMod")?;
    let mut st = shared.lock();
    let Some(c) = st.collection_mut(db, coll) else {
        return Err(CommandError::new(
            codes::NAMESPACE_NOT_FOUND,
            format!("ns does not exist: {db}.{coll}"),
        ));
    };
    let mut before = c.options.clone();
    before.insert("uuid", c.uuid.clone());
    let mut reply = Document::new();
    let mut description = changes.clone();
    let mut state_before = doc! {"collectionOptions": before};
    if let Some(spec) = index {
        let (old, new, named) = c.modify_index_ttl(&spec)?;
        reply.insert("expireAfterSeconds_old", old.clone());
        reply.insert("expireAfterSeconds_new", new.clone());
        description.insert(
            "index",
            doc! {"name": named.clone(), "expireAfterSeconds": new},
        );
        state_before.insert("indexOptions", doc! {"expireAfterSeconds": old});
    }
    for (k, v) in changes {
        c.options.insert(k, v);
    }
    st.log(
        db,
        coll,
        OpKind::Modify {
            description,
            before: state_before,
        },
    );
    Ok(reply)
}

pub fn drop(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let coll = collection_arg(body, "drop")?;
    let mut st = shared.lock();
    let removed = st.dbs.get_mut(db).and_then(|d| d.collections.remove(coll));
    match removed {
        Some(c) => {
            let extra = EntryExtra {
                uuid: Some(c.uuid.clone()),
                ..EntryExtra::default()
            };
            st.log_with(db, coll, OpKind::Drop, extra);
            Ok(doc! {"nIndexesWas": c.indexes.len() as i32, "ns": format!("{db}.{coll}")})
        }
        // Since MongoDB 7.0 dropping a collection that does not exist succeeds.
        None => Ok(Document::new()),
    }
}

pub fn drop_database(shared: &Shared, db: &str) -> CommandResult<Document> {
    let mut st = shared.lock();
    if let Some(database) = st.dbs.remove(db) {
        // MongoDB drops each collection (one oplog entry each), then the database.
        for (name, c) in &database.collections {
            let extra = EntryExtra {
                uuid: Some(c.uuid.clone()),
                ..EntryExtra::default()
            };
            st.log_with(db, name, OpKind::Drop, extra);
        }
        st.log(db, "", OpKind::DropDatabase);
    }
    Ok(doc! {"dropped": db})
}

fn split_ns(ns: &str) -> CommandResult<(&str, &str)> {
    ns.split_once('.')
        .filter(|(d, c)| !d.is_empty() && !c.is_empty())
        .ok_or_else(|| {
            CommandError::invalid_namespace(format!("Invalid namespace specified '{ns}'"))
        })
}

pub fn rename(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    if db != "admin" {
        return Err(CommandError::new(
            codes::UNAUTHORIZED,
            "renameCollection may only be run against the admin database.",
        ));
    }
    let from = body
        .get_str("renameCollection")
        .map_err(|_| CommandError::type_mismatch("renameCollection must be a string namespace"))?;
    let to = body
        .get_str("to")
        .map_err(|_| CommandError::type_mismatch("'to' must be a string namespace"))?;
    let (from_db, from_coll) = split_ns(from)?;
    let (to_db, to_coll) = split_ns(to)?;
    validate_namespace(to_db, to_coll)?;
    let drop_target = bool_arg(body, "dropTarget");
    let mut st = shared.lock();
    if st.collection(from_db, from_coll).is_none() {
        return Err(CommandError::new(
            codes::NAMESPACE_NOT_FOUND,
            format!("Source collection {from} does not exist"),
        ));
    }
    if from == to {
        return Err(CommandError::new(
            codes::ILLEGAL_OPERATION,
            "Can't rename a collection to itself",
        ));
    }
    if st.collection(to_db, to_coll).is_some() {
        if !drop_target {
            return Err(CommandError::new(
                codes::NAMESPACE_EXISTS,
                "target namespace exists",
            ));
        }
        if let Some(d) = st.dbs.get_mut(to_db) {
            d.collections.remove(to_coll);
        }
        st.log(to_db, to_coll, OpKind::Drop);
    }
    let moved = st
        .dbs
        .get_mut(from_db)
        .and_then(|d| d.collections.remove(from_coll))
        .unwrap_or_default();
    st.dbs
        .entry(to_db.to_string())
        .or_default()
        .collections
        .insert(to_coll.to_string(), moved);
    let uuid = st.collection(to_db, to_coll).map(|c| c.uuid.clone());
    st.log_with(
        from_db,
        from_coll,
        OpKind::Rename {
            to_db: to_db.into(),
            to_coll: to_coll.into(),
        },
        EntryExtra {
            uuid,
            ..EntryExtra::default()
        },
    );
    Ok(Document::new())
}

fn collection_info(name: &str, c: &Collection) -> Document {
    doc! {
        "name": name,
        "type": "collection",
        "options": c.options.clone(),
        "info": {"readOnly": false, "uuid": c.uuid.clone()},
        "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
    }
}

pub fn list_collections(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let filter = match doc_arg(body, "filter")? {
        Some(f) => Some(Filter::parse(&f)?),
        None => None,
    };
    let name_only = bool_arg(body, "nameOnly");
    let st = shared.lock();
    let mut out = Vec::new();
    if let Some(d) = st.dbs.get(db) {
        for (name, c) in &d.collections {
            let info = collection_info(name, c);
            if filter.as_ref().map(|f| f.matches(&info)).unwrap_or(true) {
                out.push(if name_only {
                    doc! {"name": name, "type": "collection"}
                } else {
                    info
                });
            }
        }
    }
    Ok(cursor_reply(
        0,
        &format!("{db}.$cmd.listCollections"),
        out,
        true,
        None,
    ))
}

/// MongoDB's default index name: `field_1_other_-1`.
fn default_index_name(key: &Document) -> String {
    key.iter()
        .map(|(k, v)| {
            let v = match v {
                Bson::Int32(i) => i.to_string(),
                Bson::Int64(i) => i.to_string(),
                Bson::Double(d) => format!("{}", *d as i64),
                Bson::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{k}_{v}")
        })
        .collect::<Vec<_>>()
        .join("_")
}

pub fn create_indexes(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let coll = collection_arg(body, "createIndexes")?;
    let specs = body
        .get_array("indexes")
        .map_err(|_| CommandError::type_mismatch("'indexes' must be an array"))?;
    if specs.is_empty() {
        return Err(CommandError::bad_value(
            "Must specify at least one index to create",
        ));
    }
    let mut parsed = Vec::new();
    for s in specs {
        let Bson::Document(s) = s else {
            return Err(CommandError::type_mismatch(
                "each index specification must be an object",
            ));
        };
        let key = doc_arg(s, "key")?.ok_or_else(|| {
            CommandError::failed_to_parse("index specification must have a 'key'")
        })?;
        if key.is_empty() {
            return Err(CommandError::new(67, "Index keys cannot be empty."));
        }
        let name = match s.get("name") {
            Some(Bson::String(n)) if !n.is_empty() => n.clone(),
            None => default_index_name(&key),
            _ => {
                return Err(CommandError::type_mismatch(
                    "index name must be a non-empty string",
                ))
            }
        };
        let mut options = Document::new();
        for (k, v) in s {
            if !matches!(k.as_str(), "key" | "name" | "unique" | "v") {
                options.insert(k.clone(), v.clone());
            }
        }
        parsed.push(IndexSpec {
            name,
            key,
            unique: bool_arg(s, "unique"),
            options,
        });
    }
    let mut st = shared.lock();
    let created_automatically = st.collection(db, coll).is_none();
    let c = st.collection_or_create(db, coll)?;
    let before = c.indexes.len() as i32;
    let mut built = Vec::new();
    for spec in parsed {
        let listed = spec.to_document();
        if c.create_index(spec)? {
            built.push(listed);
        }
    }
    let after = c.indexes.len() as i32;
    if !built.is_empty() {
        st.log(db, coll, OpKind::CreateIndexes { indexes: built });
    }
    let mut reply = doc! {"numIndexesBefore": before, "numIndexesAfter": after, "createdCollectionAutomatically": created_automatically};
    if before == after {
        reply.insert("note", "all indexes already exist");
    }
    Ok(reply)
}

pub fn list_indexes(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let coll = collection_arg(body, "listIndexes")?;
    let _ = batch_size(
        body.get_document("cursor")
            .ok()
            .and_then(|c| int_arg(c, "batchSize").ok().flatten()),
    )?;
    let st = shared.lock();
    let c = st.collection(db, coll).ok_or_else(|| {
        CommandError::new(
            codes::NAMESPACE_NOT_FOUND,
            format!("ns does not exist: {db}.{coll}"),
        )
    })?;
    let out: Vec<Document> = c.indexes.iter().map(|i| i.to_document()).collect();
    Ok(cursor_reply(0, &format!("{db}.{coll}"), out, true, None))
}

pub fn drop_indexes(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let name = if body.contains_key("dropIndexes") {
        "dropIndexes"
    } else {
        "deleteIndexes"
    };
    let coll = collection_arg(body, name)?;
    let mut st = shared.lock();
    let c = st.collection_mut(db, coll).ok_or_else(|| {
        CommandError::new(
            codes::NAMESPACE_NOT_FOUND,
            format!("ns not found {db}.{coll}"),
        )
    })?;
    let was = c.indexes.len() as i32;
    let names: Vec<String> = match body.get("index") {
        Some(Bson::String(s)) if s == "*" => c
            .indexes
            .iter()
            .filter(|i| i.name != "_id_")
            .map(|i| i.name.clone())
            .collect(),
        Some(Bson::String(s)) => vec![s.clone()],
        Some(Bson::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Bson::Document(key)) => {
            let found = c
                .indexes
                .iter()
                .find(|i| &i.key == key)
                .map(|i| i.name.clone());
            vec![found.ok_or_else(|| {
                CommandError::new(
                    codes::INDEX_NOT_FOUND,
                    format!("can't find index with key: {key}"),
                )
            })?]
        }
        _ => {
            return Err(CommandError::type_mismatch(
                "'index' must be a name, a key pattern, an array of names, or '*'",
            ))
        }
    };
    let mut dropped = Vec::new();
    for n in names {
        if let Some(spec) = c.indexes.iter().find(|i| i.name == n) {
            dropped.push(spec.to_document());
        }
        c.drop_index(&n)?;
    }
    if !dropped.is_empty() {
        st.log(db, coll, OpKind::DropIndexes { indexes: dropped });
    }
    Ok(doc! {"nIndexesWas": was})
}

/// `(size in bytes, max documents)` of a capped collection's `create` options, checked with
/// MongoDB's errors: `size` is required (72), both must be numbers (14) and not negative (2);
/// `max` 0 (or absent) means no document limit.
pub fn capped_limits_of(options: &Document) -> CommandResult<(u64, Option<u64>)> {
    let number = |k: &str| -> CommandResult<Option<f64>> {
        match options.get(k) {
            None => Ok(None),
            Some(Bson::Int32(n)) => Ok(Some(*n as f64)),
            Some(Bson::Int64(n)) => Ok(Some(*n as f64)),
            Some(Bson::Double(n)) => Ok(Some(*n)),
            Some(other) => Err(CommandError::type_mismatch(format!(
                "BSON field 'create.{k}' is the wrong type '{:?}', expected types '[long, int, decimal, double]'",
                other.element_type()
            ))),
        }
    };
    let size = number("size")?.ok_or_else(|| {
        CommandError::new(
            codes::INVALID_OPTIONS,
            "the 'size' field is required when 'capped' is true",
        )
    })?;
    if size.is_nan() || size < 0.0 {
        return Err(CommandError::bad_value(format!(
            "BSON field 'create.size' value must be >= 0, actual value '{size}'"
        )));
    }
    let max = number("max")?;
    if max.is_some_and(|m| m.is_nan() || m < 0.0) {
        return Err(CommandError::bad_value(
            "max in a capped collection has to be >= 0",
        ));
    }
    Ok((size as u64, max.map(|m| m as u64).filter(|m| *m > 0)))
}
