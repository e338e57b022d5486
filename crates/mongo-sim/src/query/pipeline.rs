//! Aggregation pipelines: the `aggregate` command over a collection, the stages that follow
//! `$changeStream`, and pipeline-style updates.
//!
//! Stages are parsed and validated up front ([`Stage::parse`], [`Pipeline::parse`]) with
//! MongoDB's error codes. A pipeline runs either over a whole set of documents
//! ([`Pipeline::run`]) or, when every stage looks at one document at a time (`$match`,
//! `$project`, `$addFields`/`$set`, `$unset`, `$replaceRoot`/`$replaceWith`), one document at
//! a time ([`Pipeline::apply_one`]) — which is how a change stream filters and reshapes each
//! event as it happens, without buffering.

use bson::{Bson, Document};

use super::compare::{as_num, Num};
use super::expr::Expr;
use super::filter::Filter;
use super::group::Group;
use super::projection::Projection;
use super::sort::SortSpec;
use crate::error::{codes, CommandError, CommandResult};

/// One parsed stage.
#[derive(Debug, Clone)]
pub enum Stage {
    Match(Filter),
    Sort(SortSpec),
    Limit(u64),
    Skip(u64),
    Project(Projection),
    /// `$addFields` or its alias `$set`.
    AddFields(Projection),
    Unset(Projection),
    /// `$count`, with the output field name.
    Count(String),
    /// `$replaceRoot: {newRoot: expr}` or `$replaceWith: expr`.
    ReplaceRoot(Expr),
    Group(Group),
}

fn integral(v: &Bson) -> Option<i64> {
    match as_num(v)? {
        Num::Int(i) => Some(i),
        Num::Float(f) if f.fract() == 0.0 && f.is_finite() => Some(f as i64),
        Num::Float(_) => None,
    }
}

impl Stage {
    /// Parses one stage document (`{$match: {...}}`).
    pub fn parse(stage: &Document) -> CommandResult<Stage> {
        if stage.len() != 1 {
            return Err(CommandError::new(
                40323,
                "A pipeline stage specification object must contain exactly one field.",
            ));
        }
        let Some((name, arg)) = stage.iter().next() else {
            return Err(CommandError::new(
                40323,
                "A pipeline stage specification object must contain exactly one field.",
            ));
        };
        match name.as_str() {
            "$match" => match arg {
                Bson::Document(d) => Ok(Stage::Match(Filter::parse(d)?)),
                _ => Err(CommandError::new(
                    15959,
                    "the match filter must be an expression in an object",
                )),
            },
            "$sort" => match arg {
                Bson::Document(d) => {
                    if d.is_empty() {
                        return Err(CommandError::new(
                            15976,
                            "$sort stage must have at least one sort key",
                        ));
                    }
                    Ok(Stage::Sort(SortSpec::parse(d)?))
                }
                _ => Err(CommandError::new(
                    15973,
                    "the $sort key specification must be an object",
                )),
            },
            "$limit" => match integral(arg) {
                Some(n) if n > 0 => Ok(Stage::Limit(n as u64)),
                Some(_) => Err(CommandError::new(15958, "the limit must be positive")),
                None if as_num(arg).is_some() => Err(CommandError::new(
                    15957,
                    format!("invalid argument to $limit stage: Cannot represent as a 64-bit integer: $limit: {arg}"),
                )),
                None => Err(CommandError::new(
                    15957,
                    "the limit must be specified as a number",
                )),
            },
            "$skip" => match integral(arg) {
                Some(n) if n >= 0 => Ok(Stage::Skip(n as u64)),
                Some(n) => Err(CommandError::new(
                    15956,
                    format!("invalid argument to $skip stage: Expected a non-negative number in: $skip: {n}"),
                )),
                None => Err(CommandError::new(
                    15972,
                    "Argument to $skip must be a number",
                )),
            },
            "$project" => match arg {
                Bson::Document(d) if d.is_empty() => Err(CommandError::new(
                    51272,
                    "Invalid $project :: caused by :: projection specification must have at least one field",
                )),
                Bson::Document(d) => Ok(Stage::Project(Projection::parse_project(d)?)),
                _ => Err(CommandError::new(
                    15969,
                    "$project specification must be an object",
                )),
            },
            "$addFields" | "$set" => match arg {
                Bson::Document(d) => Ok(Stage::AddFields(Projection::parse_add_fields(d)?)),
                _ => Err(CommandError::new(
                    40272,
                    format!("{name} specification stage must be an object"),
                )),
            },
            "$unset" => {
                let bad = || {
                    CommandError::new(
                        31002,
                        "$unset specification must be a string or an array with at least one field",
                    )
                };
                let paths: Vec<String> = match arg {
                    Bson::String(s) => vec![s.clone()],
                    Bson::Array(items) if !items.is_empty() => items
                        .iter()
                        .map(|i| match i {
                            Bson::String(s) => Ok(s.clone()),
                            _ => Err(CommandError::new(
                                31120,
                                "$unset specification must be a string or an array containing only string values",
                            )),
                        })
                        .collect::<CommandResult<_>>()?,
                    _ => return Err(bad()),
                };
                Ok(Stage::Unset(Projection::exclusion_of(&paths)?))
            }
            "$count" => match arg {
                Bson::String(s) if s.is_empty() => Err(CommandError::new(
                    40157,
                    "the count field must be a non-empty string",
                )),
                Bson::String(s) if s.starts_with('$') => Err(CommandError::new(
                    40158,
                    "the count field cannot be a $-prefixed path",
                )),
                Bson::String(s) if s.contains('.') => Err(CommandError::new(
                    40160,
                    "the count field cannot contain '.'",
                )),
                Bson::String(s) => Ok(Stage::Count(s.clone())),
                _ => Err(CommandError::new(
                    40156,
                    "the count field must be a non-empty string",
                )),
            },
            "$replaceRoot" => {
                let Bson::Document(d) = arg else {
                    return Err(CommandError::new(
                        40229,
                        format!("expected an object as specification for $replaceRoot stage, got {arg}"),
                    ));
                };
                let mut new_root = None;
                for (k, v) in d {
                    if k == "newRoot" {
                        new_root = Some(Expr::parse(v)?);
                    } else {
                        return Err(CommandError::new(
                            codes::LOCATION_40415,
                            format!("BSON field '$replaceRoot.{k}' is an unknown field."),
                        ));
                    }
                }
                match new_root {
                    Some(e) => Ok(Stage::ReplaceRoot(e)),
                    None => Err(CommandError::new(
                        40414,
                        "BSON field '$replaceRoot.newRoot' is missing but a required field",
                    )),
                }
            }
            "$replaceWith" => Ok(Stage::ReplaceRoot(Expr::parse(arg)?)),
            "$group" => Ok(Stage::Group(Group::parse(arg)?)),
            // `aggregate` takes a leading `$collStats` off before parsing the rest.
            "$collStats" => Err(CommandError::new(
                40602,
                "$collStats is only valid as the first stage in a pipeline",
            )),
            // A change stream takes this stage off before parsing the rest; anywhere else
            // MongoDB refuses it (`Pipeline::validateCommon`).
            crate::changestream::SPLIT_STAGE => Err(CommandError::new(
                codes::ILLEGAL_OPERATION,
                "$changeStreamSplitLargeEvent can only be used in a $changeStream pipeline",
            )),
            other => Err(CommandError::new(
                codes::UNRECOGNIZED_PIPELINE_STAGE,
                format!("Unrecognized pipeline stage name: '{other}'"),
            )),
        }
    }

    /// The stage's name as MongoDB spells it in errors (`$addFields` for `$set`).
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Match(_) => "$match",
            Stage::Sort(_) => "$sort",
            Stage::Limit(_) => "$limit",
            Stage::Skip(_) => "$skip",
            Stage::Project(_) => "$project",
            Stage::AddFields(_) => "$addFields",
            Stage::Unset(_) => "$unset",
            Stage::Count(_) => "$count",
            Stage::ReplaceRoot(_) => "$replaceRoot",
            Stage::Group(_) => "$group",
        }
    }

    /// Whether the stage transforms or drops each document on its own.
    pub fn is_per_document(&self) -> bool {
        matches!(
            self,
            Stage::Match(_)
                | Stage::Project(_)
                | Stage::AddFields(_)
                | Stage::Unset(_)
                | Stage::ReplaceRoot(_)
        )
    }

    /// Whether the stage may appear in a pipeline-style update.
    pub fn allowed_in_update(&self) -> bool {
        matches!(
            self,
            Stage::Project(_) | Stage::AddFields(_) | Stage::Unset(_) | Stage::ReplaceRoot(_)
        )
    }

    /// Applies a per-document stage; `Ok(None)` means the document is filtered out. Whole-set
    /// stages pass the document through unchanged (callers check [`Stage::is_per_document`]).
    pub fn apply_one(&self, doc: Document) -> CommandResult<Option<Document>> {
        match self {
            Stage::Match(f) => Ok(f.matches(&doc).then_some(doc)),
            Stage::Project(p) | Stage::AddFields(p) | Stage::Unset(p) => Ok(Some(p.apply(&doc))),
            Stage::ReplaceRoot(e) => match e.evaluate(&doc) {
                Some(Bson::Document(d)) => Ok(Some(d)),
                other => {
                    let (shown, ty) = match &other {
                        Some(v) => (v.to_string(), format!("{:?}", v.element_type())),
                        None => ("MISSING".to_string(), "missing".to_string()),
                    };
                    Err(CommandError::new(
                        40228,
                        format!(
                            "'replacement document' must evaluate to an object, but resulting value was: {shown}. Type of resulting value: '{ty}'. Input document: {doc}"
                        ),
                    ))
                }
            },
            _ => Ok(Some(doc)),
        }
    }
}

/// A parsed pipeline.
#[derive(Debug, Clone, Default)]
pub struct Pipeline(pub Vec<Stage>);

impl Pipeline {
    /// Parses a list of stage documents.
    pub fn parse(stages: &[Document]) -> CommandResult<Pipeline> {
        Ok(Pipeline(
            stages
                .iter()
                .map(Stage::parse)
                .collect::<CommandResult<_>>()?,
        ))
    }

    /// Parses a `pipeline` field as it arrives in a command: an array of documents.
    pub fn parse_bson(stages: &[Bson]) -> CommandResult<Pipeline> {
        let docs = stages
            .iter()
            .map(|s| match s {
                Bson::Document(d) => Ok(d.clone()),
                _ => Err(CommandError::type_mismatch(
                    "Each element of the 'pipeline' array must be an object",
                )),
            })
            .collect::<CommandResult<Vec<_>>>()?;
        Self::parse(&docs)
    }

    pub fn stages(&self) -> &[Stage] {
        &self.0
    }

    /// Whether every stage is per-document, so [`Pipeline::apply_one`] is exact.
    pub fn is_streamable(&self) -> bool {
        self.0.iter().all(Stage::is_per_document)
    }

    /// Runs a streamable pipeline over one document; `Ok(None)` means it was filtered out.
    pub fn apply_one(&self, doc: Document) -> CommandResult<Option<Document>> {
        let mut cur = doc;
        for stage in &self.0 {
            match stage.apply_one(cur)? {
                Some(d) => cur = d,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// Runs the pipeline over a whole set of documents.
    pub fn run(&self, docs: Vec<Document>) -> CommandResult<Vec<Document>> {
        let mut cur = docs;
        for stage in &self.0 {
            cur = match stage {
                Stage::Sort(s) => s.sort(cur),
                Stage::Limit(n) => {
                    cur.truncate(usize::try_from(*n).unwrap_or(usize::MAX));
                    cur
                }
                Stage::Skip(n) => {
                    let n = usize::try_from(*n).unwrap_or(usize::MAX);
                    if n >= cur.len() {
                        Vec::new()
                    } else {
                        cur.split_off(n)
                    }
                }
                Stage::Group(g) => g.run(cur),
                Stage::Count(name) => {
                    if cur.is_empty() {
                        Vec::new()
                    } else {
                        let mut d = Document::new();
                        match i32::try_from(cur.len()) {
                            Ok(n) => d.insert(name.clone(), n),
                            Err(_) => d.insert(name.clone(), cur.len() as i64),
                        };
                        vec![d]
                    }
                }
                per_doc => {
                    let mut out = Vec::with_capacity(cur.len());
                    for d in cur {
                        if let Some(d) = per_doc.apply_one(d)? {
                            out.push(d);
                        }
                    }
                    out
                }
            };
        }
        Ok(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn docs() -> Vec<Document> {
        (1..=5)
            .map(|i| doc! {"_id": i, "g": i % 2, "v": {"n": 10 - i}})
            .collect()
    }

    fn pipeline(stages: Vec<Document>) -> Pipeline {
        Pipeline::parse(&stages).unwrap()
    }

    fn code(stage: Document) -> i32 {
        Stage::parse(&stage).unwrap_err().code
    }

    #[test]
    fn match_sort_skip_limit() {
        let p = pipeline(vec![
            doc! {"$match": {"g": 1}},
            doc! {"$sort": {"v.n": 1}},
            doc! {"$skip": 1},
            doc! {"$limit": 1},
        ]);
        assert!(!p.is_streamable());
        let out = p.run(docs()).unwrap();
        assert_eq!(out, vec![doc! {"_id": 3, "g": 1, "v": {"n": 7}}]);
    }

    #[test]
    fn count() {
        let p = pipeline(vec![doc! {"$match": {"g": 0}}, doc! {"$count": "n"}]);
        assert_eq!(p.run(docs()).unwrap(), vec![doc! {"n": 2}]);
        let p = pipeline(vec![doc! {"$match": {"g": 7}}, doc! {"$count": "n"}]);
        assert!(p.run(docs()).unwrap().is_empty());
        assert_eq!(code(doc! {"$count": ""}), 40157);
        assert_eq!(code(doc! {"$count": "$x"}), 40158);
        assert_eq!(code(doc! {"$count": "a.b"}), 40160);
        assert_eq!(code(doc! {"$count": 1}), 40156);
    }

    #[test]
    fn streamable_reshaping() {
        let p = pipeline(vec![
            doc! {"$match": {"operationType": "insert"}},
            doc! {"$addFields": {"x": "$ns.coll"}},
            doc! {"$set": {"y": 1}},
            doc! {"$unset": ["ns"]},
            doc! {"$project": {"x": 1, "y": 1, "_id": 0}},
        ]);
        assert!(p.is_streamable());
        let ev = doc! {"_id": 1, "operationType": "insert", "ns": {"db": "d", "coll": "c"}};
        assert_eq!(p.apply_one(ev).unwrap(), Some(doc! {"x": "c", "y": 1}));
        let ev = doc! {"_id": 1, "operationType": "delete"};
        assert_eq!(p.apply_one(ev).unwrap(), None);
    }

    #[test]
    fn replace_root() {
        let p = pipeline(vec![doc! {"$replaceRoot": {"newRoot": "$v"}}]);
        assert_eq!(
            p.run(vec![doc! {"v": {"a": 1}}]).unwrap(),
            vec![doc! {"a": 1}]
        );
        assert_eq!(p.run(vec![doc! {"v": 1}]).unwrap_err().code, 40228);
        assert_eq!(p.run(vec![doc! {}]).unwrap_err().code, 40228);
        let p = pipeline(vec![doc! {"$replaceWith": {"w": "$v", "k": "lit"}}]);
        assert_eq!(
            p.apply_one(doc! {"v": 2}).unwrap(),
            Some(doc! {"w": 2, "k": "lit"})
        );
        assert_eq!(code(doc! {"$replaceRoot": {}}), 40414);
        assert_eq!(
            code(doc! {"$replaceRoot": {"newRoot": "$a", "x": 1}}),
            40415
        );
        assert_eq!(code(doc! {"$replaceRoot": 1}), 40229);
    }

    #[test]
    fn stage_errors() {
        let e = Stage::parse(&doc! {"$foo": 1}).unwrap_err();
        assert_eq!(e.code, 40324);
        assert_eq!(e.message, "Unrecognized pipeline stage name: '$foo'");
        assert_eq!(code(doc! {"$match": {}, "$limit": 1}), 40323);
        assert_eq!(code(doc! {}), 40323);
        assert_eq!(code(doc! {"$limit": 0}), 15958);
        assert_eq!(code(doc! {"$limit": "x"}), 15957);
        assert_eq!(code(doc! {"$skip": -1}), 15956);
        assert_eq!(code(doc! {"$skip": "x"}), 15972);
        assert_eq!(code(doc! {"$match": 1}), 15959);
        assert_eq!(code(doc! {"$match": {"a": {"$bad": 1}}}), 2);
        assert_eq!(code(doc! {"$sort": {}}), 15976);
        assert_eq!(code(doc! {"$sort": 1}), 15973);
        assert_eq!(code(doc! {"$project": {}}), 51272);
        assert_eq!(code(doc! {"$project": 1}), 15969);
        assert_eq!(code(doc! {"$unset": []}), 31002);
        assert_eq!(code(doc! {"$addFields": 1}), 40272);
        assert!(Pipeline::parse_bson(&[Bson::Int32(1)]).is_err());
        assert!(Stage::parse(&doc! {"$limit": 2.0}).is_ok());
    }
}
