//! `explain` of `find` and `aggregate` (also `aggregate` with `explain: true`): the plan mongo-sim
//! actually runs, a `COLLSCAN` or the hinted index's `IXSCAN` under a `FETCH`, in MongoDB 7.0's
//! `queryPlanner.winningPlan` shape. `executionStats` verbosity runs the query and counts.

use super::plan::{self, Plan, PlanRequest};
use super::{collection_arg, doc_arg};
use crate::error::{codes, CommandError, CommandResult};
use crate::query::filter::Filter;
use crate::state::Shared;
use bson::{doc, Bson, Document};

fn verbosity(body: &Document) -> CommandResult<&str> {
    match body.get("verbosity") {
        None => Ok("allPlansExecution"),
        Some(Bson::String(v))
            if matches!(v.as_str(), "queryPlanner" | "executionStats" | "allPlansExecution") =>
        {
            Ok(v)
        }
        Some(Bson::String(v)) => Err(CommandError::failed_to_parse(format!(
            "verbosity string must be one of {{'queryPlanner', 'executionStats', 'allPlansExecution'}}, got '{v}'"
        ))),
        Some(_) => Err(CommandError::failed_to_parse(
            "explain verbosity must be a string",
        )),
    }
}

fn query_planner(ns: &str, filter: &Document, plan: &Plan) -> Document {
    doc! {
        "namespace": ns,
        "indexFilterSet": false,
        "parsedQuery": filter.clone(),
        "planCacheUsed": false,
        "maxIndexedOrSolutionsReached": false,
        "maxIndexedAndSolutionsReached": false,
        "maxScansToExplodeReached": false,
        "winningPlan": plan.winning_plan(filter),
        "rejectedPlans": [],
    }
}

fn server_info() -> Document {
    doc! {"host": "mongo-sim", "port": 27017, "version": super::handshake::VERSION, "gitVersion": "mongo-sim"}
}

/// `{explain: {find | aggregate: ...}, verbosity}`.
pub fn explain(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let inner = match body.get("explain") {
        Some(Bson::Document(d)) => d,
        _ => {
            return Err(CommandError::type_mismatch(
                "BSON field 'explain.explain' is the wrong type, expected type 'object'",
            ))
        }
    };
    let verbosity = verbosity(body)?;
    match inner.keys().next().map(String::as_str) {
        Some("find") => explain_find(shared, inner, db, verbosity),
        Some("aggregate") => explain_aggregate(shared, inner, db, verbosity),
        Some(other) => Err(CommandError::new(
            codes::COMMAND_NOT_SUPPORTED,
            format!("explain of '{other}' is not supported by mongo-sim (only find and aggregate)"),
        )),
        None => Err(CommandError::failed_to_parse("explain of an empty command")),
    }
}

fn explain_find(
    shared: &Shared,
    inner: &Document,
    db: &str,
    verbosity: &str,
) -> CommandResult<Document> {
    let coll = collection_arg(inner, "find")?;
    let ns = format!("{db}.{coll}");
    let filter_doc = doc_arg(inner, "filter")?.unwrap_or_default();
    let filter = Filter::parse(&filter_doc)?;
    let req = PlanRequest::from_command(inner, true, "find")?;
    let st = shared.lock();
    let plan = plan::choose(st.collection(db, coll), &ns, &req)?;
    let mut out = doc! {
        "explainVersion": "1",
        "queryPlanner": query_planner(&ns, &filter_doc, &plan),
    };
    if verbosity != "queryPlanner" {
        let examined = st.collection(db, coll).map_or(0, |c| c.len()) as i64;
        let n = super::crud::query(&st, db, coll, &filter, None, 0, None, &req)?.len() as i64;
        let keys = if matches!(plan, Plan::IxScan { .. }) {
            examined
        } else {
            0
        };
        out.insert(
            "executionStats",
            doc! {
                "executionSuccess": true,
                "nReturned": n,
                "executionTimeMillis": 0i64,
                "totalKeysExamined": keys,
                "totalDocsExamined": examined,
                "executionStages": plan.winning_plan(&filter_doc),
            },
        );
    }
    out.insert("command", inner.clone());
    out.insert("serverInfo", server_info());
    Ok(out)
}

fn explain_aggregate(
    shared: &Shared,
    inner: &Document,
    db: &str,
    _verbosity: &str,
) -> CommandResult<Document> {
    let coll = collection_arg(inner, "aggregate")?;
    let ns = format!("{db}.{coll}");
    let stages: Vec<Document> = inner
        .get_array("pipeline")
        .map_err(|_| {
            CommandError::type_mismatch("'pipeline' option must be specified as an array")
        })?
        .iter()
        .filter_map(|s| s.as_document().cloned())
        .collect();
    if stages.iter().any(|s| s.contains_key("$changeStream")) {
        return Err(CommandError::new(
            codes::COMMAND_NOT_SUPPORTED,
            "explain of a $changeStream is not supported by mongo-sim",
        ));
    }
    // Parse everything, so explain refuses what the aggregate itself would.
    crate::query::pipeline::Pipeline::parse(&stages)?;
    let req = PlanRequest::from_command(inner, false, "aggregate")?;
    let st = shared.lock();
    let plan = plan::choose(st.collection(db, coll), &ns, &req)?;
    // A leading $match is the scan's filter, as MongoDB pushes it down.
    let (filter, rest) = match stages.first().and_then(|s| s.get_document("$match").ok()) {
        Some(m) => (m.clone(), &stages[1..]),
        None => (Document::new(), &stages[..]),
    };
    let mut out_stages = vec![Bson::Document(doc! {
        "$cursor": {"queryPlanner": query_planner(&ns, &filter, &plan)},
    })];
    out_stages.extend(rest.iter().cloned().map(Bson::Document));
    Ok(doc! {
        "explainVersion": "1",
        "stages": out_stages,
        "command": inner.clone(),
        "serverInfo": server_info(),
    })
}

/// `aggregate` with `explain: true`: the same answer, at `queryPlanner` verbosity.
pub fn aggregate_explain(shared: &Shared, body: &Document, db: &str) -> CommandResult<Document> {
    let mut inner = body.clone();
    inner.remove("explain");
    explain_aggregate(shared, &inner, db, "queryPlanner")
}
