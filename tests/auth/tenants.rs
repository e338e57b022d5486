//! Two tenants under concurrent load: thousands of events, several connections each (some on
//! the whole workspace, some on one workflow), and not one event crosses over.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::*;
use crate::support::*;

const PER_TENANT: i64 = 2000;
const WORKFLOWS: i64 = 4;
const BATCH: i64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_never_see_each_other() {
    let mongo = Mongo::start("auth_tenants").await;
    // Queues large enough that a test reader on a busy machine is never a slow consumer.
    let gw = jwt_gateway(&mongo, &[("SSE_QUEUE_LEN", "100000")]).await;
    let base = base_url(&gw);
    let tenants = ["ta", "tb"];

    // Per tenant: two connections on the workspace, two on workflow f1, one on both f2 and f3.
    let mut readers = Vec::new();
    for t in tenants {
        let tok = token(&format!("user-{t}"), &[&format!("logs:{t}")]);
        let ws = format!("logs:{t}");
        let f1 = format!("logs:{t}:f1");
        let f2 = format!("logs:{t}:f2");
        let f3 = format!("logs:{t}:f3");
        let subs: Vec<(Vec<String>, i64)> = vec![
            (vec![ws.clone()], PER_TENANT),
            (vec![ws.clone()], PER_TENANT),
            (vec![f1.clone()], PER_TENANT / WORKFLOWS),
            (vec![f1.clone()], PER_TENANT / WORKFLOWS),
            (vec![f2, f3], 2 * PER_TENANT / WORKFLOWS),
        ];
        for (channels, expect) in subs {
            let chans: Vec<&str> = channels.iter().map(String::as_str).collect();
            let s = Stream::subscribe(&base, &chans, &[bearer(&tok)]).await;
            readers.push((t, channels, expect, s));
        }
        // The other tenant's channels are refused outright.
        let other = if t == "ta" { "tb" } else { "ta" };
        let r = Stream::open(
            &base,
            &stream_path(&[&format!("logs:{other}"), &ws], None, None),
            &[bearer(&tok)],
        )
        .await;
        assert_eq!(
            r.err().map(|e| e.status),
            Some(403),
            "{t} asking for {other}"
        );
    }

    // Both tenants written concurrently, interleaved in batches.
    let writers: Vec<_> = tenants
        .iter()
        .map(|t| {
            let t = t.to_string();
            let logs = mongo.logs();
            tokio::spawn(async move {
                let mut seq = 0;
                while seq < PER_TENANT {
                    let docs: Vec<_> = (seq..seq + BATCH)
                        .map(|s| log_doc(&t, &format!("f{}", s % WORKFLOWS), s))
                        .collect();
                    logs.insert_many(docs).await.expect("insert");
                    seq += BATCH;
                }
            })
        })
        .collect();

    let checks: Vec<_> = readers
        .into_iter()
        .map(|(tenant, channels, expect, mut s)| {
            tokio::spawn(async move {
                let evs = s.events(expect as usize, Duration::from_secs(120)).await;
                let mut last: HashMap<String, i64> = HashMap::new();
                for ev in &evs {
                    let m = ev.msg();
                    let ws = m.doc["workspace_id"].as_str().unwrap_or("").to_string();
                    assert_eq!(ws, tenant, "{channels:?} got another tenant's event: {m:?}");
                    assert!(
                        channels
                            .iter()
                            .any(|c| m.channel == *c || m.channel.starts_with(&format!("{c}:"))),
                        "{channels:?} got {}",
                        m.channel
                    );
                    let (wf, seq) = ev.wf_seq();
                    if let Some(prev) = last.insert(wf.clone(), seq) {
                        assert!(seq > prev, "{channels:?}: {wf} went from {prev} to {seq}");
                    }
                }
                // Nothing more: no duplicates, nothing foreign arriving late.
                s.expect_no_event(Duration::from_millis(300)).await;
                evs.len()
            })
        })
        .collect();
    for w in writers {
        within(Duration::from_secs(120), "the writers", w)
            .await
            .expect("writer task");
    }
    let mut total = 0;
    for c in checks {
        total += within(Duration::from_secs(180), "a reader", c)
            .await
            .expect("reader task");
    }
    assert_eq!(
        total as i64,
        2 * (2 * PER_TENANT + 2 * PER_TENANT / 4 + PER_TENANT / 2)
    );
}
