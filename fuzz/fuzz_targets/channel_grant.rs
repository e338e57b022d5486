//! Channel names and grants (from URLs and from token claims): parsing never panics, every
//! channel name is also a grant that covers exactly itself and below, and matching agrees with
//! a plain reference implementation. The input is split at the first NUL into a grant and a
//! channel.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mongo_sse::auth::grant::Grant;
use mongo_sse::channel::Channel;

fn reference_covers(grant: &str, channel: &str) -> bool {
    let g: Vec<&str> = grant.split(':').collect();
    let c: Vec<&str> = channel.split(':').collect();
    c.len() >= g.len() && g.iter().zip(&c).all(|(g, c)| *g == "*" || g == c)
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (g, c) = s.split_once('\0').unwrap_or((s, s));
    let channel = Channel::parse(c);
    let grant = Grant::parse(g);
    if let Ok(ch) = &channel {
        assert_eq!(ch.as_str(), c);
        let as_grant = Grant::parse(c).expect("every channel name is a grant");
        assert!(as_grant.covers(ch));
        for a in ch.ancestors_and_self() {
            assert!(Grant::parse(a).expect("ancestor").covers(ch));
        }
    }
    if let (Ok(gr), Ok(ch)) = (&grant, &channel) {
        assert_eq!(gr.covers(ch), reference_covers(g, c), "{g:?} over {c:?}");
    }
});
