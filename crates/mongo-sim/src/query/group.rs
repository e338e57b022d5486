//! `$group`: documents bucketed by an `_id` expression, with accumulators. The driver's
//! `count_documents` is `$match` + `$group: {_id: 1, n: {$sum: 1}}`, so this is on the path of
//! ordinary client code, not just aggregation users.

use std::collections::HashMap;

use bson::{Bson, Document};

use super::compare::{self, as_num, Num};
use super::expr::Expr;
use crate::error::{CommandError, CommandResult};

#[derive(Debug, Clone)]
enum Op {
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
    Push,
    AddToSet,
    Count,
}

#[derive(Debug, Clone)]
pub struct Group {
    id: Expr,
    fields: Vec<(String, Op, Expr)>,
}

#[derive(Debug, Clone)]
enum Acc {
    Sum {
        int: i64,
        float: f64,
        is_float: bool,
    },
    Avg {
        total: f64,
        n: u64,
    },
    Pick(Option<Bson>),
    List(Vec<Bson>),
}

impl Group {
    pub fn parse(arg: &Bson) -> CommandResult<Group> {
        let Bson::Document(spec) = arg else {
            return Err(CommandError::new(
                15947,
                "a group's fields must be specified in an object",
            ));
        };
        let id = spec
            .get("_id")
            .ok_or_else(|| CommandError::new(15955, "a group specification must include an _id"))?;
        let id = Expr::parse(id)?;
        let mut fields = Vec::new();
        for (name, acc) in spec.iter().filter(|(k, _)| *k != "_id") {
            if name.contains('.') {
                return Err(CommandError::new(
                    40235,
                    format!("The field name '{name}' cannot contain '.'"),
                ));
            }
            let Bson::Document(acc) = acc else {
                return Err(CommandError::new(
                    40234,
                    format!("The field '{name}' must be an accumulator object"),
                ));
            };
            if acc.len() != 1 {
                return Err(CommandError::new(
                    40238,
                    format!("The field '{name}' must specify one accumulator"),
                ));
            }
            let Some((op_name, operand)) = acc.iter().next() else {
                continue;
            };
            let op = match op_name.as_str() {
                "$sum" => Op::Sum,
                "$avg" => Op::Avg,
                "$min" => Op::Min,
                "$max" => Op::Max,
                "$first" => Op::First,
                "$last" => Op::Last,
                "$push" => Op::Push,
                "$addToSet" => Op::AddToSet,
                "$count" => Op::Count,
                other => {
                    return Err(CommandError::new(
                        15952,
                        format!("unknown group operator '{other}'"),
                    ))
                }
            };
            fields.push((name.clone(), op, Expr::parse(operand)?));
        }
        Ok(Group { id, fields })
    }

    pub fn run(&self, docs: Vec<Document>) -> Vec<Document> {
        // Groups in order of first appearance; keys compare as MongoDB values (1 == 1.0).
        let mut order: Vec<(Bson, Vec<Acc>)> = Vec::new();
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        for doc in &docs {
            let key = self.id.evaluate(doc).unwrap_or(Bson::Null);
            let slot = *index
                .entry(crate::store::canonical_key(std::slice::from_ref(&key)))
                .or_insert_with(|| {
                    order.push((
                        key.clone(),
                        self.fields.iter().map(|(_, op, _)| Acc::new(op)).collect(),
                    ));
                    order.len() - 1
                });
            for ((_, op, expr), acc) in self.fields.iter().zip(order[slot].1.iter_mut()) {
                acc.add(op, expr.evaluate(doc));
            }
        }
        order
            .into_iter()
            .map(|(key, accs)| {
                let mut out = Document::new();
                out.insert("_id", key);
                for ((name, _, _), acc) in self.fields.iter().zip(accs) {
                    out.insert(name.clone(), acc.finish());
                }
                out
            })
            .collect()
    }
}

impl Acc {
    fn new(op: &Op) -> Acc {
        match op {
            Op::Sum | Op::Count => Acc::Sum {
                int: 0,
                float: 0.0,
                is_float: false,
            },
            Op::Avg => Acc::Avg { total: 0.0, n: 0 },
            Op::Min | Op::Max | Op::First | Op::Last => Acc::Pick(None),
            Op::Push | Op::AddToSet => Acc::List(Vec::new()),
        }
    }

    fn add(&mut self, op: &Op, value: Option<Bson>) {
        match (self, op) {
            (
                Acc::Sum {
                    int,
                    float,
                    is_float,
                },
                Op::Count,
            ) => {
                let _ = (float, is_float);
                *int += 1;
            }
            (
                Acc::Sum {
                    int,
                    float,
                    is_float,
                },
                _,
            ) => match value.as_ref().and_then(as_num) {
                Some(Num::Int(i)) if !*is_float => match int.checked_add(i) {
                    Some(s) => *int = s,
                    None => {
                        *is_float = true;
                        *float = *int as f64 + i as f64;
                    }
                },
                Some(Num::Int(i)) => *float += i as f64,
                Some(Num::Float(f)) => {
                    if !*is_float {
                        *is_float = true;
                        *float = *int as f64;
                    }
                    *float += f;
                }
                // $sum ignores non-numeric values.
                None => {}
            },
            (Acc::Avg { total, n }, _) => match value.as_ref().and_then(as_num) {
                Some(Num::Int(i)) => {
                    *total += i as f64;
                    *n += 1;
                }
                Some(Num::Float(f)) => {
                    *total += f;
                    *n += 1;
                }
                None => {}
            },
            (Acc::Pick(cur), Op::First) => {
                if cur.is_none() {
                    *cur = Some(value.unwrap_or(Bson::Null));
                }
            }
            (Acc::Pick(cur), Op::Last) => *cur = Some(value.unwrap_or(Bson::Null)),
            (Acc::Pick(cur), op) => {
                // $min/$max ignore missing and null.
                let Some(v) = value.filter(|v| !matches!(v, Bson::Null | Bson::Undefined)) else {
                    return;
                };
                let replace = match cur {
                    None => true,
                    Some(c) => {
                        let ord = compare::compare(&v, c);
                        if matches!(op, Op::Min) {
                            ord.is_lt()
                        } else {
                            ord.is_gt()
                        }
                    }
                };
                if replace {
                    *cur = Some(v);
                }
            }
            (Acc::List(items), Op::AddToSet) => {
                if let Some(v) = value {
                    if !items.iter().any(|x| compare::equal(x, &v)) {
                        items.push(v);
                    }
                }
            }
            (Acc::List(items), _) => {
                if let Some(v) = value {
                    items.push(v);
                }
            }
        }
    }

    fn finish(self) -> Bson {
        match self {
            Acc::Sum {
                int,
                float,
                is_float,
            } => {
                if is_float {
                    Bson::Double(float)
                } else if let Ok(i) = i32::try_from(int) {
                    Bson::Int32(i)
                } else {
                    Bson::Int64(int)
                }
            }
            Acc::Avg { total, n } => {
                if n == 0 {
                    Bson::Null
                } else {
                    Bson::Double(total / n as f64)
                }
            }
            Acc::Pick(v) => v.unwrap_or(Bson::Null),
            Acc::List(items) => Bson::Array(items),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn run(spec: Document, docs: Vec<Document>) -> Vec<Document> {
        Group::parse(&Bson::Document(spec)).unwrap().run(docs)
    }

    #[test]
    fn count_documents_shape() {
        let docs = vec![doc! {"a": 1}, doc! {"a": 2}, doc! {"a": 3}];
        assert_eq!(
            run(doc! {"_id": 1, "n": {"$sum": 1}}, docs),
            vec![doc! {"_id": 1, "n": 3}]
        );
        assert!(run(doc! {"_id": 1, "n": {"$sum": 1}}, vec![]).is_empty());
    }

    #[test]
    fn accumulators() {
        let docs = vec![
            doc! {"k": "x", "v": 1},
            doc! {"k": "y", "v": 2.5},
            doc! {"k": "x", "v": 3},
            doc! {"k": 1.0, "v": 1},
            doc! {"k": 1, "v": "s"},
        ];
        let out = run(
            doc! {"_id": "$k", "s": {"$sum": "$v"}, "a": {"$avg": "$v"}, "mn": {"$min": "$v"}, "mx": {"$max": "$v"},
            "f": {"$first": "$v"}, "l": {"$last": "$v"}, "p": {"$push": "$v"}, "u": {"$addToSet": "$k"}, "c": {"$count": {}}},
            docs,
        );
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[0],
            doc! {"_id": "x", "s": 4, "a": 2.0, "mn": 1, "mx": 3, "f": 1, "l": 3, "p": [1, 3], "u": ["x"], "c": 2}
        );
        assert_eq!(out[1].get("s"), Some(&Bson::Double(2.5)));
        // 1.0 and 1 are one group; strings are ignored by $sum and $avg, ordered above numbers by $max.
        assert_eq!(out[2].get("s"), Some(&Bson::Int32(1)));
        assert_eq!(out[2].get("mx"), Some(&Bson::String("s".into())));
    }

    #[test]
    fn rejects_bad_specs() {
        let code = |spec: Bson| Group::parse(&spec).unwrap_err().code;
        assert_eq!(code(Bson::Int32(1)), 15947);
        assert_eq!(code(Bson::Document(doc! {"n": {"$sum": 1}})), 15955);
        assert_eq!(
            code(Bson::Document(doc! {"_id": 1, "n": {"$median": 1}})),
            15952
        );
        assert_eq!(
            code(Bson::Document(doc! {"_id": 1, "a.b": {"$sum": 1}})),
            40235
        );
    }
}
