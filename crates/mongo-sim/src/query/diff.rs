//! The `updateDescription` of change-stream update events.
//!
//! MongoDB 7.0 derives it from the v2 oplog delta between the old and new document, and drivers
//! and applications read it field by field, so the shape matters:
//! * unchanged fields are absent;
//! * a changed field inside a subdocument that exists on both sides is reported by its dotted
//!   path (`"a.b"`), not by re-sending the whole subdocument;
//! * arrays are compared element by element: changed or appended elements are reported as
//!   `"array.3"`, (subdocument elements recursively, `"array.1.x"`), and a new array shorter than
//!   the old one adds `{field, newSize}` to `truncatedArrays`;
//! * a field whose type changes (or any other changed value) is reported with its whole new value.
//!
//! Values are compared exactly (an `Int32` 1 replaced by a `Double` 1.0 is a change), since the
//! server compares the stored bytes. MongoDB may choose to replace a heavily changed subdocument
//! or array wholesale when that is smaller; mongo-sim always reports the fine-grained diff.

use bson::{doc, Bson, Document};

/// What an update changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateDescription {
    pub updated_fields: Document,
    pub removed_fields: Vec<String>,
    pub truncated_arrays: Vec<(String, i32)>,
}

impl UpdateDescription {
    /// The change event's `updateDescription` document.
    pub fn to_document(&self) -> Document {
        doc! {
            "updatedFields": self.updated_fields.clone(),
            "removedFields": self.removed_fields.clone(),
            "truncatedArrays": self
                .truncated_arrays
                .iter()
                .map(|(f, n)| Bson::Document(doc! {"field": f.clone(), "newSize": *n}))
                .collect::<Vec<_>>(),
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.updated_fields.is_empty()
            && self.removed_fields.is_empty()
            && self.truncated_arrays.is_empty()
    }
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}.{k}")
    }
}

fn diff_docs(old: &Document, new: &Document, prefix: &str, out: &mut UpdateDescription) {
    for (k, _) in old {
        if !new.contains_key(k) {
            out.removed_fields.push(join(prefix, k));
        }
    }
    for (k, nv) in new {
        let path = join(prefix, k);
        match old.get(k) {
            None => {
                out.updated_fields.insert(path, nv.clone());
            }
            Some(ov) => diff_values(ov, nv, &path, out),
        }
    }
}

fn diff_values(ov: &Bson, nv: &Bson, path: &str, out: &mut UpdateDescription) {
    if ov == nv {
        return;
    }
    match (ov, nv) {
        (Bson::Document(o), Bson::Document(n)) => diff_docs(o, n, path, out),
        (Bson::Array(o), Bson::Array(n)) => diff_arrays(o, n, path, out),
        _ => {
            out.updated_fields.insert(path.to_string(), nv.clone());
        }
    }
}

fn diff_arrays(old: &[Bson], new: &[Bson], path: &str, out: &mut UpdateDescription) {
    if new.len() < old.len() {
        out.truncated_arrays.push((
            path.to_string(),
            i32::try_from(new.len()).unwrap_or(i32::MAX),
        ));
    }
    for (i, nv) in new.iter().enumerate() {
        let p = format!("{path}.{i}");
        match old.get(i) {
            None => {
                out.updated_fields.insert(p, nv.clone());
            }
            Some(ov) => diff_values(ov, nv, &p, out),
        }
    }
}

/// The difference between the old and new versions of a document.
pub fn update_description(old: &Document, new: &Document) -> UpdateDescription {
    let mut out = UpdateDescription::default();
    diff_docs(old, new, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_array() {
        let old = doc! {"_id": 1, "a": 1, "array": ["foo", {"a": "bar"}, 1, 2, 3]};
        let new = doc! {"_id": 1, "a": 1, "array": ["foo", {"a": "bar"}]};
        let d = update_description(&old, &new);
        assert_eq!(d.updated_fields, doc! {});
        assert!(d.removed_fields.is_empty());
        assert_eq!(d.truncated_arrays, vec![("array".to_string(), 2)]);
        assert_eq!(
            d.to_document(),
            doc! {
                "updatedFields": {},
                "removedFields": [],
                "truncatedArrays": [{"field": "array", "newSize": 2}],
            }
        );
    }

    #[test]
    fn fields_set_and_removed() {
        let old = doc! {"_id": 1, "a": 1, "b": 2, "s": {"x": 1, "y": 2}};
        let new = doc! {"_id": 1, "a": 5, "s": {"x": 1, "z": 3}, "c": "new"};
        let d = update_description(&old, &new);
        assert_eq!(d.updated_fields, doc! {"a": 5, "s.z": 3, "c": "new"});
        assert_eq!(d.removed_fields, vec!["b".to_string(), "s.y".to_string()]);
        assert!(d.truncated_arrays.is_empty());
        assert!(update_description(&old, &old).is_empty());
    }

    #[test]
    fn arrays_changed_and_appended() {
        let old = doc! {"arr": [1, {"k": 1}, 3]};
        let new = doc! {"arr": [1, {"k": 2}, 4, 5]};
        let d = update_description(&old, &new);
        assert_eq!(
            d.updated_fields,
            doc! {"arr.1.k": 2, "arr.2": 4, "arr.3": 5}
        );
        assert!(d.truncated_arrays.is_empty());
    }

    #[test]
    fn type_changes_replace_whole_value() {
        let old = doc! {"a": {"x": 1}, "b": [1], "n": 1};
        let new = doc! {"a": [1], "b": {"x": 1}, "n": 1.0};
        let d = update_description(&old, &new);
        assert_eq!(d.updated_fields, doc! {"a": [1], "b": {"x": 1}, "n": 1.0});
    }
}
