//! Projections: `find`'s `projection`, and the `$project`, `$addFields`/`$set` and `$unset`
//! stages (which change streams apply to every event).
//!
//! A specification is parsed into a tree keyed by field name, so dotted keys (`"ns.db": 1`)
//! and nested documents (`{ns: {db: 1}}`) mean the same thing. It then runs in one of three
//! modes, as in MongoDB:
//!
//! * **inclusion** — only listed fields (and `_id`, unless `_id: 0`) are kept, in the input
//!   document's order, and computed fields are appended in specification order;
//! * **exclusion** — listed fields are removed, everything else kept;
//! * **add fields** — every value is an expression assigned into a copy of the document,
//!   replacing a field in place or appending it.
//!
//! Booleans and numbers mean include (truthy) / exclude (falsy) in find and `$project`
//! (MongoDB treats any non-zero number as "include", so `{a: 5}` includes `a`); every other
//! value is an aggregation expression (`expr.rs`), so a plain string is a literal and
//! `"$field"` a field path. Mixing the modes fails with 31254/31253 like the server.
//! Through arrays, sub-projections apply to each element; in inclusion mode scalar elements are
//! dropped, in exclusion mode they are kept.

use bson::{Bson, Document};

use super::expr::Expr;
use super::filter::Filter;
use crate::error::{CommandError, CommandResult};

/// `Location31254`: an exclusion inside an inclusion projection.
const EXCLUSION_IN_INCLUSION: i32 = 31254;
/// `Location31253`: an inclusion inside an exclusion projection.
const INCLUSION_IN_EXCLUSION: i32 = 31253;
/// `Location31252`: a computed field inside an exclusion projection.
const EXPRESSION_IN_EXCLUSION: i32 = 31252;
/// `Location31250`: a path that is a prefix of one seen before (`{"a.b": 1, a: 1}`).
const PATH_COLLISION: i32 = 31250;
/// `Location31249`: a path below one seen before (`{a: 1, "a.b": 1}`).
const PATH_COLLISION_BELOW: i32 = 31249;
/// `Location51270`: `{a: {}}` in a projection.
const EMPTY_SUB_PROJECTION: i32 = 51270;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// `{}` in find: the document unchanged.
    Identity,
    Inclusion,
    Exclusion,
    AddFields,
}

/// Which syntax a specification is written in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Syntax {
    Find,
    Project,
    AddFields,
}

#[derive(Debug, Clone)]
enum Item {
    Include,
    Exclude,
    Computed(Expr),
    Sub(Node),
    /// find's `{$slice: n}` / `{$slice: [skip, limit]}`.
    Slice(i64, Option<i64>),
    /// find's `{$elemMatch: query}`: the first matching element, as a one-element array.
    ElemMatch(Filter),
}

#[derive(Debug, Clone, Default)]
struct Node {
    fields: Vec<(String, Item)>,
}

impl Node {
    fn get(&self, k: &str) -> Option<&Item> {
        self.fields.iter().find(|(n, _)| n == k).map(|(_, i)| i)
    }

    fn has_computed(&self) -> bool {
        self.fields.iter().any(|(_, i)| match i {
            Item::Computed(_) => true,
            Item::Sub(s) => s.has_computed(),
            _ => false,
        })
    }

    fn insert(&mut self, segs: &[&str], item: Item, full: &str) -> CommandResult<()> {
        let Some((first, rest)) = segs.split_first() else {
            return Ok(());
        };
        let pos = self.fields.iter().position(|(n, _)| n == first);
        if rest.is_empty() {
            if pos.is_some() {
                return Err(CommandError::new(
                    PATH_COLLISION,
                    format!("Path collision at {full}"),
                ));
            }
            self.fields.push((first.to_string(), item));
            return Ok(());
        }
        let idx = match pos {
            Some(i) => i,
            None => {
                self.fields
                    .push((first.to_string(), Item::Sub(Node::default())));
                self.fields.len() - 1
            }
        };
        match &mut self.fields[idx].1 {
            Item::Sub(sub) => sub.insert(rest, item, full),
            _ => Err(CommandError::new(
                PATH_COLLISION_BELOW,
                format!(
                    "Path collision at {full} remaining portion {}",
                    rest.join(".")
                ),
            )),
        }
    }
}

/// A parsed projection (see the module documentation).
#[derive(Debug, Clone)]
pub struct Projection {
    mode: Mode,
    root: Node,
}

fn truthy_number(v: &Bson) -> Option<bool> {
    match v {
        Bson::Boolean(b) => Some(*b),
        Bson::Int32(i) => Some(*i != 0),
        Bson::Int64(i) => Some(*i != 0),
        Bson::Double(f) => Some(*f != 0.0),
        Bson::Decimal128(_) => super::compare::as_f64(v).map(|f| f != 0.0),
        _ => None,
    }
}

fn check_field_name(path: &str) -> CommandResult<Vec<&str>> {
    let segs: Vec<&str> = path.split('.').collect();
    for s in &segs {
        if s.is_empty() {
            return Err(CommandError::new(
                40352,
                "FieldPath cannot be constructed with empty string",
            ));
        }
        if *s == "$" {
            return Err(CommandError::bad_value(format!(
                "positional projection '{path}' is not supported by mongo-sim"
            )));
        }
        if s.starts_with('$') {
            return Err(CommandError::new(
                16410,
                format!("FieldPath field names may not start with '$'. Found: {path}"),
            ));
        }
    }
    Ok(segs)
}

fn parse_slice(v: &Bson) -> CommandResult<Item> {
    let int = |b: &Bson| super::compare::as_f64(b).map(|f| f as i64);
    match v {
        Bson::Array(a) if a.len() == 2 => {
            let (Some(skip), Some(limit)) = (int(&a[0]), int(&a[1])) else {
                return Err(CommandError::bad_value(
                    "$slice only supports numbers and [skip, limit] arrays",
                ));
            };
            if limit <= 0 {
                return Err(CommandError::bad_value(format!(
                    "$slice limit must be positive, got {limit}"
                )));
            }
            Ok(Item::Slice(skip, Some(limit)))
        }
        other => match int(other) {
            Some(n) => Ok(Item::Slice(n, None)),
            None => Err(CommandError::bad_value(
                "$slice only supports numbers and [skip, limit] arrays",
            )),
        },
    }
}

fn apply_slice(v: &Bson, skip: i64, limit: Option<i64>) -> Bson {
    let Bson::Array(a) = v else {
        return v.clone();
    };
    let len = a.len() as i64;
    let (start, count) = match limit {
        None if skip >= 0 => (0, skip),
        None => ((len + skip).max(0), len),
        Some(l) if skip >= 0 => (skip.min(len), l),
        Some(l) => ((len + skip).max(0), l),
    };
    Bson::Array(
        a.iter()
            .skip(start as usize)
            .take(count.max(0) as usize)
            .cloned()
            .collect(),
    )
}

struct Builder {
    syntax: Syntax,
    root: Node,
    /// The first non-`_id` field that decided inclusion or exclusion, with its kind.
    decided: Option<(bool, String)>,
    id_excluded: bool,
    id_included: bool,
}

impl Builder {
    fn classify(&mut self, path: &str, item: &Item) -> CommandResult<()> {
        let inclusive = match item {
            Item::Include | Item::ElemMatch(_) => true,
            Item::Computed(_) => true,
            Item::Exclude => false,
            Item::Slice(..) | Item::Sub(_) => return Ok(()),
        };
        if path == "_id" && matches!(item, Item::Include | Item::Exclude) {
            if inclusive {
                self.id_included = true;
            } else {
                self.id_excluded = true;
            }
            return Ok(());
        }
        match &self.decided {
            None => self.decided = Some((inclusive, path.to_string())),
            Some((true, _)) if !inclusive => {
                return Err(CommandError::new(
                    EXCLUSION_IN_INCLUSION,
                    format!("Cannot do exclusion on field {path} in inclusion projection"),
                ))
            }
            Some((false, _)) if inclusive => {
                return Err(match item {
                    Item::Computed(_) => CommandError::new(
                        EXPRESSION_IN_EXCLUSION,
                        format!(
                            "Cannot use expression other than $meta in exclusion projection (field {path})"
                        ),
                    ),
                    _ => CommandError::new(
                        INCLUSION_IN_EXCLUSION,
                        format!("Cannot do inclusion on field {path} in exclusion projection"),
                    ),
                })
            }
            _ => {}
        }
        Ok(())
    }

    fn add_spec(&mut self, prefix: &str, spec: &Document) -> CommandResult<()> {
        for (k, v) in spec {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            check_field_name(k)?;
            let item = match (self.syntax, v) {
                (Syntax::AddFields, Bson::Document(d))
                    if !d.is_empty() && !d.keys().next().is_some_and(|f| f.starts_with('$')) =>
                {
                    self.add_spec(&path, d)?;
                    continue;
                }
                (Syntax::AddFields, other) => Item::Computed(Expr::parse(other)?),
                (_, Bson::Document(d)) => match d.keys().next() {
                    None => {
                        return Err(CommandError::new(
                            EMPTY_SUB_PROJECTION,
                            format!(
                                "An empty sub-projection is not a valid value. Found empty object at path {path}"
                            ),
                        ))
                    }
                    Some(op) if self.syntax == Syntax::Find && op == "$slice" && d.len() == 1 => {
                        parse_slice(d.get("$slice").unwrap_or(&Bson::Null))?
                    }
                    Some(op) if self.syntax == Syntax::Find && op == "$elemMatch" => {
                        match d.get("$elemMatch") {
                            Some(Bson::Document(q)) => Item::ElemMatch(Filter::parse(q)?),
                            _ => {
                                return Err(CommandError::bad_value(
                                    "elemMatch: Invalid argument, object required.",
                                ))
                            }
                        }
                    }
                    Some(op) if op == "$meta" => {
                        return Err(CommandError::bad_value(
                            "$meta projections are not supported by mongo-sim",
                        ))
                    }
                    Some(op) if op.starts_with('$') => Item::Computed(Expr::parse_document(d)?),
                    Some(_) => {
                        self.add_spec(&path, d)?;
                        continue;
                    }
                },
                (_, other) => match truthy_number(other) {
                    Some(true) => Item::Include,
                    Some(false) => Item::Exclude,
                    None => Item::Computed(Expr::parse(other)?),
                },
            };
            if self.syntax != Syntax::AddFields {
                self.classify(&path, &item)?;
            }
            let segs: Vec<&str> = path.split('.').collect();
            self.root.insert(&segs, item, &path)?;
        }
        Ok(())
    }

    fn finish(self) -> Projection {
        let mode = match self.syntax {
            Syntax::AddFields => Mode::AddFields,
            _ => match self.decided {
                Some((true, _)) => Mode::Inclusion,
                Some((false, _)) => Mode::Exclusion,
                None if self.id_included
                    && !self
                        .root
                        .fields
                        .iter()
                        .any(|(_, i)| matches!(i, Item::Slice(..))) =>
                {
                    Mode::Inclusion
                }
                None if self.root.fields.is_empty() => Mode::Identity,
                None => Mode::Exclusion,
            },
        };
        Projection {
            mode,
            root: self.root,
        }
    }
}

impl Projection {
    fn build(spec: &Document, syntax: Syntax) -> CommandResult<Projection> {
        let mut b = Builder {
            syntax,
            root: Node::default(),
            decided: None,
            id_excluded: false,
            id_included: false,
        };
        b.add_spec("", spec)?;
        Ok(b.finish())
    }

    /// A `find` projection (also accepts `$slice` and `$elemMatch`).
    pub fn parse(spec: &Document) -> CommandResult<Projection> {
        Self::build(spec, Syntax::Find)
    }

    /// A `$project` stage specification.
    pub fn parse_project(spec: &Document) -> CommandResult<Projection> {
        Self::build(spec, Syntax::Project)
    }

    /// An `$addFields`/`$set` stage specification.
    pub fn parse_add_fields(spec: &Document) -> CommandResult<Projection> {
        Self::build(spec, Syntax::AddFields)
    }

    /// An `$unset` stage: an exclusion of the given paths.
    pub fn exclusion_of(paths: &[String]) -> CommandResult<Projection> {
        let mut root = Node::default();
        for p in paths {
            let segs = check_field_name(p)?;
            root.insert(&segs, Item::Exclude, p)?;
        }
        Ok(Projection {
            mode: Mode::Exclusion,
            root,
        })
    }

    /// Whether the projection returns documents unchanged (`{}` in find).
    pub fn is_identity(&self) -> bool {
        self.mode == Mode::Identity
    }

    /// Applies the projection to one document.
    pub fn apply(&self, doc: &Document) -> Document {
        match self.mode {
            Mode::Identity => doc.clone(),
            Mode::Inclusion => include_doc(&self.root, doc, doc, true),
            Mode::Exclusion => exclude_doc(&self.root, doc),
            Mode::AddFields => add_fields(&self.root, doc, doc),
        }
    }
}

fn include_value(item: &Item, v: &Bson, root: &Document) -> Option<Bson> {
    match item {
        Item::Include => Some(v.clone()),
        Item::Sub(sub) => match v {
            Bson::Document(d) => Some(Bson::Document(include_doc(sub, d, root, false))),
            Bson::Array(a) => Some(Bson::Array(
                a.iter()
                    .filter_map(|e| match e {
                        Bson::Document(_) | Bson::Array(_) => include_value(item, e, root),
                        _ if sub.has_computed() => Some(Bson::Document(include_doc(
                            sub,
                            &Document::new(),
                            root,
                            false,
                        ))),
                        _ => None,
                    })
                    .collect(),
            )),
            _ if sub.has_computed() => Some(Bson::Document(include_doc(
                sub,
                &Document::new(),
                root,
                false,
            ))),
            _ => None,
        },
        Item::Slice(skip, limit) => Some(apply_slice(v, *skip, *limit)),
        Item::ElemMatch(f) => match v {
            Bson::Array(a) => a
                .iter()
                .find(|e| matches!(e, Bson::Document(d) if f.matches(d)))
                .map(|e| Bson::Array(vec![e.clone()])),
            _ => None,
        },
        Item::Computed(_) | Item::Exclude => None,
    }
}

fn include_doc(node: &Node, src: &Document, root: &Document, top: bool) -> Document {
    let mut out = Document::new();
    if top {
        match node.get("_id") {
            None => {
                if let Some(id) = src.get("_id") {
                    out.insert("_id", id.clone());
                }
            }
            Some(Item::Computed(e)) => {
                if let Some(v) = e.evaluate(root) {
                    out.insert("_id", v);
                }
            }
            _ => {}
        }
    }
    for (k, v) in src {
        if top && k == "_id" && !matches!(node.get(k), Some(Item::Include | Item::Sub(_))) {
            continue;
        }
        if let Some(item) = node.get(k) {
            if let Some(nv) = include_value(item, v, root) {
                out.insert(k.clone(), nv);
            }
        }
    }
    for (k, item) in &node.fields {
        if top && k == "_id" {
            continue;
        }
        match item {
            Item::Computed(e) => {
                if let Some(v) = e.evaluate(root) {
                    out.insert(k.clone(), v);
                }
            }
            Item::Sub(sub) if !src.contains_key(k) && sub.has_computed() => {
                out.insert(k.clone(), include_doc(sub, &Document::new(), root, false));
            }
            _ => {}
        }
    }
    out
}

fn exclude_value(item: &Item, v: &Bson) -> Option<Bson> {
    match item {
        Item::Exclude => None,
        Item::Sub(sub) => Some(match v {
            Bson::Document(d) => Bson::Document(exclude_doc(sub, d)),
            Bson::Array(a) => {
                Bson::Array(a.iter().filter_map(|e| exclude_value(item, e)).collect())
            }
            other => other.clone(),
        }),
        Item::Slice(skip, limit) => Some(apply_slice(v, *skip, *limit)),
        _ => Some(v.clone()),
    }
}

fn exclude_doc(node: &Node, src: &Document) -> Document {
    let mut out = Document::new();
    for (k, v) in src {
        match node.get(k) {
            None => {
                out.insert(k.clone(), v.clone());
            }
            Some(item) => {
                if let Some(nv) = exclude_value(item, v) {
                    out.insert(k.clone(), nv);
                }
            }
        }
    }
    out
}

fn add_fields_value(sub: &Node, v: Option<&Bson>, root: &Document) -> Bson {
    match v {
        Some(Bson::Document(d)) => Bson::Document(add_fields(sub, d, root)),
        Some(Bson::Array(a)) => Bson::Array(
            a.iter()
                .map(|e| add_fields_value(sub, Some(e), root))
                .collect(),
        ),
        _ => Bson::Document(add_fields(sub, &Document::new(), root)),
    }
}

fn add_fields(node: &Node, src: &Document, root: &Document) -> Document {
    let mut out = src.clone();
    for (k, item) in &node.fields {
        match item {
            Item::Computed(e) => match e.evaluate(root) {
                Some(v) => {
                    out.insert(k.clone(), v);
                }
                None => {
                    out.remove(k);
                }
            },
            Item::Sub(sub) => {
                let nv = add_fields_value(sub, src.get(k), root);
                out.insert(k.clone(), nv);
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn find(spec: Document, d: &Document) -> Document {
        Projection::parse(&spec).unwrap().apply(d)
    }

    fn project(spec: Document, d: &Document) -> Document {
        Projection::parse_project(&spec).unwrap().apply(d)
    }

    fn sample() -> Document {
        doc! {"_id": 1, "a": 1, "b": {"c": 2, "d": 3}, "e": [{"c": 1, "x": 0}, 5, {"x": 1}]}
    }

    #[test]
    fn inclusion() {
        let d = sample();
        assert_eq!(find(doc! {"a": 1}, &d), doc! {"_id": 1, "a": 1});
        assert_eq!(find(doc! {"a": true, "_id": 0}, &d), doc! {"a": 1});
        assert_eq!(find(doc! {"b.c": 1}, &d), doc! {"_id": 1, "b": {"c": 2}});
        assert_eq!(
            find(doc! {"b": {"d": 1}}, &d),
            doc! {"_id": 1, "b": {"d": 3}}
        );
        assert_eq!(
            find(doc! {"e.c": 1}, &d),
            doc! {"_id": 1, "e": [{"c": 1}, {}]}
        );
        // document order, not spec order
        assert_eq!(
            find(doc! {"b": 1, "a": 1}, &d),
            doc! {"_id": 1, "a": 1, "b": {"c": 2, "d": 3}}
        );
        assert_eq!(find(doc! {"zz": 1}, &d), doc! {"_id": 1});
        assert_eq!(find(doc! {"_id": 1}, &d), doc! {"_id": 1});
        // non-zero numbers include
        assert_eq!(find(doc! {"a": 5}, &d), doc! {"_id": 1, "a": 1});
    }

    #[test]
    fn exclusion() {
        let d = sample();
        assert_eq!(find(doc! {"b": 0, "e": 0}, &d), doc! {"_id": 1, "a": 1});
        assert_eq!(
            find(doc! {"_id": 0}, &d),
            doc! {"a": 1, "b": {"c": 2, "d": 3}, "e": [{"c": 1, "x": 0}, 5, {"x": 1}]}
        );
        assert_eq!(
            find(doc! {"b.c": 0, "e.x": false, "_id": 0}, &d),
            doc! {"a": 1, "b": {"d": 3}, "e": [{"c": 1}, 5, {}]}
        );
        assert_eq!(find(doc! {}, &d), d);
        assert!(Projection::parse(&doc! {}).unwrap().is_identity());
    }

    #[test]
    fn mixing_errors() {
        let code = |s: Document| Projection::parse(&s).unwrap_err().code;
        assert_eq!(code(doc! {"a": 1, "b": 0}), 31254);
        assert_eq!(code(doc! {"a": 0, "b": 1}), 31253);
        assert_eq!(code(doc! {"a": 0, "b": "lit"}), 31252);
        assert_eq!(code(doc! {"a": 1, "a.b": 1}), 31249);
        assert_eq!(code(doc! {"a.b": 1, "a": 1}), 31250);
        assert_eq!(code(doc! {"a": {}}), 51270);
        assert_eq!(code(doc! {"a": {"$foo": 1}}), 168);
        assert_eq!(code(doc! {"a.$": 1}), 2);
        // _id may be excluded in an inclusion projection and included in an exclusion one
        assert!(Projection::parse(&doc! {"_id": 0, "a": 1}).is_ok());
        assert!(Projection::parse(&doc! {"_id": 1, "a": 0}).is_ok());
    }

    #[test]
    fn slice_and_elem_match() {
        let d = doc! {"_id": 1, "arr": [1, 2, 3, 4], "r": [{"k": 1}, {"k": 2}, {"k": 2, "z": 1}], "o": 1};
        assert_eq!(
            find(doc! {"arr": {"$slice": 2}}, &d).get("arr"),
            Some(&Bson::Array(vec![1.into(), 2.into()]))
        );
        assert_eq!(
            find(doc! {"arr": {"$slice": -1}}, &d).get("arr"),
            Some(&Bson::Array(vec![4.into()]))
        );
        assert_eq!(
            find(doc! {"arr": {"$slice": [1, 2]}}, &d).get("arr"),
            Some(&Bson::Array(vec![2.into(), 3.into()]))
        );
        assert!(find(doc! {"arr": {"$slice": 1}}, &d).contains_key("o"));
        assert_eq!(
            find(doc! {"r": {"$elemMatch": {"k": 2}}}, &d),
            doc! {"_id": 1, "r": [{"k": 2}]}
        );
    }

    #[test]
    fn project_with_expressions() {
        let ev = doc! {
            "_id": {"_data": "x"},
            "operationType": "insert",
            "ns": {"db": "d", "coll": "c"},
            "fullDocument": {"_id": 1},
        };
        assert_eq!(
            project(doc! {"operationType": 1, "ns": 1}, &ev),
            doc! {"_id": {"_data": "x"}, "operationType": "insert", "ns": {"db": "d", "coll": "c"}}
        );
        assert_eq!(
            project(doc! {"op": "$operationType", "db": "$ns.db", "_id": 0}, &ev),
            doc! {"op": "insert", "db": "d"}
        );
        // a plain string is a literal
        assert_eq!(
            project(doc! {"operationType": "update", "_id": 0}, &ev),
            doc! {"operationType": "update"}
        );
        assert_eq!(
            project(
                doc! {"ns": {"db": "$ns.db", "coll": "$ns.coll", "viewOn": "db.coll"}},
                &ev
            ),
            doc! {"_id": {"_data": "x"}, "ns": {"db": "d", "coll": "c", "viewOn": "db.coll"}}
        );
        assert_eq!(
            project(doc! {"ns.db": 1, "ns.viewOn": "db.coll", "_id": 0}, &ev),
            doc! {"ns": {"db": "d", "viewOn": "db.coll"}}
        );
        assert_eq!(
            project(doc! {"x": {"$literal": 1}, "y": "$missing", "_id": 0}, &ev),
            doc! {"x": 1}
        );
        assert_eq!(
            project(doc! {"new.sub": "v", "_id": 0}, &doc! {"new": 5}),
            doc! {"new": {"sub": "v"}}
        );
        assert_eq!(
            project(doc! {"_id": "$operationType"}, &ev),
            doc! {"_id": "insert"}
        );
    }

    #[test]
    fn add_fields_mode() {
        let d = doc! {"_id": 1, "a": 1, "s": {"x": 1}, "arr": [{"k": 1}, 2]};
        let p = |s: Document| Projection::parse_add_fields(&s).unwrap().apply(&d);
        assert_eq!(
            p(doc! {"a": 0}),
            doc! {"_id": 1, "a": 0, "s": {"x": 1}, "arr": [{"k": 1}, 2]}
        );
        assert_eq!(
            p(doc! {"b": "$a", "s.y": true}),
            doc! {"_id": 1, "a": 1, "s": {"x": 1, "y": true}, "arr": [{"k": 1}, 2], "b": 1}
        );
        assert_eq!(
            p(doc! {"s": {"z": 2}}),
            doc! {"_id": 1, "a": 1, "s": {"x": 1, "z": 2}, "arr": [{"k": 1}, 2]}
        );
        assert_eq!(
            p(doc! {"arr.n": 0}),
            doc! {"_id": 1, "a": 1, "s": {"x": 1}, "arr": [{"k": 1, "n": 0}, {"n": 0}]}
        );
        assert_eq!(
            p(doc! {"a": "$$REMOVE"}),
            doc! {"_id": 1, "s": {"x": 1}, "arr": [{"k": 1}, 2]}
        );
        assert_eq!(p(doc! {"e": {}}).get("e"), Some(&Bson::Document(doc! {})));
    }

    #[test]
    fn unset() {
        let p = Projection::exclusion_of(&["a".to_string(), "s.x".to_string()]).unwrap();
        assert_eq!(
            p.apply(&doc! {"_id": 1, "a": 1, "s": {"x": 1, "y": 2}}),
            doc! {"_id": 1, "s": {"y": 2}}
        );
    }
}
