//! Aggregation expressions, the subset that projections and `$replaceRoot` need: literals,
//! field paths (`"$ns.db"`), the `$$ROOT`/`$$CURRENT`/`$$REMOVE` variables, `{$literal: x}`,
//! and documents and arrays built from expressions.
//!
//! Expressions are parsed once and evaluated per document. Evaluation yields `None` for
//! "missing" (a path that does not exist, or `$$REMOVE`), which callers need to tell apart from
//! `null`: a projected field whose value is missing is left out rather than set to null.
//! Any other `$operator` is rejected with `InvalidPipelineOperator` (168) at parse time, so a
//! client learns immediately that mongo-sim does not implement it.

use bson::{Bson, Document};

use crate::error::{CommandError, CommandResult};

/// `InvalidPipelineOperator`.
pub const INVALID_PIPELINE_OPERATOR: i32 = 168;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A constant value.
    Literal(Bson),
    /// A path from the current document; empty means the document itself (`$$ROOT`).
    FieldPath(Vec<String>),
    /// `$$REMOVE`: evaluates to missing.
    Remove,
    /// A document whose values are expressions; missing values leave their field out.
    Object(Vec<(String, Expr)>),
    /// An array of expressions; missing values become null.
    Array(Vec<Expr>),
}

fn field_path_segments(path: &str) -> CommandResult<Vec<String>> {
    path.split('.')
        .map(|seg| {
            if seg.is_empty() {
                Err(CommandError::new(
                    15998,
                    "FieldPath field names may not be empty strings.",
                ))
            } else if seg.starts_with('$') {
                Err(CommandError::new(
                    16410,
                    "FieldPath field names may not start with '$'. Consider using $getField or $setField.",
                ))
            } else {
                Ok(seg.to_string())
            }
        })
        .collect()
}

impl Expr {
    /// Parses an expression.
    pub fn parse(v: &Bson) -> CommandResult<Expr> {
        match v {
            Bson::String(s) if s.starts_with("$$") => Self::parse_variable(&s[2..]),
            Bson::String(s) if s.starts_with('$') => {
                let path = &s[1..];
                if path.is_empty() {
                    return Err(CommandError::new(
                        16872,
                        "'$' by itself is not a valid FieldPath",
                    ));
                }
                Ok(Expr::FieldPath(field_path_segments(path)?))
            }
            Bson::Document(d) => Self::parse_document(d),
            Bson::Array(items) => Ok(Expr::Array(
                items
                    .iter()
                    .map(Expr::parse)
                    .collect::<CommandResult<_>>()?,
            )),
            other => Ok(Expr::Literal(other.clone())),
        }
    }

    fn parse_variable(s: &str) -> CommandResult<Expr> {
        let (name, rest) = match s.split_once('.') {
            Some((n, r)) => (n, Some(r)),
            None => (s, None),
        };
        match name {
            "ROOT" | "CURRENT" => Ok(Expr::FieldPath(match rest {
                Some(r) => field_path_segments(r)?,
                None => Vec::new(),
            })),
            "REMOVE" => Ok(Expr::Remove),
            "" => Err(CommandError::new(
                16869,
                "empty variable names are not allowed",
            )),
            other => Err(CommandError::new(
                17276,
                format!("Use of undefined variable: {other}"),
            )),
        }
    }

    /// An operator document (`{$literal: 1}`) or an object of expressions (`{a: "$x"}`).
    pub fn parse_document(d: &Document) -> CommandResult<Expr> {
        let Some(first) = d.keys().next() else {
            return Ok(Expr::Object(Vec::new()));
        };
        if first.starts_with('$') {
            if d.len() != 1 {
                return Err(CommandError::new(
                    15983,
                    format!(
                        "an expression specification must contain exactly one field, the name of the expression. Found {} fields in {}",
                        d.len(),
                        d
                    ),
                ));
            }
            let arg = d.get(first).unwrap_or(&Bson::Null);
            return match first.as_str() {
                "$literal" => Ok(Expr::Literal(arg.clone())),
                other => Err(CommandError::new(
                    INVALID_PIPELINE_OPERATOR,
                    format!("Unrecognized expression '{other}'"),
                )),
            };
        }
        let mut fields = Vec::with_capacity(d.len());
        for (k, v) in d {
            if k.starts_with('$') {
                return Err(CommandError::new(
                    16410,
                    format!("FieldPath field names may not start with '$'. Found: {k}"),
                ));
            }
            if k.contains('.') {
                return Err(CommandError::new(
                    16412,
                    format!("FieldPath field names may not contain '.'. Found: {k}"),
                ));
            }
            fields.push((k.clone(), Expr::parse(v)?));
        }
        Ok(Expr::Object(fields))
    }

    /// Evaluates against `root` (the current document); `None` is missing.
    pub fn evaluate(&self, root: &Document) -> Option<Bson> {
        match self {
            Expr::Literal(v) => Some(v.clone()),
            Expr::FieldPath(segs) => {
                if segs.is_empty() {
                    Some(Bson::Document(root.clone()))
                } else {
                    eval_path_in_doc(root, segs)
                }
            }
            Expr::Remove => None,
            Expr::Object(fields) => {
                let mut out = Document::new();
                for (k, e) in fields {
                    if let Some(v) = e.evaluate(root) {
                        out.insert(k.clone(), v);
                    }
                }
                Some(Bson::Document(out))
            }
            Expr::Array(items) => Some(Bson::Array(
                items
                    .iter()
                    .map(|e| e.evaluate(root).unwrap_or(Bson::Null))
                    .collect(),
            )),
        }
    }
}

/// Aggregation's field-path semantics: arrays met along the way map the rest of the path over
/// their elements (keeping only the values found), and numeric segments are field names, not
/// array indexes.
fn eval_path_in_doc(doc: &Document, segs: &[String]) -> Option<Bson> {
    let (first, rest) = segs.split_first()?;
    eval_path_in_value(doc.get(first)?, rest)
}

fn eval_path_in_value(v: &Bson, segs: &[String]) -> Option<Bson> {
    if segs.is_empty() {
        return Some(v.clone());
    }
    match v {
        Bson::Document(d) => eval_path_in_doc(d, segs),
        Bson::Array(items) => Some(Bson::Array(
            items
                .iter()
                .filter(|e| matches!(e, Bson::Document(_) | Bson::Array(_)))
                .filter_map(|e| eval_path_in_value(e, segs))
                .collect(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn eval(e: Bson, d: &Document) -> Option<Bson> {
        Expr::parse(&e).unwrap().evaluate(d)
    }

    #[test]
    fn literals_and_paths() {
        let d = doc! {"ns": {"db": "d", "coll": "c"}, "operationType": "insert"};
        assert_eq!(eval("$operationType".into(), &d), Some("insert".into()));
        assert_eq!(eval("$ns.db".into(), &d), Some("d".into()));
        assert_eq!(eval("$ns.missing".into(), &d), None);
        assert_eq!(eval("plain".into(), &d), Some("plain".into()));
        assert_eq!(eval(5.into(), &d), Some(5.into()));
        assert_eq!(
            eval(Bson::Document(doc! {"$literal": "$x"}), &d),
            Some("$x".into())
        );
        assert_eq!(eval("$$ROOT.ns.coll".into(), &d), Some("c".into()));
        assert_eq!(
            eval("$$CURRENT".into(), &d),
            Some(Bson::Document(d.clone()))
        );
        assert_eq!(eval("$$REMOVE".into(), &d), None);
    }

    #[test]
    fn paths_through_arrays() {
        let d = doc! {"a": [{"b": 1}, {"c": 2}, {"b": 3}, 7, [{"b": 4}]]};
        assert_eq!(
            eval("$a.b".into(), &d),
            Some(Bson::Array(vec![
                1.into(),
                3.into(),
                Bson::Array(vec![4.into()])
            ]))
        );
        // numeric segments are field names in aggregation
        assert_eq!(
            eval("$a.0".into(), &d),
            Some(Bson::Array(vec![Bson::Array(vec![])]))
        );
    }

    #[test]
    fn objects_and_arrays() {
        let d = doc! {"x": 1};
        assert_eq!(
            eval(
                Bson::Document(doc! {"a": "$x", "b": "$nope", "c": ["$x", "$nope"]}),
                &d
            ),
            Some(Bson::Document(doc! {"a": 1, "c": [1, Bson::Null]}))
        );
        assert_eq!(
            eval(Bson::Document(doc! {}), &d),
            Some(Bson::Document(doc! {}))
        );
    }

    #[test]
    fn errors() {
        let code = |v: Bson| Expr::parse(&v).unwrap_err().code;
        assert_eq!(code(Bson::Document(doc! {"$concat": ["a"]})), 168);
        assert_eq!(code(Bson::Document(doc! {"$literal": 1, "$x": 2})), 15983);
        assert_eq!(code("$".into()), 16872);
        assert_eq!(code("$a..b".into()), 15998);
        assert_eq!(code("$$foo".into()), 17276);
        assert_eq!(code(Bson::Document(doc! {"a.b": 1})), 16412);
    }
}
