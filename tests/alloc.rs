//! Scale #14: routing an event allocates nothing per subscriber. A broadcast to 10 000 tabs
//! that allocated per tab would spend its time in the allocator and leave memory fragmented
//! behind it. This binary counts every allocation of its process, so it holds this one test
//! alone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use mongo_sse::channel::Channel;
use mongo_sse::event::{Event, Op};
use mongo_sse::hub::Hub;
use mongo_sse::position::Position;
use mongo_sse::source::Mode;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SUBSCRIBERS: usize = 2_000;
const EVENTS: u32 = 300;

fn pos(n: u32) -> Position {
    Position::decode(&format!("c.82{n:08X}")).expect("a position")
}

fn event(n: u32) -> Event {
    Event::new(
        pos(n),
        Channel::parse("logs:w1:f1").expect("a channel"),
        Op::Insert,
        &bson::doc! {"n": n, "message": "step 3 of 7: loading rows"},
    )
}

#[test]
fn publishing_allocates_nothing_per_subscriber() {
    let hub = Hub::new(1_000, 64);
    hub.source_started(pos(1), Mode::ChangeStream);
    // Subscribers at every level an event reaches: the workflow, the workspace, everything.
    let levels = ["logs:w1:f1", "logs:w1", "logs"];
    let mut subs: Vec<_> = (0..SUBSCRIBERS)
        .map(|i| {
            let channel = Channel::parse(levels[i % levels.len()]).expect("a channel");
            hub.subscribe(vec![channel], None, Box::new(|| {}))
                .expect("subscribed")
        })
        .collect();
    let mut publish = |from: u32, to: u32, count: bool| {
        for n in from..to {
            let ev = event(n);
            COUNTING.store(count, Ordering::Relaxed);
            hub.publish(ev);
            COUNTING.store(false, Ordering::Relaxed);
            // Each stream takes its event, as a reader that keeps up does.
            for s in subs.iter_mut() {
                let got: Arc<Event> = s.rx.try_recv().expect("delivered");
                assert_eq!(got.position, pos(n));
            }
        }
    };
    // Warm up: the queues' blocks, the ring's first chunk, the metrics' label sets.
    publish(2, 102, false);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    publish(102, 102 + EVENTS, true);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let per_event = allocations as f64 / f64::from(EVENTS);
    println!("{allocations} allocations for {EVENTS} events to {SUBSCRIBERS} subscribers: {per_event:.2} per event");
    // The event's own (its Arc, a ring chunk now and then): about one per event. One per
    // subscriber would be 2 000.
    assert!(
        per_event < 4.0,
        "{per_event:.2} allocations per event with {SUBSCRIBERS} subscribers"
    );
}
