//! The checker: what one reader received on one channel against what the writers committed.
//!
//! Invariant 1 (DESIGN.md): per connection, across reconnects, commit order, no duplicates, no
//! gaps. Invariant 2: when an exact resume is impossible the client is told with a `gap` event
//! before anything else. So, per reader and channel, from the reader's first event on that
//! channel up to the last committed one:
//! - a committed event never received is **lost**, unless a `gap` arrived between the events
//!   received either side of it: then it is **excused** and counted under the gap's reason;
//! - an event received twice is **duplicated**;
//! - an event received after a later one is **out of order**;
//! - a `gap` that is not the first thing its connection delivered is a **late gap**.
//!
//! Writers own their channels and insert one document at a time, so on one channel commit
//! order is sequence order: "committed" is the sorted list of sequence numbers found in
//! MongoDB after the run (the truth, whatever the writers believed about failed requests).

use std::collections::{BTreeMap, HashMap, HashSet};

/// What a reader's stream delivered, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A new connection got its 200 response.
    Connected,
    /// A data event on `channel` carrying sequence number `seq`; `polled_id` is its
    /// document's `_id` (hex) when it came with a polling id.
    Event {
        channel: String,
        seq: u64,
        polled_id: Option<String>,
    },
    /// A `gap` event; `asked_secs` and `resumed_secs` are the times of its `last_event_id`
    /// and `resumed_at` positions (a change-stream token's cluster time, a polling cursor's
    /// ObjectId seconds), when they name one.
    Gap {
        reason: String,
        asked_secs: Option<u32>,
        resumed_secs: Option<u32>,
    },
    /// A `mode` event (`polling` or `change_stream`): not checked, kept to explain.
    Mode(String),
}

/// The verdict for one reader on one channel.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChannelResult {
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Missing events excused by a `gap`, per reason.
    pub excused: BTreeMap<String, u64>,
    /// Committed events on a channel the reader subscribed to, of which it received none.
    pub silent: bool,
    /// Up to a few examples of lost sequence numbers, for the report.
    pub lost_examples: Vec<u64>,
    /// For each example, the index in the entries of the event received right after it (where
    /// the loss shows), if any.
    pub lost_next_entry: Vec<Option<usize>>,
    /// Up to a few duplicated sequence numbers, each with the index of its second arrival.
    pub dup_examples: Vec<(u64, usize)>,
    /// Up to a few reorderings: the sequence number, the higher one received before it, the
    /// entry indices of both and the `_id`s they were polled with (if they were).
    pub ooo_examples: Vec<Reordered>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reordered {
    pub seq: u64,
    pub after: u64,
    pub at: usize,
    pub after_at: usize,
    pub polled: Option<String>,
    pub after_polled: Option<String>,
}

impl ChannelResult {
    pub fn violations(&self) -> u64 {
        self.lost + self.duplicated + self.out_of_order + u64::from(self.silent)
    }
}

/// Gaps that were not the first event of their connection.
pub fn late_gaps(entries: &[Entry]) -> u64 {
    let mut late = 0;
    let mut data_since_connect = false;
    for e in entries {
        match e {
            Entry::Connected => data_since_connect = false,
            Entry::Event { .. } => data_since_connect = true,
            Entry::Gap { .. } if data_since_connect => late += 1,
            Entry::Gap { .. } | Entry::Mode(_) => {}
        }
    }
    late
}

/// What is known about one channel's writes besides the sequence numbers committed.
#[derive(Debug, Default)]
pub struct Known {
    /// Writes whose outcome their writer never learnt: they may commit after later ones.
    pub uncertain: HashSet<u64>,
    /// The `_id` (hex) each accepted publish got, by sequence number.
    pub ids: HashMap<u64, String>,
    /// The ObjectId seconds of each committed document's `_id`, by sequence number.
    pub written_secs: HashMap<u64, u32>,
}

/// A gap as the checker weighs it.
#[derive(Debug, Clone)]
struct GapSeen {
    reason: String,
    asked_secs: Option<u32>,
    resumed_secs: Option<u32>,
}

impl GapSeen {
    /// Whether this gap can excuse a missing event written (ObjectId second) at `written`.
    /// A gap announces what lies between the client's position and `resumed_at`; an event
    /// written before that position should have been received before it, and is lost. (To
    /// the second, and a second more: a write may commit a little after its `_id`.) Not for
    /// `late_order_unknown`, whose missing documents are late ones, below its cursor.
    fn excuses(&self, written: Option<u32>) -> bool {
        let bounded = matches!(
            self.reason.as_str(),
            "history_lost" | "mode_changed" | "too_far_behind"
        );
        match (bounded, self.asked_secs, written) {
            (true, Some(asked), Some(w)) => w.saturating_add(1) >= asked,
            _ => true,
        }
    }
}

/// Checks one channel. `committed` is sorted; `complete` says the reader was alive to the end
/// (a reader that gave up is judged up to its last event only).
pub fn check_channel(
    entries: &[Entry],
    channel: &str,
    committed: &[u64],
    complete: bool,
    known: &Known,
) -> ChannelResult {
    let (uncertain, known_ids) = (&known.uncertain, &known.ids);
    let mut r = ChannelResult::default();
    // The received sequence of this channel, each with the gap reasons seen since the
    // previous event of the channel.
    let mut got: Vec<(u64, Vec<GapSeen>)> = Vec::new();
    let mut at: Vec<usize> = Vec::new();
    let mut polled: Vec<Option<&str>> = Vec::new();
    let mut pending_gaps: Vec<GapSeen> = Vec::new();
    // The last gap after the channel's last event, if any.
    let mut trailing_gap: Option<GapSeen> = None;
    for (i, e) in entries.iter().enumerate() {
        match e {
            Entry::Gap {
                reason,
                asked_secs,
                resumed_secs,
            } => {
                let gap = GapSeen {
                    reason: reason.clone(),
                    asked_secs: *asked_secs,
                    resumed_secs: *resumed_secs,
                };
                pending_gaps.push(gap.clone());
                trailing_gap = Some(gap);
            }
            Entry::Event {
                channel: c,
                seq,
                polled_id,
            } if c == channel => {
                got.push((*seq, std::mem::take(&mut pending_gaps)));
                trailing_gap = None;
                at.push(i);
                // A polled event whose `_id` the reader could not see: the writer knows it.
                polled.push(polled_id.as_deref().map(|id| match id {
                    "" => known_ids.get(seq).map_or("", String::as_str),
                    id => id,
                }));
            }
            _ => {}
        }
    }
    r.received = got.len() as u64;
    let Some(&(first, _)) = got.first() else {
        r.silent = complete && !committed.is_empty();
        return r;
    };
    let mut seen = HashSet::new();
    // The highest sequence so far, the `_id` it was polled with and where it is in `got`.
    let mut max_so_far: Option<(u64, Option<&str>, usize)> = None;
    for (k, (seq, _)) in got.iter().enumerate() {
        if !seen.insert(*seq) {
            r.duplicated += 1;
            if r.dup_examples.len() < 5 {
                r.dup_examples.push((*seq, at[k]));
            }
        } else if uncertain.contains(seq) {
            // A write whose outcome its writer never learnt may commit after later ones.
            continue;
        } else if let Some((m, m_id, m_k)) = max_so_far.filter(|(m, _, _)| *seq < *m) {
            // Polling cannot see commit order: what one poll finds is delivered in `_id`
            // order, and ObjectIds from different processes (the gateways make the
            // published events' `_id`s) sort by process within a second. Out of sequence
            // but in `_id` order, both polled, is what polling promises.
            let polled_in_id_order = matches!(
                (m_id, polled[k]),
                (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() && a < b
            );
            if !polled_in_id_order {
                r.out_of_order += 1;
                if r.ooo_examples.len() < 5 {
                    r.ooo_examples.push(Reordered {
                        seq: *seq,
                        after: m,
                        at: at[k],
                        after_at: at[m_k],
                        polled: polled[k].map(String::from),
                        after_polled: m_id.map(String::from),
                    });
                }
            }
            continue;
        }
        max_so_far = Some((*seq, polled[k], k));
    }
    // Which committed events each gap excuses: those strictly between the events received
    // either side of it.
    let mut excused_ranges: Vec<(u64, u64, &GapSeen)> = Vec::new();
    for w in got.windows(2) {
        let (before, _) = &w[0];
        let (after, gaps) = &w[1];
        if let Some(gap) = gaps.first() {
            excused_ranges.push((*before, *after, gap));
        }
    }
    let last = if complete {
        committed.last().copied().unwrap_or(first)
    } else {
        max_so_far.map_or(first, |(m, _, _)| m)
    };
    for &seq in committed.iter().filter(|s| **s >= first && **s <= last) {
        if seen.contains(&seq) {
            continue;
        }
        let written = known.written_secs.get(&seq).copied();
        // After the last event received, a gap excuses what was written by its `resumed_at`
        // (to the second: a write of that second may have committed just after it).
        let after_trailing_gap = || {
            let gap = trailing_gap.as_ref()?;
            let (w, resumed) = (written?, gap.resumed_secs?);
            (seq > max_so_far.map_or(first, |(m, _, _)| m) && w <= resumed && gap.excuses(written))
                .then_some(&gap.reason)
        };
        match excused_ranges
            .iter()
            .find(|(lo, hi, gap)| *lo < seq && seq < *hi && gap.excuses(written))
            .map(|(_, _, gap)| &gap.reason)
            .or_else(after_trailing_gap)
        {
            Some(reason) => *r.excused.entry(reason.clone()).or_default() += 1,
            None => {
                r.lost += 1;
                if r.lost_examples.len() < 5 {
                    r.lost_examples.push(seq);
                    let next = got.iter().position(|(s, _)| *s > seq).map(|k| at[k]);
                    r.lost_next_entry.push(next);
                }
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64) -> Entry {
        Entry::Event {
            channel: "c".into(),
            seq,
            polled_id: None,
        }
    }

    fn polled(seq: u64, id: &str) -> Entry {
        Entry::Event {
            channel: "c".into(),
            seq,
            polled_id: Some(id.into()),
        }
    }

    #[test]
    fn polled_events_in_id_order_are_not_out_of_order() {
        let committed = [0, 1, 2];
        // 2 committed after 1 with a smaller `_id`: one poll found both.
        let e = vec![
            Entry::Connected,
            polled(0, "6b0f0000aa"),
            polled(2, "6b0f0001aa"),
            polled(1, "6b0f0001bb"),
        ];
        let r = check_channel(&e, "c", &committed, true, &Known::default());
        assert_eq!((r.out_of_order, r.lost, r.duplicated), (0, 0, 0));
        // Against `_id` order, or not both polled: out of order.
        let e = vec![
            Entry::Connected,
            polled(0, "6b0f0000aa"),
            polled(2, "6b0f0001bb"),
            polled(1, "6b0f0001aa"),
        ];
        let r = check_channel(&e, "c", &committed, true, &Known::default());
        assert_eq!(r.out_of_order, 1);
        // A late published event: its `_id` comes from what the writer was answered.
        let e = vec![
            Entry::Connected,
            polled(0, "6b0f0000aa"),
            polled(2, ""),
            polled(1, ""),
        ];
        let known = HashMap::from([(2, "6b0f0001aa".to_string()), (1, "6b0f0001bb".to_string())]);
        let known = Known {
            ids: known,
            ..Known::default()
        };
        let r = check_channel(&e, "c", &committed, true, &known);
        assert_eq!(r.out_of_order, 0);
        let r = check_channel(&e, "c", &committed, true, &Known::default());
        assert_eq!(r.out_of_order, 1, "unknown ids cannot excuse");
        let e = vec![Entry::Connected, ev(0), ev(2), polled(1, "6b0f0001bb")];
        let r = check_channel(&e, "c", &committed, true, &Known::default());
        assert_eq!(r.out_of_order, 1);
    }
    fn gap(reason: &str) -> Entry {
        Entry::Gap {
            reason: reason.into(),
            asked_secs: None,
            resumed_secs: None,
        }
    }

    #[test]
    fn exact_delivery_across_a_reconnect_is_clean() {
        let e = vec![
            Entry::Connected,
            ev(3),
            ev(4),
            Entry::Connected,
            ev(5),
            ev(6),
        ];
        let r = check_channel(&e, "c", &[0, 1, 2, 3, 4, 5, 6], true, &Known::default());
        assert_eq!(r.violations(), 0, "{r:?}");
        assert_eq!(r.received, 4);
        // Other channels' events and channels are not mixed up.
        let r = check_channel(&e, "other", &[], true, &Known::default());
        assert_eq!(r.violations(), 0);
    }

    #[test]
    fn lost_duplicated_and_reordered_are_counted() {
        let e = vec![Entry::Connected, ev(0), ev(2), ev(2), ev(1), ev(4)];
        let r = check_channel(&e, "c", &[0, 1, 2, 3, 4, 5], true, &Known::default());
        assert_eq!(r.duplicated, 1);
        // A write of unknown outcome that committed late is not out of order.
        let late = check_channel(
            &e,
            "c",
            &[0, 1, 2, 3, 4, 5],
            true,
            &Known {
                uncertain: HashSet::from([1]),
                ..Known::default()
            },
        );
        assert_eq!(late.out_of_order, 0);
        assert_eq!(r.out_of_order, 1);
        // 3 was never received, nor the tail 5.
        assert_eq!(r.lost, 2);
        assert_eq!(r.lost_examples, vec![3, 5]);
        // A reader that gave up is judged up to its last event.
        let r = check_channel(&e, "c", &[0, 1, 2, 3, 4, 5], false, &Known::default());
        assert_eq!(r.lost, 1);
    }

    #[test]
    fn a_gap_excuses_what_lies_before_its_resume_point_only() {
        let e = vec![
            Entry::Connected,
            ev(0),
            ev(1),
            Entry::Connected,
            gap("history_lost"),
            ev(5),
            ev(7),
        ];
        let r = check_channel(&e, "c", &[0, 1, 2, 3, 4, 5, 6, 7], true, &Known::default());
        assert_eq!(r.excused.get("history_lost"), Some(&3));
        // 6 was lost after the resume point: no gap excuses it.
        assert_eq!(r.lost, 1);
        assert_eq!(r.lost_examples, vec![6]);
        assert_eq!(late_gaps(&e), 0);
    }

    #[test]
    fn a_gap_after_the_last_event_excuses_what_was_written_by_its_resume_point() {
        // The reader's stream ended with a gap resumed at second 100, and nothing was written
        // to its channel after 3: 2 and 3 were written by then, 4 after it.
        let e = vec![
            Entry::Connected,
            ev(0),
            ev(1),
            Entry::Connected,
            Entry::Gap {
                reason: "mode_changed".into(),
                asked_secs: Some(95),
                resumed_secs: Some(100),
            },
        ];
        let known = Known {
            written_secs: HashMap::from([(0, 90), (1, 95), (2, 99), (3, 100), (4, 101)]),
            ..Known::default()
        };
        let r = check_channel(&e, "c", &[0, 1, 2, 3, 4], true, &known);
        assert_eq!(r.excused.get("mode_changed"), Some(&2));
        assert_eq!(r.lost_examples, vec![4]);
        // An event after the gap ends its trailing role: what is missing before the event
        // is judged by the range rule, after it is lost.
        let mut e2 = e.clone();
        e2.push(ev(3));
        let r = check_channel(&e2, "c", &[0, 1, 2, 3, 4], true, &known);
        assert_eq!(r.excused.get("mode_changed"), Some(&1));
        assert_eq!(r.lost_examples, vec![4]);
        // Written well before the position the client asked from: it should have arrived
        // before the gap, which does not excuse it (here, between events or after them).
        for tail in [false, true] {
            let mut e3 = vec![
                Entry::Connected,
                ev(0),
                ev(1),
                Entry::Connected,
                Entry::Gap {
                    reason: "mode_changed".into(),
                    asked_secs: Some(101),
                    resumed_secs: Some(105),
                },
            ];
            if !tail {
                e3.push(ev(4));
            }
            let r = check_channel(&e3, "c", &[0, 1, 2, 3, 4], true, &known);
            let excused = if tail { 2 } else { 1 }; // 3, and 4 unless received
            assert_eq!(r.excused.get("mode_changed"), Some(&excused), "tail {tail}");
            assert_eq!(r.lost_examples, vec![2], "tail {tail}");
        }
    }

    #[test]
    fn a_gap_after_data_on_its_connection_is_late_and_silence_is_loss() {
        let e = vec![Entry::Connected, ev(0), gap("mode_changed"), ev(1)];
        assert_eq!(late_gaps(&e), 1);
        let r = check_channel(&[Entry::Connected], "c", &[0, 1], true, &Known::default());
        assert!(r.silent);
        assert_eq!(r.violations(), 1);
    }
}
