//! BSON documents as plain JSON for browsers.
//!
//! Browsers parse `data:` with `JSON.parse`, so the output favours what JavaScript can use
//! directly over lossless round-tripping: ObjectIds become hex strings, dates RFC 3339 strings
//! that `new Date()` accepts, binary data base64. Only values with no natural JSON spelling fall
//! back to MongoDB's relaxed Extended JSON (`{"$timestamp": ...}`, `{"$numberDouble": "NaN"}`),
//! which is at least unambiguous and documented.

use base64::Engine as _;
use bson::{Bson, Document};
use serde_json::{Map, Number, Value};

/// Converts a document. Field order is preserved.
pub fn to_json(doc: &Document) -> Value {
    Value::Object(object(doc))
}

/// Converts any BSON value (used for array elements and nested documents).
pub fn bson_to_json(value: &Bson) -> Value {
    match value {
        Bson::ObjectId(oid) => Value::String(oid.to_hex()),
        Bson::DateTime(dt) => match rfc3339_millis(dt.timestamp_millis()) {
            Some(s) => Value::String(s),
            None => value.clone().into_relaxed_extjson(),
        },
        Bson::Int32(i) => Value::Number((*i).into()),
        Bson::Int64(i) => Value::Number((*i).into()),
        Bson::Double(f) => match Number::from_f64(*f) {
            Some(n) => Value::Number(n),
            // NaN and the infinities have no JSON number; relaxed Extended JSON spells them
            // {"$numberDouble": "NaN" | "Infinity" | "-Infinity"}.
            None => value.clone().into_relaxed_extjson(),
        },
        Bson::Decimal128(d) => Value::String(d.to_string()),
        Bson::Binary(b) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(&b.bytes))
        }
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Null => Value::Null,
        Bson::String(s) => Value::String(s.clone()),
        Bson::Document(d) => Value::Object(object(d)),
        Bson::Array(a) => Value::Array(a.iter().map(bson_to_json).collect()),
        // Timestamp, RegularExpression, JavaScriptCode(WithScope), Symbol, MinKey, MaxKey,
        // Undefined, DbPointer.
        other => other.clone().into_relaxed_extjson(),
    }
}

fn object(doc: &Document) -> Map<String, Value> {
    doc.iter()
        .map(|(k, v)| (k.clone(), bson_to_json(v)))
        .collect()
}

const MS_PER_DAY: i64 = 86_400_000;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for years 0000 through 9999, the range RFC 3339 can spell (and
/// `Date.parse` accepts). Other instants return `None` and fall back to Extended JSON.
///
/// Computed by hand (Howard Hinnant's `civil_from_days`) rather than pulling in chrono for one
/// format string.
fn rfc3339_millis(ms: i64) -> Option<String> {
    let days = ms.div_euclid(MS_PER_DAY);
    let ms_of_day = ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    let (h, rem) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
    let (min, rem) = (rem / 60_000, rem % 60_000);
    let (s, milli) = (rem / 1000, rem % 1000);
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z"
    ))
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
/// `days` comes from an i64 of milliseconds, so it is within ±1.1e11 and nothing overflows.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId, spec::BinarySubtype, Binary, DateTime, Timestamp};
    use serde_json::json;

    #[test]
    fn natural_types() {
        let oid = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let d = doc! {
            "_id": oid,
            "s": "héllo\n",
            "i": 1_i32,
            "l": 9_007_199_254_740_993_i64,
            "f": 1.5,
            "b": true,
            "n": null,
            "nested": {"a": [1_i32, "x", {"b": null}]},
            "bin": Binary { subtype: BinarySubtype::Generic, bytes: b"hello?".to_vec() },
            "dec": "1.50".parse::<bson::Decimal128>().unwrap(),
        };
        assert_eq!(
            to_json(&d),
            json!({
                "_id": "65a1b2c3d4e5f60718293a4b",
                "s": "héllo\n",
                "i": 1,
                "l": 9_007_199_254_740_993_i64,
                "f": 1.5,
                "b": true,
                "n": null,
                "nested": {"a": [1, "x", {"b": null}]},
                "bin": "aGVsbG8/",
                "dec": "1.50",
            })
        );
    }

    #[test]
    fn preserves_field_order() {
        let d = doc! {"z": 1_i32, "a": 2_i32, "m": 3_i32};
        assert_eq!(to_json(&d).to_string(), r#"{"z":1,"a":2,"m":3}"#);
    }

    #[test]
    fn dates() {
        let t = |ms: i64| bson_to_json(&Bson::DateTime(DateTime::from_millis(ms)));
        assert_eq!(t(0), json!("1970-01-01T00:00:00.000Z"));
        assert_eq!(t(1_705_000_000_123), json!("2024-01-11T19:06:40.123Z"));
        assert_eq!(t(-1), json!("1969-12-31T23:59:59.999Z"));
        assert_eq!(t(951_782_400_000), json!("2000-02-29T00:00:00.000Z"));
        assert_eq!(t(-62_167_219_200_000), json!("0000-01-01T00:00:00.000Z"));
        assert_eq!(t(253_402_300_799_999), json!("9999-12-31T23:59:59.999Z"));
        // Outside RFC 3339: relaxed Extended JSON.
        assert_eq!(
            t(253_402_300_800_000),
            json!({"$date": {"$numberLong": "253402300800000"}})
        );
        assert_eq!(
            t(i64::MIN),
            json!({"$date": {"$numberLong": i64::MIN.to_string()}})
        );
        assert_eq!(
            t(i64::MAX),
            json!({"$date": {"$numberLong": i64::MAX.to_string()}})
        );
    }

    #[test]
    fn civil_matches_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn non_finite_doubles() {
        assert_eq!(
            bson_to_json(&Bson::Double(f64::NAN)),
            json!({"$numberDouble": "NaN"})
        );
        assert_eq!(
            bson_to_json(&Bson::Double(f64::INFINITY)),
            json!({"$numberDouble": "Infinity"})
        );
        assert_eq!(
            bson_to_json(&Bson::Double(f64::NEG_INFINITY)),
            json!({"$numberDouble": "-Infinity"})
        );
    }

    #[test]
    fn exotic_types_use_relaxed_extjson() {
        let d = doc! {
            "ts": Timestamp { time: 5, increment: 2 },
            "re": bson::Regex { pattern: "^a".into(), options: "i".into() },
            "js": Bson::JavaScriptCode("f()".into()),
            "sym": Bson::Symbol("s".into()),
            "min": Bson::MinKey,
            "max": Bson::MaxKey,
            "u": Bson::Undefined,
        };
        assert_eq!(
            to_json(&d),
            json!({
                "ts": {"$timestamp": {"t": 5, "i": 2}},
                "re": {"$regularExpression": {"pattern": "^a", "options": "i"}},
                "js": {"$code": "f()"},
                "sym": {"$symbol": "s"},
                "min": {"$minKey": 1},
                "max": {"$maxKey": 1},
                "u": {"$undefined": true},
            })
        );
    }
}
