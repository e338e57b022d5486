//! MongoDB's total order over BSON values.
//!
//! Every part of the query engine that compares values (sorting, `$gt`/`$lt`, `$min`/`$max`,
//! equality in filters and `$addToSet`) goes through [`compare`], so results agree with a real
//! server even when a collection mixes types: MongoDB first orders values by a *canonical type*
//! bracket and only then by value inside the bracket. Numbers of different BSON types share one
//! bracket and compare by numeric value, which is why `1`, `1i64` and `1.0` are equal.
//!
//! Strings compare by their UTF-8 bytes (the simple binary collation, which is what a server
//! without a collation uses).

use std::cmp::Ordering;

use bson::spec::BinarySubtype;
use bson::{Bson, Document};

/// The canonical type bracket of a value, as in MongoDB's `canonicalizeBSONType`: values of
/// different brackets compare by bracket alone.
pub fn type_rank(v: &Bson) -> u8 {
    match v {
        Bson::MinKey => 0,
        Bson::Null | Bson::Undefined => 5,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 10,
        Bson::String(_) | Bson::Symbol(_) => 15,
        Bson::Document(_) => 20,
        Bson::Array(_) => 25,
        Bson::Binary(_) => 30,
        Bson::ObjectId(_) => 35,
        Bson::Boolean(_) => 40,
        Bson::DateTime(_) => 45,
        Bson::Timestamp(_) => 47,
        Bson::RegularExpression(_) => 50,
        Bson::DbPointer(_) => 55,
        Bson::JavaScriptCode(_) => 60,
        Bson::JavaScriptCodeWithScope(_) => 65,
        Bson::MaxKey => 127,
    }
}

/// A number reduced to something comparable across BSON numeric types.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

/// Decimal128 is only exposed as bytes by the `bson` crate, so it is converted through its
/// string form to `f64`. That loses precision beyond ~15 significant digits, which is good
/// enough for a test server; the value itself is never rewritten, only compared.
pub(crate) fn decimal_to_f64(d: &bson::Decimal128) -> f64 {
    d.to_string().parse::<f64>().unwrap_or(f64::NAN)
}

/// The numeric value of a BSON number, `None` for any other type.
pub(crate) fn as_num(v: &Bson) -> Option<Num> {
    match v {
        Bson::Int32(i) => Some(Num::Int(i64::from(*i))),
        Bson::Int64(i) => Some(Num::Int(*i)),
        Bson::Double(f) => Some(Num::Float(*f)),
        Bson::Decimal128(d) => Some(Num::Float(decimal_to_f64(d))),
        _ => None,
    }
}

/// The value as `f64` when it is a number.
pub(crate) fn as_f64(v: &Bson) -> Option<f64> {
    match as_num(v)? {
        Num::Int(i) => Some(i as f64),
        Num::Float(f) => Some(f),
    }
}

/// Compares an integer with a double exactly (no rounding of large integers). NaN sorts below
/// every number, as in MongoDB.
fn cmp_int_float(i: i64, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Greater;
    }
    // 2^63 as f64; every i64 is strictly below it and at or above its negation.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f >= TWO_63 {
        return Ordering::Less;
    }
    if f < -TWO_63 {
        return Ordering::Greater;
    }
    let t = f.trunc();
    // In range, so the cast is exact.
    let ti = t as i64;
    match i.cmp(&ti) {
        Ordering::Equal => 0.0_f64.partial_cmp(&(f - t)).unwrap_or(Ordering::Equal),
        o => o,
    }
}

fn cmp_float(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        // Neither is NaN, so partial_cmp is total; -0.0 == 0.0 as in MongoDB.
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

pub(crate) fn cmp_num(a: Num, b: Num) -> Ordering {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        (Num::Float(x), Num::Float(y)) => cmp_float(x, y),
        (Num::Int(x), Num::Float(y)) => cmp_int_float(x, y),
        (Num::Float(x), Num::Int(y)) => cmp_int_float(y, x).reverse(),
    }
}

fn binary_subtype_byte(s: BinarySubtype) -> u8 {
    u8::from(s)
}

/// Compares two documents the way MongoDB does: pair by pair in field order, first by the
/// canonical type of the values, then by field name, then by value; a prefix sorts first.
pub fn compare_documents(a: &Document, b: &Document) -> Ordering {
    let mut ia = a.iter();
    let mut ib = b.iter();
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((ka, va)), Some((kb, vb))) => {
                let o = type_rank(va)
                    .cmp(&type_rank(vb))
                    .then_with(|| ka.as_bytes().cmp(kb.as_bytes()))
                    .then_with(|| compare(va, vb));
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

fn compare_arrays(a: &[Bson], b: &[Bson]) -> Ordering {
    for (x, y) in a.iter().zip(b.iter()) {
        let o = compare(x, y);
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// MongoDB's comparison of two BSON values (see the module documentation).
pub fn compare(a: &Bson, b: &Bson) -> Ordering {
    let (ra, rb) = (type_rank(a), type_rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Bson::String(x) | Bson::Symbol(x), Bson::String(y) | Bson::Symbol(y)) => {
            x.as_bytes().cmp(y.as_bytes())
        }
        (Bson::Document(x), Bson::Document(y)) => compare_documents(x, y),
        (Bson::Array(x), Bson::Array(y)) => compare_arrays(x, y),
        (Bson::Binary(x), Bson::Binary(y)) => x
            .bytes
            .len()
            .cmp(&y.bytes.len())
            .then_with(|| binary_subtype_byte(x.subtype).cmp(&binary_subtype_byte(y.subtype)))
            .then_with(|| x.bytes.cmp(&y.bytes)),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.timestamp_millis().cmp(&y.timestamp_millis()),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => {
            x.time.cmp(&y.time).then(x.increment.cmp(&y.increment))
        }
        (Bson::RegularExpression(x), Bson::RegularExpression(y)) => x
            .pattern
            .cmp(&y.pattern)
            .then_with(|| x.options.cmp(&y.options)),
        (Bson::DbPointer(_), Bson::DbPointer(_)) => Ordering::Equal,
        (Bson::JavaScriptCode(x), Bson::JavaScriptCode(y)) => x.cmp(y),
        (Bson::JavaScriptCodeWithScope(x), Bson::JavaScriptCodeWithScope(y)) => x
            .code
            .cmp(&y.code)
            .then_with(|| compare_documents(&x.scope, &y.scope)),
        _ => match (as_num(a), as_num(b)) {
            (Some(x), Some(y)) => cmp_num(x, y),
            // MinKey/MaxKey/Null/Undefined: same bracket means equal.
            _ => Ordering::Equal,
        },
    }
}

/// Equality as a query sees it: numbers are equal across types (`1 == 1i64 == 1.0`), null
/// equals undefined, documents and arrays are equal element by element.
pub fn equal(a: &Bson, b: &Bson) -> bool {
    compare(a, b) == Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId, Binary, DateTime, Decimal128, Regex, Timestamp};
    use std::str::FromStr;

    #[test]
    fn type_order() {
        let ordered = vec![
            Bson::MinKey,
            Bson::Null,
            Bson::Int32(5),
            Bson::String("a".into()),
            Bson::Document(doc! {}),
            Bson::Array(vec![]),
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: vec![],
            }),
            Bson::ObjectId(ObjectId::new()),
            Bson::Boolean(false),
            Bson::DateTime(DateTime::from_millis(0)),
            Bson::Timestamp(Timestamp {
                time: 0,
                increment: 0,
            }),
            Bson::RegularExpression(Regex {
                pattern: "a".into(),
                options: String::new(),
            }),
            Bson::MaxKey,
        ];
        for i in 0..ordered.len() {
            for j in 0..ordered.len() {
                assert_eq!(
                    compare(&ordered[i], &ordered[j]),
                    i.cmp(&j),
                    "{:?} vs {:?}",
                    ordered[i],
                    ordered[j]
                );
            }
        }
    }

    #[test]
    fn numbers_cross_type() {
        assert!(equal(&Bson::Int32(1), &Bson::Int64(1)));
        assert!(equal(&Bson::Int32(1), &Bson::Double(1.0)));
        assert!(equal(
            &Bson::Decimal128(Decimal128::from_str("1.0").unwrap()),
            &Bson::Int32(1)
        ));
        assert_eq!(compare(&Bson::Int32(1), &Bson::Double(1.5)), Ordering::Less);
        assert_eq!(
            compare(&Bson::Double(-0.5), &Bson::Int64(0)),
            Ordering::Less
        );
        assert_eq!(
            compare(&Bson::Int64(i64::MAX), &Bson::Double(9.3e18)),
            Ordering::Less
        );
        // Large integers are not rounded through f64.
        assert_eq!(
            compare(&Bson::Int64(i64::MAX), &Bson::Int64(i64::MAX - 1)),
            Ordering::Greater
        );
        assert_eq!(
            compare(
                &Bson::Int64(9_007_199_254_740_993),
                &Bson::Double(9_007_199_254_740_992.0)
            ),
            Ordering::Greater
        );
        // NaN is below every number and equal to itself.
        assert_eq!(
            compare(&Bson::Double(f64::NAN), &Bson::Int32(i32::MIN)),
            Ordering::Less
        );
        assert!(equal(&Bson::Double(f64::NAN), &Bson::Double(f64::NAN)));
        assert!(equal(&Bson::Double(0.0), &Bson::Double(-0.0)));
    }

    #[test]
    fn null_and_undefined_are_equal() {
        assert!(equal(&Bson::Null, &Bson::Undefined));
        assert_eq!(compare(&Bson::Null, &Bson::Int32(0)), Ordering::Less);
    }

    #[test]
    fn documents_field_by_field() {
        let a = Bson::Document(doc! {"a": 1, "b": 2});
        let b = Bson::Document(doc! {"a": 1, "b": 3});
        assert_eq!(compare(&a, &b), Ordering::Less);
        // Field names compare after the value type bracket.
        let c = Bson::Document(doc! {"b": 1});
        assert_eq!(compare(&a, &c), Ordering::Less);
        let d = Bson::Document(doc! {"a": "x"});
        assert_eq!(
            compare(&d, &Bson::Document(doc! {"z": 1})),
            Ordering::Greater
        );
        // Prefix sorts first.
        assert_eq!(compare(&Bson::Document(doc! {"a": 1}), &a), Ordering::Less);
        // Field order matters for equality.
        assert!(!equal(
            &Bson::Document(doc! {"a": 1, "b": 1}),
            &Bson::Document(doc! {"b": 1, "a": 1})
        ));
        assert!(equal(
            &Bson::Document(doc! {"a": 1, "b": 1.0}),
            &Bson::Document(doc! {"a": 1i64, "b": 1})
        ));
    }

    #[test]
    fn arrays_and_binary() {
        let a = Bson::Array(vec![1.into(), 2.into()]);
        let b = Bson::Array(vec![1.into(), 3.into()]);
        let c = Bson::Array(vec![1.into()]);
        assert_eq!(compare(&a, &b), Ordering::Less);
        assert_eq!(compare(&c, &a), Ordering::Less);
        let bin = |st: BinarySubtype, bytes: Vec<u8>| Bson::Binary(Binary { subtype: st, bytes });
        assert_eq!(
            compare(
                &bin(BinarySubtype::Generic, vec![9, 9]),
                &bin(BinarySubtype::Generic, vec![1, 1, 1])
            ),
            Ordering::Less
        );
        assert_eq!(
            compare(
                &bin(BinarySubtype::Uuid, vec![1]),
                &bin(BinarySubtype::Generic, vec![2])
            ),
            Ordering::Greater
        );
    }

    #[test]
    fn strings_and_symbols_share_bracket() {
        assert!(equal(&Bson::Symbol("a".into()), &Bson::String("a".into())));
        assert_eq!(
            compare(&Bson::String("B".into()), &Bson::String("a".into())),
            Ordering::Less
        );
    }
}
