//! Updates: operator documents (`{$set: ..., $inc: ...}`), replacement documents, and
//! aggregation-pipeline updates (`[{$set: ...}]`), plus the base document of an upsert.
//!
//! An update is parsed and validated once ([`Update::parse`]) — unknown modifiers, bad
//! arguments and conflicting paths are rejected before any document is touched, as MongoDB
//! does — then applied to each matched document ([`Update::apply`]), which returns the new
//! document or an error that belongs to that document (`$inc` on a string, changing `_id`).
//!
//! Like MongoDB 5.0+, operator updates process their fields in lexicographic path order
//! (numeric segments in numeric order), so the order of newly created fields does not depend
//! on the order the client wrote them. `_id` is immutable except when the update builds an
//! upsert's new document, and stays the first field.

use std::cmp::Ordering;

use bson::{Bson, DateTime, Document, Timestamp};

use super::compare::{as_num, compare, equal, Num};
use super::filter::ElementMatcher;
use super::path::{self, array_index};
use super::pipeline::Stage;
use super::sort::SortSpec;
use crate::error::{codes, CommandError, CommandResult};

/// `ConflictingUpdateOperators`.
const CONFLICTING_UPDATE_OPERATORS: i32 = 40;
/// `DollarPrefixedFieldName`.
const DOLLAR_PREFIXED_FIELD_NAME: i32 = 52;
/// `EmptyFieldName`.
const EMPTY_FIELD_NAME: i32 = 56;

/// A parsed update.
#[derive(Debug, Clone)]
pub enum Update {
    Operators(OperatorUpdate),
    Replacement(Document),
    Pipeline(Vec<Stage>),
}

/// The modifiers of an operator update, sorted by the path they change.
#[derive(Debug, Clone)]
pub struct OperatorUpdate {
    ops: Vec<FieldOp>,
}

#[derive(Debug, Clone)]
struct FieldOp {
    path: String,
    kind: OpKind,
}

#[derive(Debug, Clone)]
enum OpKind {
    Set(Bson),
    SetOnInsert(Bson),
    Unset,
    Inc(Bson),
    Mul(Bson),
    Min(Bson),
    Max(Bson),
    /// `$rename` from `path` to this path.
    Rename(String),
    Push(PushSpec),
    AddToSet(Vec<Bson>),
    Pull(ElementMatcher),
    PullAll(Vec<Bson>),
    /// `$pop`: `true` removes the first element, `false` the last.
    Pop(bool),
    /// `$currentDate`: `true` for a timestamp, `false` for a date.
    CurrentDate(bool),
}

#[derive(Debug, Clone)]
struct PushSpec {
    each: Vec<Bson>,
    position: Option<i64>,
    slice: Option<i64>,
    sort: Option<PushSort>,
}

#[derive(Debug, Clone)]
enum PushSort {
    Whole(bool),
    Fields(SortSpec),
}

fn type_name(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::Undefined => "undefined",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Null => "null",
        Bson::RegularExpression(_) => "regex",
        Bson::DbPointer(_) => "dbPointer",
        Bson::JavaScriptCode(_) => "javascript",
        Bson::Symbol(_) => "symbol",
        Bson::JavaScriptCodeWithScope(_) => "javascriptWithScope",
        Bson::Int32(_) => "int",
        Bson::Timestamp(_) => "timestamp",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        Bson::MinKey => "minKey",
        Bson::MaxKey => "maxKey",
    }
}

fn one_field(k: &str, v: &Bson) -> Document {
    let mut d = Document::new();
    d.insert(k, v.clone());
    d
}

fn integral(v: &Bson) -> Option<i64> {
    match as_num(v)? {
        Num::Int(i) => Some(i),
        Num::Float(f) if f.fract() == 0.0 && f.is_finite() => Some(f as i64),
        Num::Float(_) => None,
    }
}

fn validate_path(path: &str) -> CommandResult<()> {
    if path.is_empty() {
        return Err(CommandError::new(
            EMPTY_FIELD_NAME,
            "An empty update path is not valid.",
        ));
    }
    for seg in path.split('.') {
        if seg.is_empty() {
            return Err(CommandError::new(
                EMPTY_FIELD_NAME,
                format!(
                    "The update path '{path}' contains an empty field name, which is not allowed."
                ),
            ));
        }
        if seg == "$" || seg.starts_with("$[") {
            return Err(CommandError::bad_value(format!(
                "positional update operators ('{seg}' in '{path}') are not supported by mongo-sim"
            )));
        }
        if seg.starts_with('$') {
            return Err(CommandError::new(
                DOLLAR_PREFIXED_FIELD_NAME,
                format!("The dollar ($) prefixed field '{seg}' in '{path}' is not allowed in the context of an update's replacement document. Consider using an aggregation pipeline with $replaceWith."),
            ));
        }
    }
    Ok(())
}

/// Orders paths as MongoDB applies them: segment by segment, numbers numerically.
fn cmp_paths(a: &str, b: &str) -> Ordering {
    let mut ia = a.split('.');
    let mut ib = b.split('.');
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (array_index(x), array_index(y)) {
                    (Some(i), Some(j)) => i.cmp(&j),
                    _ => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// Whether `a` is `b` or an ancestor of it (or the reverse).
fn paths_overlap(a: &str, b: &str) -> Option<String> {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if long == short || (long.starts_with(short) && long.as_bytes().get(short.len()) == Some(&b'.'))
    {
        Some(short.to_string())
    } else {
        None
    }
}

fn parse_push(v: &Bson) -> CommandResult<PushSpec> {
    let Bson::Document(d) = v else {
        return Ok(PushSpec {
            each: vec![v.clone()],
            position: None,
            slice: None,
            sort: None,
        });
    };
    if !d.contains_key("$each") {
        return Ok(PushSpec {
            each: vec![v.clone()],
            position: None,
            slice: None,
            sort: None,
        });
    }
    let mut spec = PushSpec {
        each: Vec::new(),
        position: None,
        slice: None,
        sort: None,
    };
    for (k, arg) in d {
        match k.as_str() {
            "$each" => match arg {
                Bson::Array(a) => spec.each = a.clone(),
                other => {
                    return Err(CommandError::bad_value(format!(
                        "The argument to $each in $push must be an array but it was of type: {}",
                        type_name(other)
                    )))
                }
            },
            "$position" => match integral(arg) {
                Some(p) => spec.position = Some(p),
                None => {
                    return Err(CommandError::bad_value(format!(
                        "The value for $position must be an integer value, not of type: {}",
                        type_name(arg)
                    )))
                }
            },
            "$slice" => match integral(arg) {
                Some(s) => spec.slice = Some(s),
                None => {
                    return Err(CommandError::bad_value(format!(
                        "The value for $slice must be an integer value but was given type: {}",
                        type_name(arg)
                    )))
                }
            },
            "$sort" => {
                let bad = || {
                    CommandError::bad_value(
                        "The $sort is invalid: use 1/-1 to sort the whole element, or {field:1/-1} to sort embedded fields",
                    )
                };
                spec.sort = Some(match arg {
                    Bson::Document(sd) => {
                        if sd.is_empty() {
                            return Err(bad());
                        }
                        PushSort::Fields(SortSpec::parse(sd).map_err(|_| bad())?)
                    }
                    other => match integral(other) {
                        Some(1) => PushSort::Whole(true),
                        Some(-1) => PushSort::Whole(false),
                        _ => return Err(bad()),
                    },
                });
            }
            other => {
                return Err(CommandError::bad_value(format!(
                    "Unrecognized clause in $push: {other}"
                )))
            }
        }
    }
    Ok(spec)
}

fn parse_add_to_set(v: &Bson) -> CommandResult<Vec<Bson>> {
    match v {
        Bson::Document(d) if d.contains_key("$each") => {
            if d.len() != 1 {
                let other = d
                    .keys()
                    .find(|k| *k != "$each")
                    .cloned()
                    .unwrap_or_default();
                return Err(CommandError::bad_value(format!(
                    "Found unexpected fields after $each in $addToSet: {other}"
                )));
            }
            match d.get("$each") {
                Some(Bson::Array(a)) => Ok(a.clone()),
                other => Err(CommandError::type_mismatch(format!(
                    "The argument to $each in $addToSet must be an array but it was of type {}",
                    other.map(type_name).unwrap_or("missing")
                ))),
            }
        }
        other => Ok(vec![other.clone()]),
    }
}

fn parse_op(op: &str, path: &str, v: &Bson) -> CommandResult<OpKind> {
    let numeric = |verb: &str| -> CommandResult<Bson> {
        if as_num(v).is_some() {
            Ok(v.clone())
        } else {
            Err(CommandError::type_mismatch(format!(
                "Cannot {verb} with non-numeric argument: {}",
                one_field(path, v)
            )))
        }
    };
    Ok(match op {
        "$set" => OpKind::Set(v.clone()),
        "$setOnInsert" => OpKind::SetOnInsert(v.clone()),
        "$unset" => OpKind::Unset,
        "$inc" => OpKind::Inc(numeric("increment")?),
        "$mul" => OpKind::Mul(numeric("multiply")?),
        "$min" => OpKind::Min(v.clone()),
        "$max" => OpKind::Max(v.clone()),
        "$rename" => {
            let Bson::String(to) = v else {
                return Err(CommandError::bad_value(format!(
                    "The 'to' field for $rename must be a string: {}",
                    one_field(path, v)
                )));
            };
            validate_path(to)?;
            if to == path {
                return Err(CommandError::bad_value(format!(
                    "The source and target field for $rename must differ: {}",
                    one_field(path, v)
                )));
            }
            if paths_overlap(path, to).is_some() {
                return Err(CommandError::bad_value(format!(
                    "The source and target field for $rename must not be on the same path: {}",
                    one_field(path, v)
                )));
            }
            OpKind::Rename(to.clone())
        }
        "$push" => OpKind::Push(parse_push(v)?),
        "$addToSet" => OpKind::AddToSet(parse_add_to_set(v)?),
        "$pull" => OpKind::Pull(ElementMatcher::parse(v)?),
        "$pullAll" => match v {
            Bson::Array(a) => OpKind::PullAll(a.clone()),
            other => {
                return Err(CommandError::bad_value(format!(
                    "$pullAll requires an array argument but was given a {}",
                    type_name(other)
                )))
            }
        },
        "$pop" => match as_num(v) {
            Some(Num::Int(1)) => OpKind::Pop(false),
            Some(Num::Int(-1)) => OpKind::Pop(true),
            Some(Num::Float(1.0)) => OpKind::Pop(false),
            Some(Num::Float(-1.0)) => OpKind::Pop(true),
            _ => {
                return Err(CommandError::failed_to_parse(format!(
                    "$pop expects 1 or -1, found: {v}"
                )))
            }
        },
        "$currentDate" => match v {
            Bson::Boolean(_) => OpKind::CurrentDate(false),
            Bson::Document(d) if d.len() == 1 => match d.get("$type") {
                Some(Bson::String(t)) if t == "date" => OpKind::CurrentDate(false),
                Some(Bson::String(t)) if t == "timestamp" => OpKind::CurrentDate(true),
                Some(_) => {
                    return Err(CommandError::bad_value(
                        "The '$type' string field is required to be 'date' or 'timestamp': {$currentDate: {field : {$type: 'date'}}}",
                    ))
                }
                None => {
                    return Err(CommandError::bad_value(format!(
                        "Unrecognized $currentDate option: {}",
                        d.keys().next().cloned().unwrap_or_default()
                    )))
                }
            },
            other => {
                return Err(CommandError::bad_value(format!(
                    "{} is not valid type for $currentDate. Please use a boolean ('true') or a $type expression ({{$type: 'timestamp/date'}}).",
                    type_name(other)
                )))
            }
        },
        other => {
            return Err(CommandError::failed_to_parse(format!(
                "Unknown modifier: {other}. Expected a valid update modifier or pipeline-style update specified as an array"
            )))
        }
    })
}

impl OperatorUpdate {
    fn parse(d: &Document) -> CommandResult<OperatorUpdate> {
        let mut ops = Vec::new();
        for (op, arg) in d {
            let Bson::Document(fields) = arg else {
                if !op.starts_with('$') {
                    return Err(CommandError::failed_to_parse(format!(
                        "Unknown modifier: {op}. Expected a valid update modifier or pipeline-style update specified as an array"
                    )));
                }
                return Err(CommandError::failed_to_parse(format!(
                    "Modifiers operate on fields but we found type {} instead. For example: {{$mod: {{<field>: ...}}}} not {{{op}: {arg}}}",
                    type_name(arg)
                )));
            };
            for (p, v) in fields {
                validate_path(p)?;
                let kind = parse_op(op, p, v)?;
                ops.push(FieldOp {
                    path: p.clone(),
                    kind,
                });
            }
        }
        // Every path an operator touches, for conflict detection.
        let mut touched: Vec<&str> = Vec::with_capacity(ops.len());
        for op in &ops {
            touched.push(&op.path);
            if let OpKind::Rename(to) = &op.kind {
                touched.push(to);
            }
        }
        for (i, a) in touched.iter().enumerate() {
            for b in &touched[i + 1..] {
                if let Some(at) = paths_overlap(a, b) {
                    let longer = if a.len() >= b.len() { a } else { b };
                    return Err(CommandError::new(
                        CONFLICTING_UPDATE_OPERATORS,
                        format!("Updating the path '{longer}' would create a conflict at '{at}'"),
                    ));
                }
            }
        }
        ops.sort_by(|a, b| {
            let pa = match &a.kind {
                OpKind::Rename(to) => to.as_str(),
                _ => a.path.as_str(),
            };
            let pb = match &b.kind {
                OpKind::Rename(to) => to.as_str(),
                _ => b.path.as_str(),
            };
            cmp_paths(pa, pb)
        });
        Ok(OperatorUpdate { ops })
    }

    fn apply(&self, doc: &Document, is_upsert_insert: bool) -> CommandResult<Document> {
        let mut out = doc.clone();
        for op in &self.ops {
            apply_op(&mut out, op, is_upsert_insert)?;
        }
        Ok(out)
    }
}

fn to_decimal(f: f64) -> Bson {
    match format!("{f:e}")
        .replace('e', "E")
        .parse::<bson::Decimal128>()
    {
        Ok(d) => Bson::Decimal128(d),
        Err(_) => Bson::Double(f),
    }
}

/// `$inc`/`$mul` arithmetic with MongoDB's type promotion: int32 stays int32 until it
/// overflows (then int64), int64 overflowing becomes a double, any double makes a double, any
/// decimal makes a decimal (computed through f64, see `compare.rs`).
fn arith(a: &Bson, b: &Bson, mul: bool) -> Bson {
    let fop = |x: f64, y: f64| if mul { x * y } else { x + y };
    let is_dec = matches!(a, Bson::Decimal128(_)) || matches!(b, Bson::Decimal128(_));
    let (Some(na), Some(nb)) = (as_num(a), as_num(b)) else {
        return a.clone();
    };
    let f = |n: Num| match n {
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    };
    if is_dec {
        return to_decimal(fop(f(na), f(nb)));
    }
    match (a, b, na, nb) {
        (Bson::Int32(x), Bson::Int32(y), _, _) => {
            let r = if mul {
                x.checked_mul(*y)
            } else {
                x.checked_add(*y)
            };
            match r {
                Some(r) => Bson::Int32(r),
                None => arith(
                    &Bson::Int64(i64::from(*x)),
                    &Bson::Int64(i64::from(*y)),
                    mul,
                ),
            }
        }
        (_, _, Num::Int(x), Num::Int(y)) => {
            let r = if mul {
                x.checked_mul(y)
            } else {
                x.checked_add(y)
            };
            match r {
                Some(r) => Bson::Int64(r),
                None => Bson::Double(fop(x as f64, y as f64)),
            }
        }
        _ => Bson::Double(fop(f(na), f(nb))),
    }
}

fn zero_like(v: &Bson) -> Bson {
    match v {
        Bson::Int32(_) => Bson::Int32(0),
        Bson::Int64(_) => Bson::Int64(0),
        Bson::Decimal128(_) => to_decimal(0.0),
        _ => Bson::Double(0.0),
    }
}

fn id_of(doc: &Document) -> String {
    match doc.get("_id") {
        Some(id) => format!("{{_id: {id}}}"),
        None => "{}".to_string(),
    }
}

/// Whether some proper prefix of the path is an array in `doc`.
fn goes_through_array(doc: &Document, path: &str) -> bool {
    let segs = path::split(path);
    (1..segs.len()).any(|n| matches!(path::get_segments(doc, &segs[..n]), Some(Bson::Array(_))))
}

fn array_at<'a>(doc: &'a Document, path: &str, op: &str) -> CommandResult<Option<&'a Vec<Bson>>> {
    match path::get(doc, path) {
        None => Ok(None),
        Some(Bson::Array(a)) => Ok(Some(a)),
        Some(other) => Err(CommandError::bad_value(format!(
            "{op}: the field '{path}' must be an array but is of type {} in document {}",
            type_name(other),
            id_of(doc)
        ))),
    }
}

fn apply_op(doc: &mut Document, op: &FieldOp, is_upsert_insert: bool) -> CommandResult<()> {
    let p = op.path.as_str();
    match &op.kind {
        OpKind::Set(v) => path::set(doc, p, v.clone()),
        OpKind::SetOnInsert(v) => {
            if is_upsert_insert {
                path::set(doc, p, v.clone())
            } else {
                Ok(())
            }
        }
        OpKind::Unset => {
            path::unset(doc, p);
            Ok(())
        }
        OpKind::Inc(n) | OpKind::Mul(n) => {
            let mul = matches!(op.kind, OpKind::Mul(_));
            let new = match path::get(doc, p) {
                None => {
                    if mul {
                        zero_like(n)
                    } else {
                        n.clone()
                    }
                }
                Some(cur) if as_num(cur).is_some() => arith(cur, n, mul),
                Some(cur) => {
                    return Err(CommandError::type_mismatch(format!(
                        "Cannot apply {} to a value of non-numeric type. {} has the field '{p}' of non-numeric type {}",
                        if mul { "$mul" } else { "$inc" },
                        id_of(doc),
                        type_name(cur)
                    )))
                }
            };
            path::set(doc, p, new)
        }
        OpKind::Min(v) | OpKind::Max(v) => {
            let want = if matches!(op.kind, OpKind::Min(_)) {
                Ordering::Less
            } else {
                Ordering::Greater
            };
            match path::get(doc, p) {
                Some(cur) if compare(v, cur) != want => Ok(()),
                _ => path::set(doc, p, v.clone()),
            }
        }
        OpKind::Rename(to) => {
            if goes_through_array(doc, p) {
                return Err(CommandError::bad_value(format!(
                    "The source field cannot be an array element, '{p}' in doc with {} has an array field",
                    id_of(doc)
                )));
            }
            if goes_through_array(doc, to) {
                return Err(CommandError::bad_value(format!(
                    "The destination field cannot be an array element, '{to}' in doc with {} has an array field",
                    id_of(doc)
                )));
            }
            let Some(v) = path::get(doc, p).cloned() else {
                return Ok(());
            };
            path::unset(doc, p);
            path::set(doc, to, v)
        }
        OpKind::Push(spec) => {
            let mut arr = array_at(doc, p, "$push")?.cloned().unwrap_or_default();
            let len = arr.len() as i64;
            let at = match spec.position {
                None => len,
                Some(pos) if pos >= 0 => pos.min(len),
                Some(pos) => (len + pos).max(0),
            } as usize;
            for (i, v) in spec.each.iter().enumerate() {
                arr.insert(at + i, v.clone());
            }
            match &spec.sort {
                Some(PushSort::Whole(asc)) => arr.sort_by(|a, b| {
                    let o = compare(a, b);
                    if *asc {
                        o
                    } else {
                        o.reverse()
                    }
                }),
                Some(PushSort::Fields(s)) => {
                    let empty = Document::new();
                    arr.sort_by(|a, b| {
                        let da = if let Bson::Document(d) = a { d } else { &empty };
                        let db = if let Bson::Document(d) = b { d } else { &empty };
                        s.compare(da, db)
                    })
                }
                None => {}
            }
            if let Some(n) = spec.slice {
                if n >= 0 {
                    arr.truncate(n as usize);
                } else {
                    let keep = n.unsigned_abs() as usize;
                    if arr.len() > keep {
                        arr.drain(..arr.len() - keep);
                    }
                }
            }
            path::set(doc, p, Bson::Array(arr))
        }
        OpKind::AddToSet(values) => {
            let mut arr = array_at(doc, p, "$addToSet")?.cloned().unwrap_or_default();
            for v in values {
                if !arr.iter().any(|e| equal(e, v)) {
                    arr.push(v.clone());
                }
            }
            path::set(doc, p, Bson::Array(arr))
        }
        OpKind::Pull(m) => {
            let Some(arr) = array_at(doc, p, "$pull")? else {
                return Ok(());
            };
            let kept: Vec<Bson> = arr.iter().filter(|e| !m.matches(e)).cloned().collect();
            if kept.len() != arr.len() {
                path::set(doc, p, Bson::Array(kept))?;
            }
            Ok(())
        }
        OpKind::PullAll(values) => {
            let Some(arr) = array_at(doc, p, "$pullAll")? else {
                return Ok(());
            };
            let kept: Vec<Bson> = arr
                .iter()
                .filter(|e| !values.iter().any(|v| equal(e, v)))
                .cloned()
                .collect();
            if kept.len() != arr.len() {
                path::set(doc, p, Bson::Array(kept))?;
            }
            Ok(())
        }
        OpKind::Pop(first) => match path::get(doc, p) {
            None => Ok(()),
            Some(Bson::Array(a)) => {
                let mut a = a.clone();
                if !a.is_empty() {
                    if *first {
                        a.remove(0);
                    } else {
                        a.pop();
                    }
                }
                path::set(doc, p, Bson::Array(a))
            }
            Some(other) => Err(CommandError::type_mismatch(format!(
                "Path '{p}' contains an element of non-array type '{}'",
                type_name(other)
            ))),
        },
        OpKind::CurrentDate(ts) => {
            let now = DateTime::now();
            let v = if *ts {
                Bson::Timestamp(Timestamp {
                    time: u32::try_from(now.timestamp_millis() / 1000).unwrap_or(u32::MAX),
                    increment: 1,
                })
            } else {
                Bson::DateTime(now)
            };
            path::set(doc, p, v)
        }
    }
}

/// Moves `_id` to the front of the document.
fn id_first(doc: Document) -> Document {
    match doc.keys().next() {
        Some(k) if k == "_id" => doc,
        _ => {
            let mut doc = doc;
            match doc.remove("_id") {
                None => doc,
                Some(id) => {
                    let mut out = Document::new();
                    out.insert("_id", id);
                    out.extend(doc);
                    out
                }
            }
        }
    }
}

/// A replacement (or pipeline result) keeps the original `_id` when it has none, and may not
/// change it.
fn finish_replacement(
    old: &Document,
    mut new: Document,
    is_upsert_insert: bool,
) -> CommandResult<Document> {
    match (old.get("_id"), new.get("_id")) {
        (Some(old_id), None) => {
            new.insert("_id", old_id.clone());
        }
        (Some(old_id), Some(new_id)) if !is_upsert_insert && !equal(old_id, new_id) => {
            return Err(CommandError::new(
                codes::IMMUTABLE_FIELD,
                format!(
                    "After applying the update, the (immutable) field '_id' was found to have been altered to _id: {new_id}"
                ),
            ))
        }
        _ => {}
    }
    Ok(id_first(new))
}

impl Update {
    /// Parses the `u` of an update statement (or `update` of `findAndModify`).
    pub fn parse(u: &Bson) -> CommandResult<Update> {
        match u {
            Bson::Document(d) => {
                if d.keys().next().is_some_and(|k| k.starts_with('$')) {
                    Ok(Update::Operators(OperatorUpdate::parse(d)?))
                } else {
                    if let Some(k) = d.keys().find(|k| k.starts_with('$')) {
                        return Err(CommandError::new(
                            codes::DOLLAR_PREFIXED_FIELD_NAME,
                            format!("The dollar ($) prefixed field '{k}' in '{k}' is not allowed in the context of an update's replacement document. Consider using an aggregation pipeline with $replaceWith."),
                        ));
                    }
                    Ok(Update::Replacement(d.clone()))
                }
            }
            Bson::Array(stages) => {
                let mut out = Vec::with_capacity(stages.len());
                for s in stages {
                    let Bson::Document(sd) = s else {
                        return Err(CommandError::type_mismatch(
                            "Each element of the 'pipeline' array must be an object",
                        ));
                    };
                    let stage = Stage::parse(sd)?;
                    if !stage.allowed_in_update() {
                        return Err(CommandError::new(
                            codes::INVALID_OPTIONS,
                            format!(
                                "{} is not allowed to be used within an update",
                                sd.keys().next().cloned().unwrap_or_default()
                            ),
                        ));
                    }
                    out.push(stage);
                }
                Ok(Update::Pipeline(out))
            }
            other => Err(CommandError::failed_to_parse(format!(
                "Update argument must be either an object or an array, not {}",
                type_name(other)
            ))),
        }
    }

    /// Whether this is a replacement document.
    pub fn is_replacement(&self) -> bool {
        matches!(self, Update::Replacement(_))
    }

    /// The new version of `doc`. `is_upsert_insert` is true when `doc` is the seed of an upsert
    /// that inserts: `$setOnInsert` then applies and `_id` may be set.
    pub fn apply(&self, doc: &Document, is_upsert_insert: bool) -> CommandResult<Document> {
        match self {
            Update::Replacement(r) => finish_replacement(doc, r.clone(), is_upsert_insert),
            Update::Pipeline(stages) => {
                let mut cur = doc.clone();
                for s in stages {
                    cur = s.apply_one(cur)?.unwrap_or_default();
                }
                finish_replacement(doc, cur, is_upsert_insert)
            }
            Update::Operators(ops) => {
                let new = ops.apply(doc, is_upsert_insert)?;
                if !is_upsert_insert {
                    if let Some(old_id) = doc.get("_id") {
                        let same = new.get("_id").is_some_and(|n| equal(n, old_id));
                        if !same {
                            return Err(CommandError::new(
                                codes::IMMUTABLE_FIELD,
                                "Performing an update on the path '_id' would modify the immutable field '_id'",
                            ));
                        }
                    }
                }
                Ok(id_first(new))
            }
        }
    }
}

fn seed_from(filter: &Document, out: &mut Document) {
    for (k, v) in filter {
        if k == "$and" {
            if let Bson::Array(items) = v {
                for item in items {
                    if let Bson::Document(d) = item {
                        seed_from(d, out);
                    }
                }
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let value = match v {
            Bson::Document(d) if d.keys().next().is_some_and(|f| f.starts_with('$')) => {
                if let Some(eq) = d.get("$eq") {
                    Some(eq.clone())
                } else {
                    match d.get("$in") {
                        Some(Bson::Array(a)) if a.len() == 1 => Some(a[0].clone()),
                        _ => None,
                    }
                }
            }
            Bson::RegularExpression(_) => None,
            other => Some(other.clone()),
        };
        if let Some(v) = value {
            if matches!(v, Bson::RegularExpression(_)) {
                continue;
            }
            // A filter whose equalities collide (`{a: 1, "a.b": 2}`) cannot seed both; the
            // first one wins.
            let _ = path::set(out, k, v);
        }
    }
}

/// The base document of an upsert that inserts: the filter's equality conditions (top-level
/// and dotted fields, `$eq`, single-value `$in`, and those inside `$and`), `_id` first.
pub fn upsert_seed(filter: &Document) -> Document {
    let mut out = Document::new();
    seed_from(filter, &mut out);
    id_first(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn upd(u: Document, d: Document) -> CommandResult<Document> {
        Update::parse(&Bson::Document(u))?.apply(&d, false)
    }

    fn parse_err(u: Bson) -> i32 {
        Update::parse(&u).unwrap_err().code
    }

    #[test]
    fn set_unset_and_order() {
        let d = doc! {"_id": 1, "a": 1, "s": {"x": 1}};
        assert_eq!(
            upd(
                doc! {"$set": {"z": 1, "b": 2, "s.y": 3}, "$unset": {"a": ""}},
                d.clone()
            )
            .unwrap(),
            doc! {"_id": 1, "s": {"x": 1, "y": 3}, "b": 2, "z": 1}
        );
        assert_eq!(
            upd(doc! {"$set": {"a.b": 1}}, d.clone()).unwrap_err().code,
            28
        );
        assert_eq!(upd(doc! {"$set": {}}, d.clone()).unwrap(), d);
    }

    #[test]
    fn inc_and_mul() {
        let d = doc! {"_id": 1, "i": 1, "l": 5i64, "f": 1.5, "s": "x", "big": i32::MAX};
        let r = upd(
            doc! {"$inc": {"i": 2, "l": 1, "f": 1, "n": 3, "big": 1}},
            d.clone(),
        )
        .unwrap();
        assert_eq!(r.get("i"), Some(&Bson::Int32(3)));
        assert_eq!(r.get("l"), Some(&Bson::Int64(6)));
        assert_eq!(r.get("f"), Some(&Bson::Double(2.5)));
        assert_eq!(r.get("n"), Some(&Bson::Int32(3)));
        assert_eq!(r.get("big"), Some(&Bson::Int64(i64::from(i32::MAX) + 1)));
        let r = upd(doc! {"$inc": {"i": 0.5}}, d.clone()).unwrap();
        assert_eq!(r.get("i"), Some(&Bson::Double(1.5)));
        assert_eq!(
            upd(doc! {"$inc": {"s": 1}}, d.clone()).unwrap_err().code,
            14
        );
        assert_eq!(parse_err(Bson::Document(doc! {"$inc": {"i": "1"}})), 14);
        let r = upd(doc! {"$mul": {"l": 2, "m": 5i64, "f": 2}}, d.clone()).unwrap();
        assert_eq!(r.get("l"), Some(&Bson::Int64(10)));
        assert_eq!(r.get("m"), Some(&Bson::Int64(0)));
        assert_eq!(r.get("f"), Some(&Bson::Double(3.0)));
        let r = upd(
            doc! {"$inc": {"i": bson::Decimal128::from_bytes([0; 16])}},
            d,
        )
        .unwrap();
        assert!(matches!(r.get("i"), Some(Bson::Decimal128(_))));
    }

    #[test]
    fn min_max_rename() {
        let d = doc! {"_id": 1, "a": 5, "b": {"c": 1}, "arr": [{"x": 1}]};
        let r = upd(
            doc! {"$min": {"a": 3, "n": 1}, "$max": {"b.c": 0}},
            d.clone(),
        )
        .unwrap();
        assert_eq!(r.get("a"), Some(&Bson::Int32(3)));
        assert_eq!(r.get("n"), Some(&Bson::Int32(1)));
        assert_eq!(path::get(&r, "b.c"), Some(&Bson::Int32(1)));
        let r = upd(doc! {"$max": {"a": "str"}}, d.clone()).unwrap();
        assert_eq!(r.get("a"), Some(&Bson::String("str".into())));
        let r = upd(
            doc! {"$rename": {"a": "z", "b.c": "b.d", "nope": "q"}},
            d.clone(),
        )
        .unwrap();
        assert_eq!(r, doc! {"_id": 1, "b": {"d": 1}, "arr": [{"x": 1}], "z": 5});
        assert_eq!(
            upd(doc! {"$rename": {"arr.0.x": "y"}}, d.clone())
                .unwrap_err()
                .code,
            2
        );
        assert_eq!(parse_err(Bson::Document(doc! {"$rename": {"a": 1}})), 2);
        assert_eq!(parse_err(Bson::Document(doc! {"$rename": {"a": "a.b"}})), 2);
    }

    #[test]
    fn arrays() {
        let d = doc! {"_id": 1, "arr": [3, 1], "n": 1, "docs": [{"s": 8, "i": "A"}, {"s": 9, "i": "B"}]};
        let r = upd(doc! {"$push": {"arr": 2, "new": "x"}}, d.clone()).unwrap();
        assert_eq!(
            r.get("arr"),
            Some(&Bson::Array(vec![3.into(), 1.into(), 2.into()]))
        );
        assert_eq!(r.get("new"), Some(&Bson::Array(vec!["x".into()])));
        let r = upd(
            doc! {"$push": {"arr": {"$each": [5, 0], "$sort": 1, "$slice": -3}}},
            d.clone(),
        )
        .unwrap();
        assert_eq!(
            r.get("arr"),
            Some(&Bson::Array(vec![1.into(), 3.into(), 5.into()]))
        );
        let r = upd(
            doc! {"$push": {"arr": {"$each": [9], "$position": 0}}},
            d.clone(),
        )
        .unwrap();
        assert_eq!(
            r.get("arr"),
            Some(&Bson::Array(vec![9.into(), 3.into(), 1.into()]))
        );
        let r = upd(
            doc! {"$push": {"docs": {"$each": [], "$sort": {"s": -1}}}},
            d.clone(),
        )
        .unwrap();
        assert_eq!(path::get(&r, "docs.0.s"), Some(&Bson::Int32(9)));
        assert_eq!(
            upd(doc! {"$push": {"n": 1}}, d.clone()).unwrap_err().code,
            2
        );
        assert_eq!(
            parse_err(Bson::Document(doc! {"$push": {"a": {"$each": 1}}})),
            2
        );
        assert_eq!(
            parse_err(Bson::Document(
                doc! {"$push": {"a": {"$each": [], "$bad": 1}}}
            )),
            2
        );
        let r = upd(doc! {"$addToSet": {"arr": {"$each": [1, 4, 4]}}}, d.clone()).unwrap();
        assert_eq!(
            r.get("arr"),
            Some(&Bson::Array(vec![3.into(), 1.into(), 4.into()]))
        );
        let r = upd(doc! {"$addToSet": {"arr": 1.0}}, d.clone()).unwrap();
        assert_eq!(r.get("arr"), Some(&Bson::Array(vec![3.into(), 1.into()])));
        let r = upd(
            doc! {"$pull": {"arr": {"$gte": 2}, "docs": {"s": 8}}},
            d.clone(),
        )
        .unwrap();
        assert_eq!(r.get("arr"), Some(&Bson::Array(vec![1.into()])));
        assert_eq!(
            r.get("docs"),
            Some(&Bson::Array(vec![Bson::Document(doc! {"s": 9, "i": "B"})]))
        );
        let r = upd(doc! {"$pullAll": {"arr": [3, 7]}}, d.clone()).unwrap();
        assert_eq!(r.get("arr"), Some(&Bson::Array(vec![1.into()])));
        let r = upd(doc! {"$pop": {"arr": -1, "missing": 1}}, d.clone()).unwrap();
        assert_eq!(r.get("arr"), Some(&Bson::Array(vec![1.into()])));
        assert!(!r.contains_key("missing"));
        assert_eq!(
            upd(doc! {"$pop": {"n": 1}}, d.clone()).unwrap_err().code,
            14
        );
        assert_eq!(parse_err(Bson::Document(doc! {"$pop": {"arr": 2}})), 9);
    }

    #[test]
    fn decimal_arithmetic() {
        let two: bson::Decimal128 = "2.5".parse().unwrap();
        let r = upd(doc! {"$inc": {"d": 1}}, doc! {"_id": 1, "d": two}).unwrap();
        let d = match r.get("d") {
            Some(Bson::Decimal128(d)) => crate::query::compare::decimal_to_f64(d),
            _ => f64::NAN,
        };
        assert_eq!(d, 3.5);
    }

    #[test]
    fn array_elements_by_index() {
        let d = doc! {"_id": 1, "arr": [1, 2, 3], "docs": [{"a": 1}]};
        let r = upd(
            doc! {"$set": {"arr.1": 9, "docs.0.b": 2}, "$unset": {"arr.2": 1}},
            d,
        )
        .unwrap();
        assert_eq!(
            r,
            doc! {"_id": 1, "arr": [1, 9, Bson::Null], "docs": [{"a": 1, "b": 2}]}
        );
    }

    #[test]
    fn current_date() {
        let r = upd(
            doc! {"$currentDate": {"d": true, "t": {"$type": "timestamp"}}},
            doc! {"_id": 1},
        )
        .unwrap();
        assert!(matches!(r.get("d"), Some(Bson::DateTime(_))));
        assert!(matches!(r.get("t"), Some(Bson::Timestamp(_))));
        assert_eq!(
            parse_err(Bson::Document(doc! {"$currentDate": {"d": {"$type": "x"}}})),
            2
        );
    }

    #[test]
    fn parse_errors() {
        assert_eq!(parse_err(Bson::Document(doc! {"$foo": {"a": 1}})), 9);
        assert_eq!(parse_err(Bson::Document(doc! {"$set": 1})), 9);
        assert_eq!(
            parse_err(Bson::Document(doc! {"$set": {"a": 1}, "b": 1})),
            9
        );
        assert_eq!(
            parse_err(Bson::Document(doc! {"$set": {"a": 1}, "$inc": {"a": 1}})),
            40
        );
        assert_eq!(
            parse_err(Bson::Document(doc! {"$set": {"a.b": 1, "a": 1}})),
            40
        );
        assert_eq!(
            parse_err(Bson::Document(
                doc! {"$set": {"a": 1}, "$rename": {"b": "a"}}
            )),
            40
        );
        assert!(Update::parse(&Bson::Document(doc! {"$set": {"ab": 1, "a": 1}})).is_ok());
        assert_eq!(parse_err(Bson::Document(doc! {"$set": {"a..b": 1}})), 56);
        assert_eq!(parse_err(Bson::Document(doc! {"$set": {"a.$": 1}})), 2);
        assert_eq!(parse_err(Bson::Int32(1)), 9);
    }

    #[test]
    fn id_is_immutable() {
        let d = doc! {"_id": 1, "a": 1};
        assert_eq!(
            upd(doc! {"$set": {"_id": 2}}, d.clone()).unwrap_err().code,
            66
        );
        assert_eq!(
            upd(doc! {"$unset": {"_id": 1}}, d.clone())
                .unwrap_err()
                .code,
            66
        );
        assert!(upd(doc! {"$set": {"_id": 1}}, d.clone()).is_ok());
        assert_eq!(
            upd(doc! {"_id": 2, "b": 1}, d.clone()).unwrap_err().code,
            66
        );
        let d2 = doc! {"_id": {"k": 1}};
        assert_eq!(upd(doc! {"$set": {"_id.k": 2}}, d2).unwrap_err().code, 66);
        // but an upsert's insert may set it
        let u = Update::parse(&Bson::Document(doc! {"$setOnInsert": {"_id": 5}})).unwrap();
        assert_eq!(u.apply(&doc! {}, true).unwrap(), doc! {"_id": 5});
        assert_eq!(u.apply(&d, false).unwrap(), d);
    }

    #[test]
    fn replacement_keeps_id_first() {
        let d = doc! {"_id": 1, "a": 1};
        assert_eq!(
            upd(doc! {"b": 2}, d.clone()).unwrap(),
            doc! {"_id": 1, "b": 2}
        );
        assert_eq!(
            upd(doc! {"b": 2, "_id": 1}, d.clone()).unwrap(),
            doc! {"_id": 1, "b": 2}
        );
        assert!(Update::parse(&Bson::Document(doc! {"b": 1}))
            .unwrap()
            .is_replacement());
        assert_eq!(upd(doc! {}, d).unwrap(), doc! {"_id": 1});
    }

    #[test]
    fn set_on_insert_and_id_first() {
        let u = Update::parse(&Bson::Document(
            doc! {"$set": {"a": 1}, "$setOnInsert": {"b": 2}},
        ))
        .unwrap();
        let seed = upsert_seed(&doc! {"x": 1, "_id": 7});
        assert_eq!(
            u.apply(&seed, true).unwrap(),
            doc! {"_id": 7, "x": 1, "a": 1, "b": 2}
        );
        assert_eq!(
            u.apply(&doc! {"_id": 1}, false).unwrap(),
            doc! {"_id": 1, "a": 1}
        );
    }

    #[test]
    fn pipeline_updates() {
        let u = Update::parse(&Bson::Array(vec![
            Bson::Document(doc! {"$set": {"b": "$a", "c": "lit"}}),
            Bson::Document(doc! {"$unset": "a"}),
        ]))
        .unwrap();
        assert_eq!(
            u.apply(&doc! {"_id": 1, "a": 5}, false).unwrap(),
            doc! {"_id": 1, "b": 5, "c": "lit"}
        );
        let u = Update::parse(&Bson::Array(vec![Bson::Document(
            doc! {"$replaceWith": {"x": 1}},
        )]))
        .unwrap();
        assert_eq!(
            u.apply(&doc! {"_id": 1, "a": 5}, false).unwrap(),
            doc! {"_id": 1, "x": 1}
        );
        assert_eq!(
            parse_err(Bson::Array(vec![Bson::Document(doc! {"$match": {}})])),
            72
        );
        assert_eq!(
            parse_err(Bson::Array(vec![Bson::Document(doc! {"$bogus": {}})])),
            40324
        );
    }

    #[test]
    fn seeds() {
        assert_eq!(
            upsert_seed(&doc! {
                "a": 1,
                "b.c": "x",
                "d": {"$eq": 2},
                "e": {"$gt": 1},
                "f": {"$in": [3]},
                "$and": [{"g": 4}, {"h": {"$lt": 2}}],
                "$or": [{"i": 1}],
                "r": bson::Regex { pattern: "x".into(), options: String::new() },
                "_id": 9,
            }),
            doc! {"_id": 9, "a": 1, "b": {"c": "x"}, "d": 2, "f": 3, "g": 4}
        );
    }
}
