//! The position codec (SSE event ids come back from browsers as `Last-Event-ID`): decoding
//! never panics, accepts only canonical spellings, and whatever it accepts round-trips.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mongo_sse::position::{Position, MAX_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = Position::decode(s) else {
        return;
    };
    assert_eq!(p.encode(), s, "one spelling per position");
    assert!(s.len() <= MAX_LEN);
    assert!(
        s.bytes().all(|b| b.is_ascii_graphic()),
        "ids travel in headers"
    );
    let again = Position::decode(p.encode()).expect("an encoded position decodes");
    assert_eq!(again, p);
    assert_eq!(p.cmp_same_kind(&again), Some(std::cmp::Ordering::Equal));
    if let Some(token) = p.to_resume_token() {
        assert_eq!(
            Position::from_resume_token(&token).expect("token round trip"),
            p
        );
    }
    let _ = p.cluster_time();
});
