//! Sort specifications (`find`'s `sort`, the `$sort` stage).
//!
//! MongoDB sorts by the BSON order of `compare.rs`, with two rules for awkward values: a
//! missing field sorts as null, and an array sorts by its smallest element when ascending and
//! its largest when descending (an empty array sorts before null). Arrays met in the middle of
//! a path contribute the values of all their subdocuments. The sort is stable, so documents
//! with equal keys keep their input order (insertion order for a collection scan).

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::compare::{as_num, compare, Num};
use super::path::array_index;
use crate::error::{CommandError, CommandResult};

static NULL: Bson = Bson::Null;

#[derive(Debug, Clone, PartialEq)]
struct SortKey {
    path: String,
    segs: Vec<String>,
    ascending: bool,
}

/// A parsed sort specification.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SortSpec {
    keys: Vec<SortKey>,
    /// `{$natural: -1}`: reverse insertion order (the input order of [`SortSpec::sort`]).
    natural_reverse: bool,
}

/// One value a document contributes to a sort key.
#[derive(Clone, Copy)]
enum KeyVal<'a> {
    EmptyArray,
    Val(&'a Bson),
}

fn cmp_keyval(a: KeyVal, b: KeyVal) -> Ordering {
    match (a, b) {
        (KeyVal::EmptyArray, KeyVal::EmptyArray) => Ordering::Equal,
        (KeyVal::EmptyArray, KeyVal::Val(v)) => {
            if matches!(v, Bson::MinKey) {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (KeyVal::Val(_), KeyVal::EmptyArray) => cmp_keyval(b, a).reverse(),
        (KeyVal::Val(x), KeyVal::Val(y)) => compare(x, y),
    }
}

fn collect_doc<'a>(d: &'a Document, segs: &[String], out: &mut Vec<KeyVal<'a>>) {
    match segs.split_first() {
        None => {}
        Some((first, rest)) => match d.get(first) {
            None => out.push(KeyVal::Val(&NULL)),
            Some(v) => collect_value(v, rest, out),
        },
    }
}

fn collect_value<'a>(v: &'a Bson, segs: &[String], out: &mut Vec<KeyVal<'a>>) {
    let Some((first, rest)) = segs.split_first() else {
        match v {
            Bson::Array(a) if a.is_empty() => out.push(KeyVal::EmptyArray),
            Bson::Array(a) => out.extend(a.iter().map(KeyVal::Val)),
            other => out.push(KeyVal::Val(other)),
        }
        return;
    };
    match v {
        Bson::Document(d) => collect_doc(d, segs, out),
        Bson::Array(a) => {
            let before = out.len();
            if let Some(e) = array_index(first).and_then(|i| a.get(i)) {
                collect_value(e, rest, out);
            }
            for e in a {
                if let Bson::Document(d) = e {
                    collect_doc(d, segs, out);
                }
            }
            if out.len() == before {
                out.push(KeyVal::Val(&NULL));
            }
        }
        _ => out.push(KeyVal::Val(&NULL)),
    }
}

impl SortSpec {
    /// Parses `{field: 1 | -1, ...}`; the directions may be any numeric type.
    pub fn parse(spec: &Document) -> CommandResult<SortSpec> {
        let mut keys = Vec::with_capacity(spec.len());
        let mut natural_reverse = false;
        for (path, v) in spec {
            if path == "$natural" {
                if spec.len() != 1 {
                    return Err(CommandError::bad_value(
                        "$natural cannot be combined with other sort keys",
                    ));
                }
                natural_reverse = match as_num(v) {
                    Some(Num::Int(1)) | Some(Num::Float(1.0)) => false,
                    Some(Num::Int(-1)) | Some(Num::Float(-1.0)) => true,
                    _ => return Err(CommandError::bad_value("$natural sort must be 1 or -1")),
                };
                continue;
            }
            if path.starts_with('$') {
                return Err(CommandError::bad_value(format!(
                    "unsupported sort key {path}"
                )));
            }
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(CommandError::new(
                    40352,
                    "FieldPath cannot be constructed with empty string",
                ));
            }
            let ascending =
                match v {
                    Bson::Document(d) if d.contains_key("$meta") => {
                        return Err(CommandError::bad_value(format!(
                            "$meta sort by {} is not supported by mongo-sim",
                            d.get("$meta").unwrap_or(&Bson::Null)
                        )))
                    }
                    other => match as_num(other) {
                        Some(Num::Int(1)) => true,
                        Some(Num::Int(-1)) => false,
                        Some(Num::Float(1.0)) => true,
                        Some(Num::Float(-1.0)) => false,
                        None => {
                            return Err(CommandError::new(
                                15974,
                                format!("Illegal key in $sort specification: {path}: {other}"),
                            ))
                        }
                        _ => return Err(CommandError::new(
                            15975,
                            "$sort key ordering must be 1 (for ascending) or -1 (for descending)",
                        )),
                    },
                };
            keys.push(SortKey {
                path: path.clone(),
                segs: path.split('.').map(str::to_string).collect(),
                ascending,
            });
        }
        Ok(SortSpec {
            keys,
            natural_reverse,
        })
    }

    /// Whether the spec has no keys (sorting is then the identity).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.natural_reverse
    }

    /// The sorted field paths with their direction (`true` = ascending).
    pub fn fields(&self) -> impl Iterator<Item = (&str, bool)> {
        self.keys.iter().map(|k| (k.path.as_str(), k.ascending))
    }

    fn key_values<'a>(&self, doc: &'a Document) -> Vec<KeyVal<'a>> {
        let mut vals = Vec::new();
        self.keys
            .iter()
            .map(|k| {
                vals.clear();
                collect_doc(doc, &k.segs, &mut vals);
                let pick = if k.ascending {
                    vals.iter().copied().min_by(|a, b| cmp_keyval(*a, *b))
                } else {
                    vals.iter().copied().max_by(|a, b| cmp_keyval(*a, *b))
                };
                pick.unwrap_or(KeyVal::Val(&NULL))
            })
            .collect()
    }

    fn cmp_keys(&self, a: &[KeyVal], b: &[KeyVal]) -> Ordering {
        for ((k, x), y) in self.keys.iter().zip(a).zip(b) {
            let o = cmp_keyval(*x, *y);
            let o = if k.ascending { o } else { o.reverse() };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }

    /// Compares a document's key with a bound given as its values in key order (the `min`/
    /// `max` of a hinted index scan), in the index's order.
    pub fn compare_to_bound(&self, doc: &Document, bound: &Document) -> Ordering {
        let b: Vec<KeyVal> = bound.values().map(KeyVal::Val).collect();
        self.cmp_keys(&self.key_values(doc), &b)
    }

    /// Compares two bounds (values in key order) in the index's order.
    pub fn compare_bounds(&self, a: &Document, b: &Document) -> Ordering {
        let a: Vec<KeyVal> = a.values().map(KeyVal::Val).collect();
        let b: Vec<KeyVal> = b.values().map(KeyVal::Val).collect();
        self.cmp_keys(&a, &b)
    }

    /// Compares two documents under this sort.
    pub fn compare(&self, a: &Document, b: &Document) -> Ordering {
        self.cmp_keys(&self.key_values(a), &self.key_values(b))
    }

    /// Sorts documents (stable), extracting each document's key once.
    pub fn sort(&self, mut docs: Vec<Document>) -> Vec<Document> {
        if self.natural_reverse {
            docs.reverse();
        }
        if self.keys.is_empty() || docs.len() < 2 {
            return docs;
        }
        let order: Vec<usize> = {
            let keys: Vec<Vec<KeyVal>> = docs.iter().map(|d| self.key_values(d)).collect();
            let mut idx: Vec<usize> = (0..docs.len()).collect();
            idx.sort_by(|&i, &j| self.cmp_keys(&keys[i], &keys[j]));
            idx
        };
        let mut slots: Vec<Option<Document>> = docs.into_iter().map(Some).collect();
        order
            .into_iter()
            .filter_map(|i| slots.get_mut(i).and_then(Option::take))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn ids(docs: &[Document]) -> Vec<i32> {
        docs.iter().map(|d| d.get_i32("_id").unwrap()).collect()
    }

    #[test]
    fn parse_directions() {
        assert!(SortSpec::parse(&doc! {"a": 1, "b": -1i64, "c": 1.0, "d": -1.0}).is_ok());
        assert_eq!(SortSpec::parse(&doc! {"a": 2}).unwrap_err().code, 15975);
        assert_eq!(SortSpec::parse(&doc! {"a": "asc"}).unwrap_err().code, 15974);
        assert_eq!(
            SortSpec::parse(&doc! {"a": {"$meta": "textScore"}})
                .unwrap_err()
                .code,
            2
        );
        assert!(SortSpec::parse(&doc! {}).unwrap().is_empty());
        assert_eq!(SortSpec::parse(&doc! {"$bad": 1}).unwrap_err().code, 2);
    }

    #[test]
    fn natural_order() {
        let docs = vec![doc! {"_id": 1}, doc! {"_id": 2}, doc! {"_id": 3}];
        let s = SortSpec::parse(&doc! {"$natural": -1}).unwrap();
        assert_eq!(ids(&s.sort(docs.clone())), vec![3, 2, 1]);
        let s = SortSpec::parse(&doc! {"$natural": 1}).unwrap();
        assert!(s.is_empty());
        assert_eq!(ids(&s.sort(docs)), vec![1, 2, 3]);
        assert!(SortSpec::parse(&doc! {"$natural": 1, "a": 1}).is_err());
    }

    #[test]
    fn mixed_types_and_missing() {
        let docs = vec![
            doc! {"_id": 1, "a": "s"},
            doc! {"_id": 2, "a": 5},
            doc! {"_id": 3},
            doc! {"_id": 4, "a": Bson::Null},
            doc! {"_id": 5, "a": 2.5},
            doc! {"_id": 6, "a": {"x": 1}},
        ];
        let s = SortSpec::parse(&doc! {"a": 1}).unwrap();
        // missing and null tie, so stable order keeps 3 before 4
        assert_eq!(ids(&s.sort(docs.clone())), vec![3, 4, 5, 2, 1, 6]);
        let s = SortSpec::parse(&doc! {"a": -1}).unwrap();
        assert_eq!(ids(&s.sort(docs)), vec![6, 1, 2, 5, 3, 4]);
    }

    #[test]
    fn arrays_use_min_or_max() {
        let docs = vec![
            doc! {"_id": 1, "a": [1, 10]},
            doc! {"_id": 2, "a": [5]},
            doc! {"_id": 3, "a": []},
            doc! {"_id": 4, "a": Bson::Null},
        ];
        let s = SortSpec::parse(&doc! {"a": 1}).unwrap();
        assert_eq!(ids(&s.sort(docs.clone())), vec![3, 4, 1, 2]);
        let s = SortSpec::parse(&doc! {"a": -1}).unwrap();
        assert_eq!(ids(&s.sort(docs)), vec![1, 2, 4, 3]);
    }

    #[test]
    fn dotted_paths_and_ties() {
        let docs = vec![
            doc! {"_id": 1, "a": {"b": 2}, "c": 1},
            doc! {"_id": 2, "a": [{"b": 9}, {"b": 0}], "c": 1},
            doc! {"_id": 3, "a": {"b": 2}, "c": 0},
        ];
        let s = SortSpec::parse(&doc! {"a.b": 1, "c": 1}).unwrap();
        assert_eq!(ids(&s.sort(docs.clone())), vec![2, 3, 1]);
        let s = SortSpec::parse(&doc! {"a.b": -1, "c": -1}).unwrap();
        assert_eq!(ids(&s.sort(docs.clone())), vec![2, 1, 3]);
        assert_eq!(s.compare(&docs[0], &docs[0]), Ordering::Equal);
    }

    #[test]
    fn cross_type_numbers() {
        let docs = vec![
            doc! {"_id": 1, "a": 2i64},
            doc! {"_id": 2, "a": 1.5},
            doc! {"_id": 3, "a": 1},
        ];
        let s = SortSpec::parse(&doc! {"a": 1}).unwrap();
        assert_eq!(ids(&s.sort(docs)), vec![3, 2, 1]);
    }
}
