//! Query filters (`find`, `$match`, update/delete selectors, change-stream `$match`).
//!
//! A filter is parsed once into a small predicate tree ([`Filter::parse`]) that rejects
//! malformed input up front with MongoDB's error codes, and is then evaluated cheaply and
//! infallibly per document ([`Filter::matches`]); change streams run the same filter on every
//! event, so no parsing or regex compilation happens at evaluation time.
//!
//! Semantics follow MongoDB 7.0:
//! * each operator of a field is evaluated on its own over every value the path reaches
//!   (see `path.rs`), so `{a: {$gt: 1, $lt: 5}}` matches `{a: [0, 10]}` — that is what
//!   `$elemMatch` exists for;
//! * an array at the end of a path is tested both as a whole and element by element
//!   (`{tags: "x"}` matches `{tags: ["x", "y"]}`; `{tags: ["x", "y"]}` matches it too), except
//!   for `$size` and `$elemMatch`, which look at the array only;
//! * `null` equality (and `$in` with null, `$gte`/`$lte` null) also matches a missing field;
//! * comparison operators are type-bracketed: `{$gt: 5}` only considers numbers, except that
//!   comparisons with `MinKey`/`MaxKey` cross types;
//! * `$ne`, `$nin`, `$not` and `$exists: false` are the negation of the positive predicate over
//!   the whole path, so they match documents where the field is missing.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::compare::{as_num, compare, equal, type_rank, Num};
use super::path::{for_each_match_value, split};
use crate::error::{CommandError, CommandResult};

/// `Location51091`: a regular expression that does not compile.
const INVALID_REGEX: i32 = 51091;
/// `Location51108`: an unknown regex option letter.
const INVALID_REGEX_OPTION: i32 = 51108;

/// A parsed query filter.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Node,
}

impl Default for Filter {
    /// The empty filter, which matches every document.
    fn default() -> Self {
        Filter {
            root: Node::And(Vec::new()),
        }
    }
}

impl Filter {
    /// Parses and validates a filter document.
    pub fn parse(filter: &Document) -> CommandResult<Filter> {
        Ok(Filter {
            root: parse_document(filter)?,
        })
    }

    /// Whether the document satisfies the filter.
    pub fn matches(&self, doc: &Document) -> bool {
        self.root.eval_doc(doc)
    }

    /// Whether the filter is empty (matches everything without looking at the document).
    pub fn is_match_all(&self) -> bool {
        matches!(&self.root, Node::And(v) if v.is_empty())
    }
}

/// A condition on a single array element, as `$pull` uses it: a document of operators
/// (`{$gte: 6}`) applies to the element itself, any other document is a query on subdocument
/// elements (`{score: 8}`), a regex matches strings, and anything else is equality.
#[derive(Debug, Clone)]
pub struct ElementMatcher {
    node: Node,
}

impl ElementMatcher {
    pub fn parse(cond: &Bson) -> CommandResult<ElementMatcher> {
        let node = match cond {
            Bson::Document(d) if is_value_operator_doc(d) => {
                and_of(parse_operators(d, &|c| Node::Value(c))?)
            }
            Bson::Document(d) => Node::Value(Cond::ElemObj(Box::new(parse_document(d)?))),
            Bson::RegularExpression(r) => {
                Node::Value(Cond::Regex(RegexCond::new(&r.pattern, &r.options)?))
            }
            other => Node::Value(Cond::Eq(other.clone())),
        };
        Ok(ElementMatcher { node })
    }

    pub fn matches(&self, v: &Bson) -> bool {
        self.node.eval_value(v)
    }
}

#[derive(Debug, Clone)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Nor(Vec<Node>),
    Not(Box<Node>),
    /// A condition on every value a dotted path reaches in a document.
    Path {
        segs: Vec<String>,
        cond: Cond,
    },
    /// A condition on a value itself (inside `$elemMatch` value form and `$pull`).
    Value(Cond),
    /// Matches nothing (`$all: []`).
    False,
}

impl Node {
    fn eval_doc(&self, doc: &Document) -> bool {
        match self {
            Node::And(v) => v.iter().all(|n| n.eval_doc(doc)),
            Node::Or(v) => v.iter().any(|n| n.eval_doc(doc)),
            Node::Nor(v) => !v.iter().any(|n| n.eval_doc(doc)),
            Node::Not(n) => !n.eval_doc(doc),
            Node::Path { segs, cond } => for_each_match_value(doc, segs, &mut |v| match v {
                None => cond.matches_missing(),
                Some(v) => {
                    cond.matches_value(v)
                        || (cond.expands_arrays()
                            && matches!(v, Bson::Array(a) if a.iter().any(|e| cond.matches_value(e))))
                }
            }),
            // A value condition against a whole document: only reachable through misuse.
            Node::Value(c) => c.matches_value(&Bson::Document(doc.clone())),
            Node::False => false,
        }
    }

    fn eval_value(&self, v: &Bson) -> bool {
        match self {
            Node::And(n) => n.iter().all(|n| n.eval_value(v)),
            Node::Or(n) => n.iter().any(|n| n.eval_value(v)),
            Node::Nor(n) => !n.iter().any(|n| n.eval_value(v)),
            Node::Not(n) => !n.eval_value(v),
            Node::Value(c) => c.matches_value(v),
            Node::Path { .. } => match v {
                Bson::Document(d) => self.eval_doc(d),
                _ => false,
            },
            Node::False => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl CmpOp {
    fn accepts(self, o: Ordering) -> bool {
        match self {
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Gte => o != Ordering::Less,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Lte => o != Ordering::Greater,
        }
    }
}

/// A compiled regular expression plus its source, kept so that a stored BSON regex equal to
/// the query's regex also matches (as MongoDB does).
#[derive(Debug, Clone)]
struct RegexCond {
    re: regex::Regex,
    pattern: String,
    options: String,
}

impl RegexCond {
    /// Translates MongoDB (PCRE) options to the `regex` crate's inline flags. The `regex`
    /// crate lacks look-around and back-references; such patterns are rejected as invalid.
    fn new(pattern: &str, options: &str) -> CommandResult<RegexCond> {
        let mut flags = String::new();
        for c in options.chars() {
            match c {
                'i' | 'm' | 's' | 'x' => flags.push(c),
                // PCRE's UTF-8 mode: always on in Rust.
                'u' => {}
                other => {
                    return Err(CommandError::new(
                        INVALID_REGEX_OPTION,
                        format!("invalid flag in regex options: {other}"),
                    ))
                }
            }
        }
        let source = if flags.is_empty() {
            pattern.to_string()
        } else {
            format!("(?{flags}){pattern}")
        };
        let re = regex::Regex::new(&source).map_err(|e| {
            CommandError::new(INVALID_REGEX, format!("Regular expression is invalid: {e}"))
        })?;
        Ok(RegexCond {
            re,
            pattern: pattern.to_string(),
            options: options.to_string(),
        })
    }

    fn matches(&self, v: &Bson) -> bool {
        match v {
            Bson::String(s) | Bson::Symbol(s) => self.re.is_match(s),
            Bson::RegularExpression(r) => r.pattern == self.pattern && r.options == self.options,
            _ => false,
        }
    }
}

/// A `$type` selector: a BSON type number, or the `"number"` alias.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TypeSel {
    Code(i32),
    Number,
}

fn bson_type_code(v: &Bson) -> i32 {
    match v {
        Bson::Double(_) => 1,
        Bson::String(_) => 2,
        Bson::Document(_) => 3,
        Bson::Array(_) => 4,
        Bson::Binary(_) => 5,
        Bson::Undefined => 6,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        Bson::Null => 10,
        Bson::RegularExpression(_) => 11,
        Bson::DbPointer(_) => 12,
        Bson::JavaScriptCode(_) => 13,
        Bson::Symbol(_) => 14,
        Bson::JavaScriptCodeWithScope(_) => 15,
        Bson::Int32(_) => 16,
        Bson::Timestamp(_) => 17,
        Bson::Int64(_) => 18,
        Bson::Decimal128(_) => 19,
        Bson::MinKey => -1,
        Bson::MaxKey => 127,
    }
}

fn type_alias(name: &str) -> Option<TypeSel> {
    let code = match name {
        "number" => return Some(TypeSel::Number),
        "double" => 1,
        "string" => 2,
        "object" => 3,
        "array" => 4,
        "binData" => 5,
        "undefined" => 6,
        "objectId" => 7,
        "bool" => 8,
        "date" => 9,
        "null" => 10,
        "regex" => 11,
        "dbPointer" => 12,
        "javascript" => 13,
        "symbol" => 14,
        "javascriptWithScope" => 15,
        "int" => 16,
        "timestamp" => 17,
        "long" => 18,
        "decimal" => 19,
        "minKey" => -1,
        "maxKey" => 127,
        _ => return None,
    };
    Some(TypeSel::Code(code))
}

#[derive(Debug, Clone)]
enum Cond {
    Eq(Bson),
    Cmp(CmpOp, Bson),
    In {
        values: Vec<Bson>,
        regexes: Vec<RegexCond>,
        has_null: bool,
    },
    Exists,
    Regex(RegexCond),
    Size(usize),
    Type(Vec<TypeSel>),
    Mod(i64, i64),
    /// `$elemMatch` with a query on subdocument elements.
    ElemMatchObj(Box<Node>),
    /// `$elemMatch` with operators applied to each element itself.
    ElemMatchValue(Box<Node>),
    /// The value is a document (or array) matching the query: `$pull`'s object form.
    ElemObj(Box<Node>),
}

fn array_as_document(a: &[Bson]) -> Document {
    a.iter()
        .enumerate()
        .map(|(i, v)| (i.to_string(), v.clone()))
        .collect()
}

fn object_matches(node: &Node, v: &Bson) -> bool {
    match v {
        Bson::Document(d) => node.eval_doc(d),
        Bson::Array(a) => node.eval_doc(&array_as_document(a)),
        _ => false,
    }
}

impl Cond {
    fn matches_missing(&self) -> bool {
        match self {
            Cond::Eq(v) => matches!(v, Bson::Null | Bson::Undefined),
            Cond::In { has_null, .. } => *has_null,
            Cond::Cmp(op, v) => match v {
                Bson::Null | Bson::Undefined => matches!(op, CmpOp::Gte | CmpOp::Lte),
                Bson::MinKey | Bson::MaxKey => op.accepts(compare(&Bson::Null, v)),
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether an array value is also tested element by element.
    fn expands_arrays(&self) -> bool {
        !matches!(
            self,
            Cond::Size(_) | Cond::ElemMatchObj(_) | Cond::ElemMatchValue(_) | Cond::Exists
        )
    }

    fn matches_value(&self, v: &Bson) -> bool {
        match self {
            Cond::Eq(rhs) => equal(v, rhs),
            Cond::Cmp(op, rhs) => {
                let cross_type = matches!(rhs, Bson::MinKey | Bson::MaxKey);
                (cross_type || type_rank(v) == type_rank(rhs)) && op.accepts(compare(v, rhs))
            }
            Cond::In {
                values, regexes, ..
            } => values.iter().any(|x| equal(v, x)) || regexes.iter().any(|r| r.matches(v)),
            Cond::Exists => true,
            Cond::Regex(r) => r.matches(v),
            Cond::Size(n) => matches!(v, Bson::Array(a) if a.len() == *n),
            Cond::Type(types) => {
                let code = bson_type_code(v);
                types.iter().any(|t| match t {
                    TypeSel::Number => as_num(v).is_some(),
                    TypeSel::Code(c) => *c == code,
                })
            }
            Cond::Mod(div, rem) => match as_num(v) {
                Some(Num::Int(i)) => i.wrapping_rem(*div) == *rem,
                Some(Num::Float(f)) if f.is_finite() => {
                    (f.trunc() as i64).wrapping_rem(*div) == *rem
                }
                _ => false,
            },
            Cond::ElemMatchObj(node) => match v {
                Bson::Array(a) => a.iter().any(|e| object_matches(node, e)),
                _ => false,
            },
            Cond::ElemMatchValue(node) => match v {
                Bson::Array(a) => a.iter().any(|e| node.eval_value(e)),
                _ => false,
            },
            Cond::ElemObj(node) => object_matches(node, v),
        }
    }
}

fn and_of(mut nodes: Vec<Node>) -> Node {
    if nodes.len() == 1 {
        nodes.pop().unwrap_or(Node::And(Vec::new()))
    } else {
        Node::And(nodes)
    }
}

/// The top-level keys that make an `$elemMatch`/`$pull` document a query on subdocuments
/// rather than operators on the element itself.
fn is_value_operator_doc(d: &Document) -> bool {
    match d.keys().next() {
        Some(k) => {
            k.starts_with('$')
                && !matches!(
                    k.as_str(),
                    "$and" | "$or" | "$nor" | "$where" | "$expr" | "$text" | "$comment"
                )
        }
        None => false,
    }
}

fn parse_document(d: &Document) -> CommandResult<Node> {
    let mut nodes = Vec::with_capacity(d.len());
    for (k, v) in d {
        if let Some(op) = k.strip_prefix('$') {
            match op {
                "and" | "or" | "nor" => {
                    let children = parse_logical(k, v)?;
                    nodes.push(match op {
                        "and" => Node::And(children),
                        "or" => Node::Or(children),
                        _ => Node::Nor(children),
                    });
                }
                "comment" => {}
                "expr" | "where" | "text" | "jsonSchema" | "sampleRate" => {
                    return Err(CommandError::bad_value(format!(
                        "{k} is not supported by mongo-sim"
                    )))
                }
                _ => {
                    return Err(CommandError::bad_value(format!(
                        "unknown top level operator: {k}. If you have a field name that starts with a '$' symbol, consider using $getField or $setField."
                    )))
                }
            }
        } else {
            nodes.push(parse_field(k, v)?);
        }
    }
    Ok(and_of(nodes))
}

fn parse_logical(name: &str, v: &Bson) -> CommandResult<Vec<Node>> {
    let Bson::Array(items) = v else {
        return Err(CommandError::bad_value(format!("{name} must be an array")));
    };
    if items.is_empty() {
        return Err(CommandError::bad_value(format!(
            "{name} must be a nonempty array"
        )));
    }
    items
        .iter()
        .map(|item| match item {
            Bson::Document(d) => parse_document(d),
            _ => Err(CommandError::bad_value(format!(
                "{name} argument's entries must be objects"
            ))),
        })
        .collect()
}

fn is_operator_doc(d: &Document) -> bool {
    d.keys().next().is_some_and(|k| k.starts_with('$')) && !is_dbref(d)
}

fn is_dbref(d: &Document) -> bool {
    d.keys().next().is_some_and(|k| k == "$ref") && d.contains_key("$id")
}

fn parse_field(path: &str, v: &Bson) -> CommandResult<Node> {
    let segs: Vec<String> = split(path).into_iter().map(str::to_string).collect();
    let mk = |cond: Cond| Node::Path {
        segs: segs.clone(),
        cond,
    };
    match v {
        Bson::Document(d) if is_operator_doc(d) => Ok(and_of(parse_operators(d, &mk)?)),
        Bson::RegularExpression(r) => Ok(mk(Cond::Regex(RegexCond::new(&r.pattern, &r.options)?))),
        other => Ok(mk(Cond::Eq(other.clone()))),
    }
}

fn as_integral(v: &Bson) -> Option<f64> {
    match as_num(v)? {
        Num::Int(i) => Some(i as f64),
        Num::Float(f) => Some(f),
    }
}

fn truthy(v: &Bson) -> bool {
    match v {
        Bson::Boolean(b) => *b,
        Bson::Null | Bson::Undefined => false,
        other => match as_num(other) {
            Some(Num::Int(i)) => i != 0,
            Some(Num::Float(f)) => f != 0.0,
            None => true,
        },
    }
}

fn no_regex(op: &str, v: &Bson) -> CommandResult<()> {
    if matches!(v, Bson::RegularExpression(_)) {
        return Err(CommandError::bad_value(format!(
            "Can't have RegEx as arg to {op}."
        )));
    }
    Ok(())
}

fn parse_in_list(op: &str, v: &Bson) -> CommandResult<Cond> {
    let Bson::Array(items) = v else {
        return Err(CommandError::bad_value(format!("{op} needs an array")));
    };
    let mut values = Vec::new();
    let mut regexes = Vec::new();
    let mut has_null = false;
    for item in items {
        match item {
            Bson::RegularExpression(r) => regexes.push(RegexCond::new(&r.pattern, &r.options)?),
            Bson::Document(d) if is_operator_doc(d) => {
                return Err(CommandError::bad_value(format!("cannot nest $ under {op}")))
            }
            other => {
                has_null |= matches!(other, Bson::Null | Bson::Undefined);
                values.push(other.clone());
            }
        }
    }
    Ok(Cond::In {
        values,
        regexes,
        has_null,
    })
}

fn parse_type(v: &Bson) -> CommandResult<Vec<TypeSel>> {
    let one = |v: &Bson| -> CommandResult<TypeSel> {
        match v {
            Bson::String(s) => type_alias(s)
                .ok_or_else(|| CommandError::bad_value(format!("Unknown type name alias: {s}"))),
            other => match as_integral(other) {
                Some(f) if f.fract() == 0.0 => {
                    let code = f as i32;
                    if (1..=19).contains(&code) || code == -1 || code == 127 {
                        Ok(TypeSel::Code(code))
                    } else {
                        Err(CommandError::bad_value(format!(
                            "Invalid numerical type code: {f}"
                        )))
                    }
                }
                _ => Err(CommandError::type_mismatch(
                    "type must be represented as a number or a string",
                )),
            },
        }
    };
    match v {
        Bson::Array(items) => {
            if items.is_empty() {
                return Err(CommandError::bad_value(
                    "$type must match at least one type",
                ));
            }
            items.iter().map(one).collect()
        }
        other => Ok(vec![one(other)?]),
    }
}

fn parse_size(v: &Bson) -> CommandResult<usize> {
    let Some(f) = as_integral(v) else {
        return Err(CommandError::bad_value("$size needs a number"));
    };
    if f.fract() != 0.0 || f.is_nan() {
        return Err(CommandError::bad_value(
            "Failed to parse $size. Expected an integer",
        ));
    }
    if f < 0.0 {
        return Err(CommandError::bad_value(
            "Failed to parse $size. Expected a non-negative number",
        ));
    }
    Ok(f as usize)
}

fn parse_mod(v: &Bson) -> CommandResult<Cond> {
    let Bson::Array(items) = v else {
        return Err(CommandError::bad_value(
            "malformed mod, needs to be an array",
        ));
    };
    if items.len() < 2 {
        return Err(CommandError::bad_value(
            "malformed mod, not enough elements",
        ));
    }
    if items.len() > 2 {
        return Err(CommandError::bad_value("malformed mod, too many elements"));
    }
    let num = |b: &Bson, what: &str| -> CommandResult<i64> {
        match as_integral(b) {
            Some(f) if f.is_finite() => Ok(f.trunc() as i64),
            _ => Err(CommandError::bad_value(format!(
                "malformed mod, {what} not a number"
            ))),
        }
    };
    let div = num(&items[0], "divisor")?;
    let rem = num(&items[1], "remainder")?;
    if div == 0 {
        return Err(CommandError::bad_value("divisor cannot be 0"));
    }
    Ok(Cond::Mod(div, rem))
}

fn parse_elem_match(v: &Bson) -> CommandResult<Cond> {
    let Bson::Document(d) = v else {
        return Err(CommandError::bad_value("$elemMatch needs an Object"));
    };
    if is_value_operator_doc(d) {
        let nodes = parse_operators(d, &|c| Node::Value(c))?;
        Ok(Cond::ElemMatchValue(Box::new(and_of(nodes))))
    } else {
        Ok(Cond::ElemMatchObj(Box::new(parse_document(d)?)))
    }
}

fn parse_all(v: &Bson, mk: &dyn Fn(Cond) -> Node) -> CommandResult<Node> {
    let Bson::Array(items) = v else {
        return Err(CommandError::bad_value("$all needs an array"));
    };
    if items.is_empty() {
        return Ok(Node::False);
    }
    let is_elem_match = |b: &Bson| matches!(b, Bson::Document(d) if d.keys().next().is_some_and(|k| k == "$elemMatch"));
    let mut nodes = Vec::with_capacity(items.len());
    if is_elem_match(&items[0]) {
        for item in items {
            match item {
                Bson::Document(d) if is_elem_match(item) && d.len() == 1 => {
                    let arg = d.get("$elemMatch").unwrap_or(&Bson::Null);
                    nodes.push(mk(parse_elem_match(arg)?));
                }
                _ => {
                    return Err(CommandError::bad_value(
                        "$all/$elemMatch has to be consistent",
                    ))
                }
            }
        }
    } else {
        for item in items {
            match item {
                Bson::RegularExpression(r) => {
                    nodes.push(mk(Cond::Regex(RegexCond::new(&r.pattern, &r.options)?)))
                }
                Bson::Document(d) if is_operator_doc(d) => {
                    return Err(CommandError::bad_value("no $ expressions in $all"))
                }
                other => nodes.push(mk(Cond::Eq(other.clone()))),
            }
        }
    }
    Ok(Node::And(nodes))
}

/// Parses a document of field operators (`{$gt: 1, $lt: 5}`) into one node per operator;
/// `mk` wraps a condition for its context (a path, or the element itself).
fn parse_operators(d: &Document, mk: &dyn Fn(Cond) -> Node) -> CommandResult<Vec<Node>> {
    let mut nodes = Vec::with_capacity(d.len());
    let regex_arg = d.get("$regex");
    let options_arg = d.get("$options");
    for (op, v) in d {
        let node = match op.as_str() {
            "$eq" => mk(Cond::Eq(v.clone())),
            "$ne" => {
                if matches!(v, Bson::RegularExpression(_)) {
                    return Err(CommandError::bad_value("Can't have regex as arg to $ne."));
                }
                Node::Not(Box::new(mk(Cond::Eq(v.clone()))))
            }
            "$gt" => {
                no_regex(op, v)?;
                mk(Cond::Cmp(CmpOp::Gt, v.clone()))
            }
            "$gte" => {
                no_regex(op, v)?;
                mk(Cond::Cmp(CmpOp::Gte, v.clone()))
            }
            "$lt" => {
                no_regex(op, v)?;
                mk(Cond::Cmp(CmpOp::Lt, v.clone()))
            }
            "$lte" => {
                no_regex(op, v)?;
                mk(Cond::Cmp(CmpOp::Lte, v.clone()))
            }
            "$in" => mk(parse_in_list(op, v)?),
            "$nin" => Node::Not(Box::new(mk(parse_in_list(op, v)?))),
            "$exists" => {
                if truthy(v) {
                    mk(Cond::Exists)
                } else {
                    Node::Not(Box::new(mk(Cond::Exists)))
                }
            }
            "$not" => match v {
                Bson::RegularExpression(r) => Node::Not(Box::new(mk(Cond::Regex(RegexCond::new(
                    &r.pattern, &r.options,
                )?)))),
                Bson::Document(inner) => {
                    if inner.is_empty() {
                        return Err(CommandError::bad_value("$not cannot be empty"));
                    }
                    if !inner.keys().all(|k| k.starts_with('$')) {
                        let bad = inner.keys().find(|k| !k.starts_with('$'));
                        return Err(CommandError::bad_value(format!(
                            "unknown operator: {}",
                            bad.map(String::as_str).unwrap_or_default()
                        )));
                    }
                    Node::Not(Box::new(and_of(parse_operators(inner, mk)?)))
                }
                _ => return Err(CommandError::bad_value("$not needs a regex or a document")),
            },
            "$regex" => {
                let (pattern, mut options) = match v {
                    Bson::String(s) => (s.clone(), String::new()),
                    Bson::RegularExpression(r) => (r.pattern.clone(), r.options.clone()),
                    _ => return Err(CommandError::bad_value("$regex has to be a string")),
                };
                if let Some(o) = options_arg {
                    let Bson::String(o) = o else {
                        return Err(CommandError::bad_value("$options has to be a string"));
                    };
                    if !options.is_empty() {
                        return Err(CommandError::bad_value(
                            "options set in both $regex and $options",
                        ));
                    }
                    options = o.clone();
                }
                mk(Cond::Regex(RegexCond::new(&pattern, &options)?))
            }
            "$options" => {
                if regex_arg.is_none() {
                    return Err(CommandError::bad_value("$options needs a $regex"));
                }
                continue;
            }
            "$size" => mk(Cond::Size(parse_size(v)?)),
            "$type" => mk(Cond::Type(parse_type(v)?)),
            "$all" => parse_all(v, mk)?,
            "$elemMatch" => mk(parse_elem_match(v)?),
            "$mod" => mk(parse_mod(v)?),
            _ => return Err(CommandError::bad_value(format!("unknown operator: {op}"))),
        };
        nodes.push(node);
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, Regex};

    fn m(filter: Document, d: Document) -> bool {
        Filter::parse(&filter).unwrap().matches(&d)
    }

    fn err(filter: Document) -> i32 {
        Filter::parse(&filter).unwrap_err().code
    }

    #[test]
    fn empty_matches_all() {
        assert!(m(doc! {}, doc! {"a": 1}));
        assert!(Filter::parse(&doc! {}).unwrap().is_match_all());
        assert!(Filter::default().matches(&doc! {}));
    }

    #[test]
    fn implicit_equality() {
        assert!(m(doc! {"a": 1}, doc! {"a": 1.0}));
        assert!(m(doc! {"a": 1}, doc! {"a": 1i64}));
        assert!(!m(doc! {"a": 1}, doc! {"a": "1"}));
        assert!(m(doc! {"a.b": "x"}, doc! {"a": {"b": "x"}}));
        assert!(m(doc! {"a": {"b": 1}}, doc! {"a": {"b": 1}}));
        assert!(!m(doc! {"a": {"b": 1}}, doc! {"a": {"b": 1, "c": 2}}));
        assert!(m(doc! {"a": 1, "b": 2}, doc! {"a": 1, "b": 2}));
        assert!(!m(doc! {"a": 1, "b": 2}, doc! {"a": 1, "b": 3}));
    }

    #[test]
    fn arrays_in_equality() {
        let d = doc! {"tags": ["x", "y"], "nested": [[1, 2], [3]]};
        assert!(m(doc! {"tags": "x"}, d.clone()));
        assert!(m(doc! {"tags": ["x", "y"]}, d.clone()));
        assert!(!m(doc! {"tags": ["y", "x"]}, d.clone()));
        assert!(m(doc! {"nested": [3]}, d.clone()));
        assert!(!m(doc! {"nested": 3}, d.clone()));
        assert!(m(doc! {"tags.1": "y"}, d.clone()));
        let d = doc! {"a": [{"b": 1}, {"b": [2, 3]}]};
        assert!(m(doc! {"a.b": 1}, d.clone()));
        assert!(m(doc! {"a.b": 3}, d.clone()));
        assert!(m(doc! {"a.b": [2, 3]}, d.clone()));
        assert!(m(doc! {"a.1.b": 2}, d.clone()));
        assert!(!m(doc! {"a.0.b": 2}, d.clone()));
    }

    #[test]
    fn null_matches_missing() {
        assert!(m(doc! {"a": Bson::Null}, doc! {}));
        assert!(m(doc! {"a": Bson::Null}, doc! {"a": Bson::Null}));
        assert!(m(doc! {"a": Bson::Null}, doc! {"a": Bson::Undefined}));
        assert!(!m(doc! {"a": Bson::Null}, doc! {"a": 0}));
        assert!(m(doc! {"a": Bson::Null}, doc! {"a": [1, Bson::Null]}));
        assert!(!m(doc! {"a": Bson::Null}, doc! {"a": [1]}));
        // dotted: missing through a scalar or a document, but not through scalar arrays
        assert!(m(doc! {"a.b": Bson::Null}, doc! {"a": 4}));
        assert!(m(doc! {"a.b": Bson::Null}, doc! {"a": {}}));
        assert!(m(doc! {"a.b": Bson::Null}, doc! {"a": [{"b": 3}, {}]}));
        assert!(!m(doc! {"a.b": Bson::Null}, doc! {"a": [{"b": 3}]}));
        assert!(!m(doc! {"a.b": Bson::Null}, doc! {"a": [1, 2]}));
        assert!(!m(doc! {"a.b": Bson::Null}, doc! {"a": []}));
        // $ne null is the exact negation
        assert!(m(doc! {"a.b": {"$ne": Bson::Null}}, doc! {"a": [1, 2]}));
        assert!(!m(doc! {"a": {"$ne": Bson::Null}}, doc! {}));
        assert!(m(doc! {"a": {"$in": [Bson::Null, 5]}}, doc! {}));
        assert!(m(doc! {"a": {"$gte": Bson::Null}}, doc! {}));
        assert!(!m(doc! {"a": {"$gt": Bson::Null}}, doc! {}));
        assert!(!m(doc! {"a": {"$nin": [Bson::Null]}}, doc! {}));
    }

    #[test]
    fn comparisons_are_type_bracketed() {
        assert!(m(doc! {"a": {"$gt": 5}}, doc! {"a": 6.5}));
        assert!(!m(doc! {"a": {"$gt": 5}}, doc! {"a": "6"}));
        assert!(!m(doc! {"a": {"$lt": 5}}, doc! {"a": Bson::Null}));
        assert!(!m(doc! {"a": {"$lt": 5}}, doc! {}));
        assert!(m(doc! {"a": {"$gte": 5, "$lte": 5}}, doc! {"a": 5i64}));
        assert!(m(doc! {"a": {"$lt": "b"}}, doc! {"a": "a"}));
        assert!(m(doc! {"a": {"$gt": Bson::MinKey}}, doc! {"a": "x"}));
        assert!(m(doc! {"a": {"$lt": Bson::MaxKey}}, doc! {"a": {"x": 1}}));
        // each operator independently over array elements
        assert!(m(doc! {"a": {"$gt": 1, "$lt": 5}}, doc! {"a": [0, 10]}));
        assert!(!m(
            doc! {"a": {"$elemMatch": {"$gt": 1, "$lt": 5}}},
            doc! {"a": [0, 10]}
        ));
        assert!(m(
            doc! {"a": {"$elemMatch": {"$gt": 1, "$lt": 5}}},
            doc! {"a": [0, 3]}
        ));
    }

    #[test]
    fn in_and_nin() {
        assert!(m(doc! {"a": {"$in": [1, 2]}}, doc! {"a": 2.0}));
        assert!(m(doc! {"a": {"$in": [1, 2]}}, doc! {"a": [5, 2]}));
        assert!(!m(doc! {"a": {"$in": []}}, doc! {"a": 1}));
        assert!(m(
            doc! {"a": {"$in": [Regex { pattern: "^x".into(), options: String::new() }]}},
            doc! {"a": "xyz"}
        ));
        assert!(m(doc! {"a": {"$nin": [1, 2]}}, doc! {"a": 3}));
        assert!(m(doc! {"a": {"$nin": [1, 2]}}, doc! {}));
        assert!(!m(doc! {"a": {"$nin": [1, 2]}}, doc! {"a": [3, 1]}));
        assert_eq!(err(doc! {"a": {"$in": 5}}), 2);
        assert_eq!(err(doc! {"a": {"$in": [{"$gt": 1}]}}), 2);
        assert_eq!(err(doc! {"a": {"$nin": "x"}}), 2);
    }

    #[test]
    fn exists() {
        assert!(m(doc! {"a": {"$exists": true}}, doc! {"a": Bson::Null}));
        assert!(!m(doc! {"a": {"$exists": true}}, doc! {}));
        assert!(m(doc! {"a": {"$exists": false}}, doc! {}));
        assert!(m(doc! {"a": {"$exists": 0}}, doc! {"b": 1}));
        assert!(m(
            doc! {"a.b": {"$exists": true}},
            doc! {"a": [{"c": 1}, {"b": 2}]}
        ));
        assert!(!m(doc! {"a.b": {"$exists": true}}, doc! {"a": [1]}));
        assert!(m(doc! {"a.b": {"$exists": false}}, doc! {"a": [1]}));
    }

    #[test]
    fn logical() {
        let d = doc! {"a": 1, "b": 2};
        assert!(m(doc! {"$or": [{"a": 5}, {"b": 2}]}, d.clone()));
        assert!(!m(doc! {"$and": [{"a": 1}, {"b": 3}]}, d.clone()));
        assert!(m(doc! {"$nor": [{"a": 5}, {"b": 3}]}, d.clone()));
        assert!(!m(doc! {"$nor": [{"a": 1}]}, d.clone()));
        assert!(m(doc! {"a": {"$not": {"$gt": 5}}}, d.clone()));
        assert!(m(doc! {"a": {"$not": {"$gt": 5}}}, doc! {}));
        assert!(!m(doc! {"a": {"$not": {"$lt": 5}}}, d.clone()));
        assert!(m(
            doc! {"s": {"$not": Regex { pattern: "^a".into(), options: String::new() }}},
            doc! {"s": "ba"}
        ));
        assert_eq!(err(doc! {"$or": []}), 2);
        assert_eq!(err(doc! {"$and": {"a": 1}}), 2);
        assert_eq!(err(doc! {"$or": [1]}), 2);
        assert_eq!(err(doc! {"a": {"$not": 5}}), 2);
        assert_eq!(err(doc! {"a": {"$not": {}}}), 2);
        assert_eq!(err(doc! {"$not": {"a": 1}}), 2);
        assert!(m(doc! {"$comment": "hi", "a": 1}, d));
    }

    #[test]
    fn unknown_operators() {
        let e = Filter::parse(&doc! {"a": {"$foo": 1}}).unwrap_err();
        assert_eq!(e.code, 2);
        assert_eq!(e.message, "unknown operator: $foo");
        assert_eq!(err(doc! {"$foo": 1}), 2);
        assert_eq!(err(doc! {"a": {"$gt": 1, "b": 2}}), 2);
    }

    #[test]
    fn regex() {
        let re = |p: &str, o: &str| Regex {
            pattern: p.into(),
            options: o.into(),
        };
        assert!(m(doc! {"a": re("^ab", "")}, doc! {"a": "abc"}));
        assert!(!m(doc! {"a": re("^AB", "")}, doc! {"a": "abc"}));
        assert!(m(doc! {"a": re("^AB", "i")}, doc! {"a": "abc"}));
        assert!(m(
            doc! {"a": {"$regex": "^AB", "$options": "i"}},
            doc! {"a": "abc"}
        ));
        assert!(m(
            doc! {"a": {"$regex": re("b$", "")}},
            doc! {"a": ["x", "ab"]}
        ));
        assert!(m(
            doc! {"a": {"$regex": "^b", "$options": "m"}},
            doc! {"a": "a\nb"}
        ));
        assert!(!m(doc! {"a": {"$regex": "^b"}}, doc! {"a": "a\nb"}));
        assert!(m(
            doc! {"a": {"$regex": "a.b", "$options": "s"}},
            doc! {"a": "a\nb"}
        ));
        assert!(m(
            doc! {"a": {"$regex": "a b # c", "$options": "x"}},
            doc! {"a": "ab"}
        ));
        assert!(!m(doc! {"a": re("1", "")}, doc! {"a": 1}));
        // a stored regex equal to the query regex matches
        assert!(m(doc! {"a": re("x", "i")}, doc! {"a": re("x", "i")}));
        assert_eq!(err(doc! {"a": {"$options": "i"}}), 2);
        assert_eq!(err(doc! {"a": {"$regex": 5}}), 2);
        assert_eq!(err(doc! {"a": {"$regex": "("}}), INVALID_REGEX);
        assert_eq!(
            err(doc! {"a": {"$regex": "a", "$options": "q"}}),
            INVALID_REGEX_OPTION
        );
    }

    #[test]
    fn size_type_all_mod() {
        let d = doc! {"a": [1, "x", [2, 3]], "n": 5i64, "s": "str"};
        assert!(m(doc! {"a": {"$size": 3}}, d.clone()));
        assert!(m(doc! {"a": {"$size": 3.0}}, d.clone()));
        assert!(!m(doc! {"a": {"$size": 2}}, d.clone()));
        assert!(!m(doc! {"n": {"$size": 0}}, d.clone()));
        assert_eq!(err(doc! {"a": {"$size": 1.5}}), 2);
        assert_eq!(err(doc! {"a": {"$size": -1}}), 2);
        assert_eq!(err(doc! {"a": {"$size": "1"}}), 2);
        assert!(m(doc! {"n": {"$type": "long"}}, d.clone()));
        assert!(m(doc! {"n": {"$type": 18}}, d.clone()));
        assert!(m(doc! {"n": {"$type": "number"}}, d.clone()));
        assert!(m(doc! {"s": {"$type": ["int", "string"]}}, d.clone()));
        assert!(m(doc! {"a": {"$type": "array"}}, d.clone()));
        assert!(m(doc! {"a": {"$type": "string"}}, d.clone()));
        assert!(!m(doc! {"missing": {"$type": "null"}}, d.clone()));
        assert_eq!(err(doc! {"a": {"$type": "nope"}}), 2);
        assert_eq!(err(doc! {"a": {"$type": 99}}), 2);
        assert!(m(doc! {"a": {"$all": [1, "x"]}}, d.clone()));
        assert!(m(doc! {"a": {"$all": [[2, 3]]}}, d.clone()));
        assert!(!m(doc! {"a": {"$all": [1, "y"]}}, d.clone()));
        assert!(!m(doc! {"a": {"$all": []}}, d.clone()));
        assert!(m(doc! {"s": {"$all": ["str"]}}, d.clone()));
        assert_eq!(err(doc! {"a": {"$all": 1}}), 2);
        assert!(m(doc! {"n": {"$mod": [4, 1]}}, d.clone()));
        assert!(!m(doc! {"n": {"$mod": [4, 0]}}, d.clone()));
        assert_eq!(err(doc! {"n": {"$mod": [0, 1]}}), 2);
        assert_eq!(err(doc! {"n": {"$mod": [1]}}), 2);
    }

    #[test]
    fn elem_match() {
        let d = doc! {"r": [{"p": "x", "s": 5}, {"p": "y", "s": 9}]};
        assert!(m(
            doc! {"r": {"$elemMatch": {"p": "y", "s": {"$gt": 8}}}},
            d.clone()
        ));
        assert!(!m(
            doc! {"r": {"$elemMatch": {"p": "x", "s": {"$gt": 8}}}},
            d.clone()
        ));
        // without $elemMatch, conditions may be met by different elements
        assert!(m(doc! {"r.p": "x", "r.s": {"$gt": 8}}, d.clone()));
        assert!(m(
            doc! {"r": {"$elemMatch": {"$or": [{"p": "z"}, {"s": 9}]}}},
            d.clone()
        ));
        assert!(!m(
            doc! {"r": {"$elemMatch": {"p": "x"}}},
            doc! {"r": {"p": "x"}}
        ));
        assert!(m(
            doc! {"r": {"$all": [{"$elemMatch": {"p": "x"}}, {"$elemMatch": {"s": 9}}]}},
            d
        ));
        assert!(m(
            doc! {"a": {"$elemMatch": {"$eq": Bson::Null}}},
            doc! {"a": [1, Bson::Null]}
        ));
        assert!(!m(doc! {"a": {"$elemMatch": {"$eq": Bson::Null}}}, doc! {}));
        assert!(m(
            doc! {"a": {"$elemMatch": {"$not": {"$gt": 3}}}},
            doc! {"a": [5, 1]}
        ));
        assert_eq!(err(doc! {"a": {"$elemMatch": 1}}), 2);
    }

    #[test]
    fn element_matcher() {
        let em = ElementMatcher::parse(&Bson::Document(doc! {"$gte": 6})).unwrap();
        assert!(em.matches(&Bson::Int32(7)));
        assert!(!em.matches(&Bson::Int32(5)));
        let em = ElementMatcher::parse(&Bson::Document(doc! {"score": 8})).unwrap();
        assert!(em.matches(&Bson::Document(doc! {"score": 8, "item": "B"})));
        assert!(!em.matches(&Bson::Int32(8)));
        let em = ElementMatcher::parse(&Bson::Int32(3)).unwrap();
        assert!(em.matches(&Bson::Double(3.0)));
        assert!(!em.matches(&Bson::Array(vec![3.into()])));
    }

    #[test]
    fn dbref_is_equality() {
        let r = doc! {"$ref": "c", "$id": 1};
        assert!(m(doc! {"a": r.clone()}, doc! {"a": r}));
    }
}
