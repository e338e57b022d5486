//! The stream request parser (`/v1/stream?channel=…&lastEventId=…&backlog=…` plus the
//! `Last-Event-ID` header): never panics, refuses with a 400 whose message stays short, and
//! what it accepts is within the limits. The input is split at the first NUL into the query
//! string and the header.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mongo_sse::http::query::parse;

const MAX_CHANNELS: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (query, header) = match s.split_once('\0') {
        Some((q, h)) => (q, Some(h)),
        None => (s, None),
    };
    match parse(query, header, MAX_CHANNELS, None) {
        Ok(r) => {
            assert!(!r.channels.is_empty() && r.channels.len() <= MAX_CHANNELS);
            assert!(r.backlog <= 1000);
        }
        Err(e) => {
            assert_eq!(e.status.as_u16(), 400);
            assert!(
                e.message.len() < 512,
                "error messages echo input only briefly"
            );
        }
    }
});
