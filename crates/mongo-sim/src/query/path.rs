//! Dotted field paths (`"a.b.0.c"`) over documents.
//!
//! MongoDB gives a dotted path two different meanings, and both live here:
//!
//! * **Plain traversal** ([`get`], [`set`], [`unset`]), used by updates and projections: each
//!   segment names a field of a document, or, when the current value is an array and the
//!   segment is a number, an element of it.
//! * **Query traversal** ([`for_each_match_value`], [`values_for_match`]), used by filters:
//!   when an array is met in the *middle* of a path, the rest of the path is applied to every
//!   subdocument in it (so `{"a.b": 1}` matches `{a: [{b: 1}, {b: 2}]}`), and a numeric
//!   segment also indexes the array. A path that runs out (field absent, or reaching into a
//!   scalar) reports a *missing* value, which is what lets `{x: null}` match documents without
//!   `x`. Scalars inside an intermediate array are skipped rather than reported missing, so
//!   `{"a.b": null}` does not match `{a: [1, 2]}` nor `{a: []}` (MongoDB 7.0's behaviour).
//!   Arrays at the *end* of a path are returned as they are; whether a predicate also looks at
//!   their elements is the predicate's business (see `filter.rs`).

use bson::{Bson, Document};

use crate::error::{CommandError, CommandResult};

/// `PathNotViable`: a path goes through a value that cannot hold fields.
const PATH_NOT_VIABLE: i32 = 28;
/// `EmptyFieldName`: a path has an empty segment (`"a..b"`).
const EMPTY_FIELD_NAME: i32 = 56;
/// MongoDB refuses to pad an array with more than this many nulls when setting far past its end.
const MAX_ARRAY_PADDING: usize = 1_500_000;

/// Splits a dotted path into its segments.
pub fn split(path: &str) -> Vec<&str> {
    path.split('.').collect()
}

/// A segment as an array index, when it is one (only ASCII digits).
pub fn array_index(seg: &str) -> Option<usize> {
    if seg.is_empty() || !seg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seg.parse().ok()
}

/// The value at a dotted path by plain traversal, `None` when any segment is absent.
pub fn get<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    get_segments(doc, &split(path))
}

/// [`get`] over pre-split segments.
pub fn get_segments<'a, S: AsRef<str>>(doc: &'a Document, segs: &[S]) -> Option<&'a Bson> {
    let (first, rest) = segs.split_first()?;
    let mut cur = doc.get(first.as_ref())?;
    for seg in rest {
        let seg = seg.as_ref();
        cur = match cur {
            Bson::Document(d) => d.get(seg)?,
            Bson::Array(a) => a.get(array_index(seg)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Calls `f` for every value that query traversal of `segs` reaches in `doc` (`None` meaning
/// "missing"), stopping at and returning `true` on the first call that returns `true`.
pub fn for_each_match_value<'a, S: AsRef<str>>(
    doc: &'a Document,
    segs: &[S],
    f: &mut dyn FnMut(Option<&'a Bson>) -> bool,
) -> bool {
    match segs.split_first() {
        None => false,
        Some((first, rest)) => match doc.get(first.as_ref()) {
            None => f(None),
            Some(v) => walk_value(v, rest, f),
        },
    }
}

fn walk_value<'a, S: AsRef<str>>(
    v: &'a Bson,
    segs: &[S],
    f: &mut dyn FnMut(Option<&'a Bson>) -> bool,
) -> bool {
    let Some((first, rest)) = segs.split_first() else {
        return f(Some(v));
    };
    let seg = first.as_ref();
    match v {
        Bson::Document(d) => match d.get(seg) {
            None => f(None),
            Some(child) => walk_value(child, rest, f),
        },
        Bson::Array(arr) => {
            if let Some(i) = array_index(seg) {
                if let Some(e) = arr.get(i) {
                    if walk_value(e, rest, f) {
                        return true;
                    }
                }
            }
            for e in arr {
                if let Bson::Document(d) = e {
                    let hit = match d.get(seg) {
                        None => f(None),
                        Some(child) => walk_value(child, rest, f),
                    };
                    if hit {
                        return true;
                    }
                }
            }
            false
        }
        _ => f(None),
    }
}

/// Every value query traversal reaches (see the module documentation); `None` is missing.
pub fn values_for_match<'a>(doc: &'a Document, path: &str) -> Vec<Option<&'a Bson>> {
    let mut out = Vec::new();
    for_each_match_value(doc, &split(path), &mut |v| {
        out.push(v);
        false
    });
    out
}

fn check_segments(path: &str, segs: &[&str]) -> CommandResult<()> {
    if segs.iter().any(|s| s.is_empty()) {
        return Err(CommandError::new(
            EMPTY_FIELD_NAME,
            format!("The update path '{path}' contains an empty field name, which is not allowed."),
        ));
    }
    Ok(())
}

fn not_viable(next: &str, key: &str, value: &Bson) -> CommandError {
    let mut holder = Document::new();
    holder.insert(key, value.clone());
    CommandError::new(
        PATH_NOT_VIABLE,
        format!("Cannot create field '{next}' in element {holder}"),
    )
}

/// Sets the value at a dotted path, creating intermediate documents as needed. A numeric
/// segment on an array sets that element, padding the array with nulls when it is past the
/// end (as MongoDB's `$set` does). Traversing a scalar fails with `PathNotViable` (28).
pub fn set(doc: &mut Document, path: &str, value: Bson) -> CommandResult<()> {
    let segs = split(path);
    check_segments(path, &segs)?;
    set_in_doc(doc, &segs, value)
}

fn set_in_doc(doc: &mut Document, segs: &[&str], value: Bson) -> CommandResult<()> {
    let (first, rest) = match segs.split_first() {
        Some(x) => x,
        None => return Ok(()),
    };
    if rest.is_empty() {
        doc.insert(*first, value);
        return Ok(());
    }
    if !doc.contains_key(*first) {
        doc.insert(*first, Document::new());
    }
    let Some(child) = doc.get_mut(*first) else {
        return Ok(());
    };
    set_in_value(child, first, rest, value)
}

fn set_in_value(cur: &mut Bson, key: &str, segs: &[&str], value: Bson) -> CommandResult<()> {
    match cur {
        Bson::Document(d) => set_in_doc(d, segs, value),
        Bson::Array(arr) => {
            let Some((first, rest)) = segs.split_first() else {
                return Ok(());
            };
            let Some(i) = array_index(first) else {
                return Err(not_viable(first, key, &Bson::Array(arr.clone())));
            };
            if i >= arr.len() {
                if i - arr.len() > MAX_ARRAY_PADDING {
                    return Err(CommandError::bad_value(format!(
                        "can't backfill more than {MAX_ARRAY_PADDING} elements"
                    )));
                }
                arr.resize(i, Bson::Null);
                if rest.is_empty() {
                    arr.push(value);
                    return Ok(());
                }
                arr.push(Bson::Document(Document::new()));
            }
            if rest.is_empty() {
                arr[i] = value;
                return Ok(());
            }
            set_in_value(&mut arr[i], first, rest, value)
        }
        other => {
            let next = segs.first().copied().unwrap_or_default();
            Err(not_viable(next, key, other))
        }
    }
}

/// Removes the value at a dotted path; an array element is replaced by null instead (as
/// `$unset` does, so that other elements keep their positions). Returns whether anything was
/// there.
pub fn unset(doc: &mut Document, path: &str) -> bool {
    let segs = split(path);
    unset_in_doc(doc, &segs)
}

fn unset_in_doc(doc: &mut Document, segs: &[&str]) -> bool {
    match segs.split_first() {
        None => false,
        Some((first, [])) => doc.remove(*first).is_some(),
        Some((first, rest)) => match doc.get_mut(*first) {
            Some(child) => unset_in_value(child, rest),
            None => false,
        },
    }
}

fn unset_in_value(cur: &mut Bson, segs: &[&str]) -> bool {
    match cur {
        Bson::Document(d) => unset_in_doc(d, segs),
        Bson::Array(arr) => {
            let Some((first, rest)) = segs.split_first() else {
                return false;
            };
            let Some(i) = array_index(first) else {
                return false;
            };
            match arr.get_mut(i) {
                None => false,
                Some(e) if rest.is_empty() => {
                    *e = Bson::Null;
                    true
                }
                Some(e) => unset_in_value(e, rest),
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn get_plain() {
        let d = doc! {"a": {"b": [10, {"c": 5}]}};
        assert_eq!(get(&d, "a.b.0"), Some(&Bson::Int32(10)));
        assert_eq!(get(&d, "a.b.1.c"), Some(&Bson::Int32(5)));
        assert_eq!(get(&d, "a.b.c"), None);
        assert_eq!(get(&d, "a.x"), None);
        assert_eq!(get(&d, "a.b.7"), None);
        assert!(get(&d, "a").is_some());
    }

    #[test]
    fn match_traversal_into_arrays() {
        let d = doc! {"a": [{"b": 1}, {"b": [2, 3]}, {"c": 1}, 7]};
        let vals = values_for_match(&d, "a.b");
        assert_eq!(
            vals,
            vec![
                Some(&Bson::Int32(1)),
                Some(&Bson::Array(vec![2.into(), 3.into()])),
                None
            ]
        );
        // numeric segments index arrays and also name fields of subdocuments
        let d = doc! {"a": [{"0": "x"}, "y"]};
        let vals = values_for_match(&d, "a.0");
        assert_eq!(
            vals,
            vec![
                Some(&Bson::Document(doc! {"0": "x"})),
                Some(&Bson::String("x".into()))
            ]
        );
    }

    #[test]
    fn match_traversal_missing() {
        assert_eq!(values_for_match(&doc! {}, "a.b"), vec![None]);
        assert_eq!(values_for_match(&doc! {"a": 4}, "a.b"), vec![None]);
        assert_eq!(values_for_match(&doc! {"a": {}}, "a.b"), vec![None]);
        // Scalars and empty arrays in the middle of a path yield nothing at all.
        assert!(values_for_match(&doc! {"a": [1, 2]}, "a.b").is_empty());
        assert!(values_for_match(&doc! {"a": []}, "a.b").is_empty());
        assert!(values_for_match(&doc! {"a": [[]]}, "a.b").is_empty());
    }

    #[test]
    fn set_creates_and_indexes() {
        let mut d = doc! {"_id": 1};
        set(&mut d, "a.b.c", 5.into()).unwrap();
        assert_eq!(d, doc! {"_id": 1, "a": {"b": {"c": 5}}});
        let mut d = doc! {"a": [1, {"x": 1}]};
        set(&mut d, "a.1.y", 2.into()).unwrap();
        set(&mut d, "a.0", 9.into()).unwrap();
        assert_eq!(d, doc! {"a": [9, {"x": 1, "y": 2}]});
        set(&mut d, "a.4", "z".into()).unwrap();
        assert_eq!(
            d,
            doc! {"a": [9, {"x": 1, "y": 2}, Bson::Null, Bson::Null, "z"]}
        );
        set(&mut d, "a.6.q", 1.into()).unwrap();
        assert_eq!(get(&d, "a.6"), Some(&Bson::Document(doc! {"q": 1})));
        // existing field keeps its position
        let mut d = doc! {"a": 1, "b": 2};
        set(&mut d, "a", 3.into()).unwrap();
        assert_eq!(d.keys().collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn set_errors() {
        let mut d = doc! {"a": 5, "arr": [1]};
        assert_eq!(set(&mut d, "a.b", 1.into()).unwrap_err().code, 28);
        assert_eq!(set(&mut d, "arr.x", 1.into()).unwrap_err().code, 28);
        assert_eq!(set(&mut d, "arr.0.x", 1.into()).unwrap_err().code, 28);
        assert_eq!(set(&mut d, "a..b", 1.into()).unwrap_err().code, 56);
    }

    #[test]
    fn unset_fields_and_elements() {
        let mut d = doc! {"a": {"b": 1, "c": 2}, "arr": [1, 2]};
        assert!(unset(&mut d, "a.b"));
        assert!(!unset(&mut d, "a.zz"));
        assert!(unset(&mut d, "arr.0"));
        assert!(!unset(&mut d, "arr.5"));
        assert_eq!(d, doc! {"a": {"c": 2}, "arr": [Bson::Null, 2]});
        assert!(unset(&mut d, "arr"));
        assert_eq!(d, doc! {"a": {"c": 2}});
    }
}
