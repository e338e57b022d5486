//! Databases, collections and their indexes, in memory. Documents keep insertion order (the
//! `$natural` order of a real collection without deletes); `_id` and unique indexes are hash
//! maps from a canonical key encoding so duplicate checks stay O(1) on large collections.

use crate::error::{codes, CommandError, CommandResult};
use crate::query::path;
use bson::{doc, oid::ObjectId, spec::BinarySubtype, Binary, Bson, Document};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone)]
pub struct IndexSpec {
    pub name: String,
    pub key: Document,
    pub unique: bool,
    /// Everything else the client sent (`expireAfterSeconds`, `sparse`, ...), echoed back by
    /// `listIndexes` as MongoDB does. TTL expiry itself is not performed.
    pub options: Document,
}

impl IndexSpec {
    pub fn to_document(&self) -> Document {
        let mut d = doc! {"v": 2, "key": self.key.clone(), "name": self.name.clone()};
        if self.unique {
            d.insert("unique", true);
        }
        for (k, v) in &self.options {
            d.insert(k.clone(), v.clone());
        }
        d
    }

    /// MongoDB's E11000 for `doc` colliding on this index, with `keyPattern`/`keyValue`.
    fn duplicate_error(&self, doc: &Document) -> CommandError {
        let value: Document = self
            .key
            .keys()
            .map(|f| (f.clone(), path::get(doc, f).cloned().unwrap_or(Bson::Null)))
            .collect();
        duplicate_key(&self.name, &self.key, &value)
    }

    fn key_of(&self, doc: &Document) -> Vec<u8> {
        let values: Vec<Bson> = self
            .key
            .keys()
            .map(|field| path::get(doc, field).cloned().unwrap_or(Bson::Null))
            .collect();
        canonical_key(&values)
    }
}

/// A byte key under which equal BSON values collide: numbers are folded to one type so that
/// `1`, `1i64` and `1.0` are the same `_id`, as MongoDB's index keys treat them.
pub fn canonical_key(values: &[Bson]) -> Vec<u8> {
    fn fold(v: &Bson) -> Bson {
        match v {
            Bson::Int32(i) => Bson::Double(*i as f64),
            Bson::Int64(i) if (*i as f64) as i64 == *i => Bson::Double(*i as f64),
            Bson::Document(d) => {
                Bson::Document(d.iter().map(|(k, v)| (k.clone(), fold(v))).collect())
            }
            Bson::Array(a) => Bson::Array(a.iter().map(fold).collect()),
            other => other.clone(),
        }
    }
    let d: Document = values
        .iter()
        .enumerate()
        .map(|(i, v)| (i.to_string(), fold(v)))
        .collect();
    let mut out = Vec::new();
    let _ = d.to_writer(&mut out);
    out
}

#[derive(Debug)]
pub struct Collection {
    pub uuid: Binary,
    /// Record id -> document; record ids grow with insertion, so iteration is natural order.
    docs: BTreeMap<u64, Document>,
    next_record: u64,
    ids: HashMap<Vec<u8>, u64>,
    pub indexes: Vec<IndexSpec>,
    unique: HashMap<String, HashMap<Vec<u8>, u64>>,
    /// The options `create` was given (`capped`, `validator`, ...), as `listCollections`
    /// reports them; recorded, not enforced. Empty for implicitly created collections.
    pub options: Document,
}

impl Collection {
    pub fn new() -> Self {
        Collection {
            uuid: Binary {
                subtype: BinarySubtype::Uuid,
                bytes: ObjectId::new()
                    .bytes()
                    .iter()
                    .chain(&[0u8; 4])
                    .copied()
                    .collect(),
            },
            docs: BTreeMap::new(),
            next_record: 1,
            ids: HashMap::new(),
            indexes: vec![IndexSpec {
                name: "_id_".into(),
                key: doc! {"_id": 1},
                unique: true,
                options: Document::new(),
            }],
            unique: HashMap::new(),
            options: Document::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// `changeStreamPreAndPostImages: {enabled: true}`: writes record pre- and post-images.
    pub fn pre_images_enabled(&self) -> bool {
        self.options
            .get_document("changeStreamPreAndPostImages")
            .ok()
            .and_then(|d| d.get_bool("enabled").ok())
            .unwrap_or(false)
    }

    /// MongoDB's document validation: the collection's `validator` (a query filter) under its
    /// `validationLevel` (`strict`: every write; `moderate`: updates only of documents that
    /// already passed; `off`) and `validationAction` (`error`: 121 DocumentValidationFailure;
    /// `warn`: logged and written).
    pub fn validate(&self, new: &Document, old: Option<&Document>) -> CommandResult<()> {
        let Ok(validator) = self.options.get_document("validator") else {
            return Ok(());
        };
        let level = self.options.get_str("validationLevel").unwrap_or("strict");
        if level == "off" {
            return Ok(());
        }
        let filter = crate::query::filter::Filter::parse(validator)?;
        if level == "moderate" && old.is_some_and(|o| !filter.matches(o)) {
            return Ok(());
        }
        if filter.matches(new) {
            return Ok(());
        }
        let id = new.get("_id").cloned().unwrap_or(Bson::Null);
        if self.options.get_str("validationAction") == Ok("warn") {
            tracing::warn!(%id, "Document would fail validation");
            return Ok(());
        }
        Err(CommandError::new(
            codes::DOCUMENT_VALIDATION_FAILURE,
            "Document failed validation",
        )
        .with_extra(doc! {"errInfo": {
            "failingDocumentId": id,
            "details": {"operatorName": "$and", "specifiedAs": validator.clone()},
        }}))
    }

    /// `collMod`'s `index: {keyPattern | name, expireAfterSeconds}`: returns the old and new
    /// values and the index's name.
    pub fn modify_index_ttl(&mut self, spec: &Document) -> CommandResult<(Bson, Bson, String)> {
        let found = match (spec.get("name"), spec.get("keyPattern")) {
            (Some(Bson::String(n)), None) => self.indexes.iter_mut().find(|i| &i.name == n),
            (None, Some(Bson::Document(k))) => self.indexes.iter_mut().find(|i| &i.key == k),
            _ => {
                return Err(CommandError::new(
                    codes::INVALID_OPTIONS,
                    "must specify either index name or key pattern",
                ))
            }
        };
        let Some(index) = found else {
            return Err(CommandError::new(
                codes::INDEX_NOT_FOUND,
                format!("cannot find index {spec}"),
            ));
        };
        for k in spec.keys() {
            if !matches!(k.as_str(), "name" | "keyPattern" | "expireAfterSeconds") {
                return Err(CommandError::new(
                    codes::INVALID_OPTIONS,
                    format!("the collMod index option '{k}' is not supported by mongo-sim"),
                ));
            }
        }
        let new = match spec.get("expireAfterSeconds") {
            Some(v @ (Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_))) => {
                let n = v.as_f64().or(v.as_i64().map(|i| i as f64)).or(v.as_i32().map(f64::from));
                match n {
                    Some(n) if (0.0..=i32::MAX as f64).contains(&n) => Bson::Int64(n as i64),
                    _ => {
                        return Err(CommandError::new(
                            codes::INVALID_OPTIONS,
                            "TTL index 'expireAfterSeconds' option must be within an acceptable range, try a non-negative value less than 2147483647",
                        ))
                    }
                }
            }
            None => {
                return Err(CommandError::new(
                    codes::INVALID_OPTIONS,
                    "no expireAfterSeconds or hidden field",
                ))
            }
            Some(other) => {
                return Err(CommandError::type_mismatch(format!(
                    "BSON field 'collMod.index.expireAfterSeconds' is the wrong type '{:?}', expected types '[long, int, decimal, double]'",
                    other.element_type()
                )))
            }
        };
        let Some(old) = index.options.get("expireAfterSeconds").cloned() else {
            return Err(CommandError::new(
                codes::INVALID_OPTIONS,
                "no expireAfterSeconds field to update",
            ));
        };
        index.options.insert("expireAfterSeconds", new.clone());
        Ok((old, new, index.name.clone()))
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &Document)> {
        self.docs.iter().map(|(r, d)| (*r, d))
    }

    pub fn get(&self, record: u64) -> Option<&Document> {
        self.docs.get(&record)
    }

    pub fn find_by_id(&self, id: &Bson) -> Option<(u64, &Document)> {
        let rec = *self.ids.get(&canonical_key(std::slice::from_ref(id)))?;
        self.docs.get(&rec).map(|d| (rec, d))
    }

    /// Inserts a document that already has an `_id`, enforcing every unique index.
    pub fn insert(&mut self, doc: Document) -> CommandResult<u64> {
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        let id_key = canonical_key(std::slice::from_ref(&id));
        if self.ids.contains_key(&id_key) {
            return Err(duplicate_key("_id_", &doc! {"_id": 1}, &doc! {"_id": id}));
        }
        let unique_keys = self.check_unique(&doc, None)?;
        let rec = self.next_record;
        self.next_record += 1;
        self.ids.insert(id_key, rec);
        for (name, key) in unique_keys {
            self.unique.entry(name).or_default().insert(key, rec);
        }
        self.docs.insert(rec, doc);
        Ok(rec)
    }

    /// Replaces the document at `record` (whose `_id` the caller kept unchanged).
    pub fn replace(&mut self, record: u64, doc: Document) -> CommandResult<()> {
        let new_keys = self.check_unique(&doc, Some(record))?;
        if let Some(old) = self.docs.get(&record) {
            let old_keys: Vec<(String, Vec<u8>)> = self
                .unique_specs()
                .map(|s| (s.name.clone(), s.key_of(old)))
                .collect();
            for (name, key) in old_keys {
                if let Some(m) = self.unique.get_mut(&name) {
                    m.remove(&key);
                }
            }
        }
        for (name, key) in new_keys {
            self.unique.entry(name).or_default().insert(key, record);
        }
        self.docs.insert(record, doc);
        Ok(())
    }

    pub fn remove(&mut self, record: u64) -> Option<Document> {
        let doc = self.docs.remove(&record)?;
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        self.ids.remove(&canonical_key(std::slice::from_ref(&id)));
        let keys: Vec<(String, Vec<u8>)> = self
            .unique_specs()
            .map(|s| (s.name.clone(), s.key_of(&doc)))
            .collect();
        for (name, key) in keys {
            if let Some(m) = self.unique.get_mut(&name) {
                m.remove(&key);
            }
        }
        Some(doc)
    }

    fn unique_specs(&self) -> impl Iterator<Item = &IndexSpec> {
        self.indexes.iter().filter(|s| s.unique && s.name != "_id_")
    }

    fn check_unique(
        &self,
        doc: &Document,
        except: Option<u64>,
    ) -> CommandResult<Vec<(String, Vec<u8>)>> {
        let mut keys = Vec::new();
        for spec in self.unique_specs() {
            let key = spec.key_of(doc);
            if let Some(&rec) = self.unique.get(&spec.name).and_then(|m| m.get(&key)) {
                if Some(rec) != except {
                    return Err(spec.duplicate_error(doc));
                }
            }
            keys.push((spec.name.clone(), key));
        }
        Ok(keys)
    }

    /// Adds an index; a unique index over existing duplicates fails like MongoDB (11000).
    pub fn create_index(&mut self, spec: IndexSpec) -> CommandResult<bool> {
        if let Some(existing) = self.indexes.iter().find(|s| s.name == spec.name) {
            if existing.key != spec.key {
                return Err(CommandError::new(
                    codes::INDEX_KEY_SPECS_CONFLICT,
                    format!(
                        "An existing index has the same name as the requested index: {}",
                        spec.name
                    ),
                ));
            }
            if existing.unique != spec.unique {
                return Err(CommandError::new(
                    codes::INDEX_OPTIONS_CONFLICT,
                    format!("An existing index has the same name as the requested index with different options: {}", spec.name),
                ));
            }
            return Ok(false);
        }
        // The same key under another name is a conflict, never a no-op: MongoDB identifies an
        // index by its name as well as its key (IndexOptionsConflict either way).
        if let Some(existing) = self.indexes.iter().find(|s| s.key == spec.key) {
            return Err(CommandError::new(
                codes::INDEX_OPTIONS_CONFLICT,
                format!(
                    "Index already exists with a different name: {}",
                    existing.name
                ),
            ));
        }
        if spec.unique {
            let mut m = HashMap::new();
            for (rec, doc) in &self.docs {
                let key = spec.key_of(doc);
                if m.insert(key, *rec).is_some() {
                    return Err(spec.duplicate_error(doc));
                }
            }
            self.unique.insert(spec.name.clone(), m);
        }
        self.indexes.push(spec);
        Ok(true)
    }

    pub fn drop_index(&mut self, name: &str) -> CommandResult<()> {
        if name == "_id_" {
            return Err(CommandError::new(
                codes::INVALID_OPTIONS,
                "cannot drop _id index",
            ));
        }
        let pos = self
            .indexes
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| {
                CommandError::new(
                    codes::INDEX_NOT_FOUND,
                    format!("index not found with name [{name}]"),
                )
            })?;
        self.indexes.remove(pos);
        self.unique.remove(name);
        Ok(())
    }
}

impl Default for Collection {
    fn default() -> Self {
        Self::new()
    }
}

pub fn duplicate_key(index: &str, key_pattern: &Document, key_value: &Document) -> CommandError {
    CommandError::new(
        codes::DUPLICATE_KEY,
        format!("E11000 duplicate key error collection index: {index} dup key: {key_value}"),
    )
    .with_extra(doc! {"keyPattern": key_pattern.clone(), "keyValue": key_value.clone()})
}

#[derive(Debug, Default)]
pub struct Database {
    pub collections: BTreeMap<String, Collection>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ids_collide_across_types() {
        let mut c = Collection::new();
        c.insert(doc! {"_id": 1}).unwrap();
        let e = c.insert(doc! {"_id": 1.0}).unwrap_err();
        assert_eq!(e.code, codes::DUPLICATE_KEY);
        assert!(c.find_by_id(&Bson::Int64(1)).is_some());
    }

    #[test]
    fn unique_indexes_are_enforced_and_maintained() {
        let mut c = Collection::new();
        c.insert(doc! {"_id": 1, "email": "a"}).unwrap();
        c.insert(doc! {"_id": 2, "email": "a"}).unwrap();
        let spec = IndexSpec {
            name: "email_1".into(),
            key: doc! {"email": 1},
            unique: true,
            options: Document::new(),
        };
        assert_eq!(
            c.create_index(spec.clone()).unwrap_err().code,
            codes::DUPLICATE_KEY
        );
        let rec = c.find_by_id(&Bson::Int32(2)).unwrap().0;
        c.remove(rec);
        assert!(c.create_index(spec).unwrap());
        assert_eq!(
            c.insert(doc! {"_id": 3, "email": "a"}).unwrap_err().code,
            codes::DUPLICATE_KEY
        );
        let rec1 = c.find_by_id(&Bson::Int32(1)).unwrap().0;
        c.replace(rec1, doc! {"_id": 1, "email": "b"}).unwrap();
        c.insert(doc! {"_id": 3, "email": "a"}).unwrap();
    }
}
