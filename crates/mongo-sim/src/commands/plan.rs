//! Which scan answers a query: a collection scan, or the index scan a `hint` asks for (with
//! `min`/`max` bounds), in MongoDB's planner's terms. The plan decides the order documents come
//! in and which ones a bounded or sparse scan sees, and `explain` reports it.

use crate::error::{CommandError, CommandResult};
use crate::query::sort::SortSpec;
use crate::store::{Collection, IndexSpec};
use bson::{doc, Bson, Document};
use std::cmp::Ordering;

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one plan per command, never stored
pub enum Plan {
    /// Insertion order, or reversed (`hint: {$natural: -1}` / `sort: {$natural: -1}`).
    CollScan { reverse: bool },
    IxScan {
        index: Box<IndexSpec>,
        order: SortSpec,
        min: Option<Document>,
        max: Option<Document>,
    },
}

/// What a command asked of the planner.
#[derive(Debug, Default, Clone)]
pub struct PlanRequest {
    pub hint: Option<Bson>,
    pub min: Option<Document>,
    pub max: Option<Document>,
}

impl PlanRequest {
    /// `hint`, `min` and `max` of a `find`-like command (`min`/`max` only where `find` has
    /// them; elsewhere they are not fields of the command at all).
    pub fn from_command(body: &Document, with_min_max: bool, cmd: &str) -> CommandResult<Self> {
        let hint = match body.get("hint") {
            None | Some(Bson::Null) => None,
            Some(h @ (Bson::String(_) | Bson::Document(_))) => Some(h.clone()),
            Some(other) => {
                return Err(CommandError::type_mismatch(format!(
                    "BSON field '{cmd}.hint' is the wrong type '{:?}', expected types '[string, object]'",
                    other.element_type()
                )))
            }
        };
        let bound = |k: &str| -> CommandResult<Option<Document>> {
            if !with_min_max {
                return Ok(None);
            }
            match body.get(k) {
                None | Some(Bson::Null) => Ok(None),
                Some(Bson::Document(d)) if d.is_empty() => Ok(None),
                Some(Bson::Document(d)) => Ok(Some(d.clone())),
                Some(other) => Err(CommandError::type_mismatch(format!(
                    "BSON field '{cmd}.{k}' is the wrong type '{:?}', expected type 'object'",
                    other.element_type()
                ))),
            }
        };
        Ok(PlanRequest {
            hint,
            min: bound("min")?,
            max: bound("max")?,
        })
    }
}

fn hint_not_found(ns: &str) -> CommandError {
    CommandError::bad_value(format!(
        "error processing query: ns={ns} planner returned error :: caused by :: hint provided does not correspond to an existing index"
    ))
}

/// The index order of a key pattern, or why mongo-sim cannot scan that index.
fn index_order(index: &IndexSpec) -> CommandResult<SortSpec> {
    let mut spec = Document::new();
    for (k, v) in &index.key {
        let dir = match v {
            Bson::Int32(n) => *n as f64,
            Bson::Int64(n) => *n as f64,
            Bson::Double(n) => *n,
            other => {
                return Err(CommandError::bad_value(format!(
                    "hint: scanning a {other} index ('{}') is not supported by mongo-sim",
                    index.name
                )))
            }
        };
        spec.insert(k.clone(), if dir < 0.0 { -1 } else { 1 });
    }
    if index.options.contains_key("partialFilterExpression") {
        return Err(CommandError::bad_value(format!(
            "hint: scanning a partial index ('{}') is not supported by mongo-sim",
            index.name
        )));
    }
    SortSpec::parse(&spec)
}

/// MongoDB's `indexCompatibleMaxMin`: the bound names the index's fields, all and in order.
fn compatible(bound: &Document, index: &IndexSpec) -> bool {
    bound.len() == index.key.len() && bound.keys().zip(index.key.keys()).all(|(a, b)| a == b)
}

/// The plan for a query on `coll` (`None`: the collection does not exist, MongoDB's EOF plan,
/// for which any hint is fine).
pub fn choose(coll: Option<&Collection>, ns: &str, req: &PlanRequest) -> CommandResult<Plan> {
    let hint = match &req.hint {
        Some(Bson::Document(d)) if d.is_empty() => None,
        h => h.as_ref(),
    };
    let natural = match hint {
        Some(Bson::Document(d)) if d.contains_key("$natural") => Some(
            d.get("$natural")
                .and_then(|v| match v {
                    Bson::Int32(n) => Some(*n as f64),
                    Bson::Int64(n) => Some(*n as f64),
                    Bson::Double(n) => Some(*n),
                    _ => None,
                })
                .is_some_and(|n| n < 0.0),
        ),
        _ => None,
    };
    let index = match (hint, natural) {
        (Some(_), Some(_)) | (None, _) => None,
        (Some(h), None) => match coll {
            None => None,
            Some(c) => {
                let found = c.indexes.iter().find(|i| match h {
                    Bson::String(name) => &i.name == name,
                    Bson::Document(key) => &i.key == key,
                    _ => false,
                });
                Some(found.ok_or_else(|| hint_not_found(ns))?)
            }
        },
    };
    if req.min.is_some() || req.max.is_some() {
        let Some(index) = index else {
            return Err(CommandError::new(
                51173,
                "When using min()/max() a hint of which index to use must be provided",
            ));
        };
        if !req
            .min
            .iter()
            .chain(req.max.iter())
            .all(|b| compatible(b, index))
        {
            return Err(CommandError::new(
                51174,
                "The index chosen is not compatible with min/max",
            ));
        }
        let order = index_order(index)?;
        if let (Some(lo), Some(hi)) = (&req.min, &req.max) {
            if order.compare_bounds(lo, hi) != Ordering::Less {
                return Err(CommandError::new(
                    51175,
                    "The value provided for min() does not come before the value provided for max() in the hinted index",
                ));
            }
        }
    }
    match index {
        None => Ok(Plan::CollScan {
            reverse: natural.unwrap_or(false),
        }),
        Some(index) => Ok(Plan::IxScan {
            order: index_order(index)?,
            index: Box::new(index.clone()),
            min: req.min.clone(),
            max: req.max.clone(),
        }),
    }
}

impl Plan {
    /// Puts the (already filtered) documents of a scan in the plan's order, keeping only what
    /// the scan sees: its bounds, and for a sparse index the documents it has keys for.
    pub fn order<'a>(&self, docs: Vec<&'a Document>) -> Vec<&'a Document> {
        self.order_by(docs, |d| d)
    }

    /// [`Plan::order`] for items that carry a document.
    pub fn order_by<'a, T>(&self, items: Vec<T>, doc: impl Fn(&T) -> &'a Document) -> Vec<T> {
        match self {
            Plan::CollScan { reverse: false } => items,
            Plan::CollScan { reverse: true } => items.into_iter().rev().collect(),
            Plan::IxScan {
                index,
                order,
                min,
                max,
            } => {
                let sparse = index
                    .options
                    .get("sparse")
                    .is_some_and(|v| matches!(v, Bson::Boolean(true)) || v.as_i32() == Some(1));
                let mut items: Vec<T> = items
                    .into_iter()
                    .filter(|t| {
                        let d = doc(t);
                        (!sparse
                            || index
                                .key
                                .keys()
                                .any(|k| crate::query::path::get(d, k).is_some()))
                            && min
                                .as_ref()
                                .is_none_or(|m| order.compare_to_bound(d, m) != Ordering::Less)
                            && max
                                .as_ref()
                                .is_none_or(|m| order.compare_to_bound(d, m) == Ordering::Less)
                    })
                    .collect();
                items.sort_by(|a, b| order.compare(doc(a), doc(b)));
                items
            }
        }
    }

    /// `queryPlanner.winningPlan` as `explain` shows it: the scan under a FETCH/FILTER.
    pub fn winning_plan(&self, filter: &Document) -> Document {
        let mut plan = match self {
            Plan::CollScan { reverse } => {
                let mut p = doc! {
                    "stage": "COLLSCAN",
                    "direction": if *reverse { "backward" } else { "forward" },
                };
                if !filter.is_empty() {
                    p.insert("filter", filter.clone());
                }
                return p;
            }
            Plan::IxScan {
                index, min, max, ..
            } => {
                let mut ix = doc! {
                    "stage": "IXSCAN",
                    "keyPattern": index.key.clone(),
                    "indexName": index.name.clone(),
                    "isMultiKey": false,
                    "isUnique": index.unique || index.name == "_id_",
                    "isSparse": index.options.get_bool("sparse").unwrap_or(false),
                    "isPartial": false,
                    "indexVersion": 2,
                    "direction": "forward",
                };
                if min.is_some() || max.is_some() {
                    ix.insert(
                        "indexBounds",
                        doc! {
                            "min": min.clone().unwrap_or_default(),
                            "max": max.clone().unwrap_or_default(),
                        },
                    );
                } else {
                    let bounds: Document = index
                        .key
                        .keys()
                        .map(|k| (k.clone(), Bson::Array(vec!["[MinKey, MaxKey]".into()])))
                        .collect();
                    ix.insert("indexBounds", bounds);
                }
                doc! {"stage": "FETCH", "inputStage": ix}
            }
        };
        if !filter.is_empty() {
            plan.insert("filter", filter.clone());
        }
        plan
    }
}
