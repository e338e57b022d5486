//! Properties of the position codec (the SSE event id), checked with proptest on its public
//! API: every position round-trips through its encoding, there is exactly one spelling per
//! position, order follows the encoded bytes, and arbitrary input never panics. (Grant matching
//! has its property tests beside the code, in `src/auth/grant.rs`; the fuzz targets in `fuzz/`
//! explore the same parsers with coverage guidance.)

use std::cmp::Ordering;

use bson::doc;
use mongo_sse::position::{PollCursor, Position, MAX_LEN};
use proptest::prelude::*;

/// Resume-token data: whole bytes as uppercase hex, within the length bound.
fn token_hex() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), 1..=(MAX_LEN - 2) / 2)
        .prop_map(|b| b.iter().map(|x| format!("{x:02X}")).collect())
}

fn short_token_hex() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..24)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn oid() -> impl Strategy<Value = Option<bson::oid::ObjectId>> {
    prop::option::of(any::<[u8; 12]>().prop_map(bson::oid::ObjectId::from_bytes))
}

proptest! {
    #[test]
    fn change_stream_positions_round_trip(data in token_hex()) {
        let token = doc! {"_data": data.as_str()};
        let p = Position::from_resume_token(&token).unwrap();
        prop_assert_eq!(p.encode(), format!("c.{data}"));
        let back = Position::decode(p.encode()).unwrap();
        prop_assert_eq!(&back, &p);
        prop_assert_eq!(back.to_resume_token(), Some(token));
        prop_assert_eq!(p.cmp_same_kind(&back), Some(Ordering::Equal));
    }

    #[test]
    fn change_stream_order_is_byte_order(a in short_token_hex(), b in short_token_hex()) {
        let pa = Position::decode(&format!("c.{}", hex(&a))).unwrap();
        let pb = Position::decode(&format!("c.{}", hex(&b))).unwrap();
        prop_assert_eq!(pa.cmp_same_kind(&pb), Some(a.cmp(&b)));
    }

    #[test]
    fn polling_positions_round_trip_and_order(
        fp in any::<u32>(), h1 in oid(), l1 in any::<u32>(), h2 in oid(), l2 in any::<u32>()
    ) {
        let a = Position::Polling(PollCursor::new(fp, h1, l1));
        let b = Position::Polling(PollCursor::new(fp, h2, l2));
        for p in [&a, &b] {
            prop_assert_eq!(&Position::decode(p.encode()).unwrap(), p);
            prop_assert!(p.encode().len() <= MAX_LEN);
            prop_assert!(p.encode().bytes().all(|c| c.is_ascii_graphic()));
        }
        let key = |h: Option<bson::oid::ObjectId>, l: u32| (h.map(|o| o.bytes()), l);
        prop_assert_eq!(a.cmp_same_kind(&b), Some(key(h1, l1).cmp(&key(h2, l2))));
        let foreign = Position::Polling(PollCursor::new(fp ^ 1, h1, l1));
        prop_assert_eq!(a.cmp_same_kind(&foreign), None);
    }

    #[test]
    fn decoding_anything_never_panics_and_accepts_only_canonical_spellings(
        s in prop_oneof![
            "\\PC{0,64}",
            "c\\.[0-9A-Fa-f]{0,40}",
            "p\\.[0-9A-F]{0,9}\\.[0-9A-Fa-f-]{0,25}\\.[0-9A-F]{0,9}",
        ]
    ) {
        if let Ok(p) = Position::decode(&s) {
            prop_assert_eq!(p.encode(), s.as_str());
            prop_assert_eq!(Position::decode(p.encode()).unwrap(), p);
        }
    }
}
