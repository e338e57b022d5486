//! The writers: one numbered event to every channel each interval, through MongoDB (batched
//! `insert_many`, several tasks, so the writer is not the bottleneck) or an HTTP publish
//! endpoint. The rate they reached is reported beside the readers' figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use mongodb::Collection;

use crate::reader::now_us;
use crate::Args;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WriterKind {
    Mongo,
    Http,
    Publish,
}

pub struct Writer {
    kind: WriterKind,
    collection: Option<Collection<Document>>,
    http: reqwest::Client,
    pub_url: String,
    publish_channel: String,
    workspace: String,
    pad: String,
}

/// What the writers did.
pub struct Sent {
    pub events: usize,
    pub errors: usize,
    pub elapsed: Duration,
}

impl Writer {
    pub async fn new(args: &Args) -> anyhow::Result<Arc<Writer>> {
        let collection = match args.writer {
            WriterKind::Mongo => {
                let client = mongodb::Client::with_uri_str(&args.mongodb_uri).await?;
                Some(client.database(&args.db).collection(&args.collection))
            }
            _ => None,
        };
        Ok(Arc::new(Writer {
            kind: args.writer,
            collection,
            http: reqwest::Client::builder().no_proxy().build()?,
            pub_url: args.pub_url.clone().unwrap_or_default(),
            publish_channel: args.publish_channel.clone(),
            workspace: args.workspace.clone(),
            pad: "x".repeat(args.pad),
        }))
    }

    /// Sends `events` rounds, one event per channel each `interval`, split over `tasks`
    /// writer tasks by channel.
    pub async fn run(
        self: &Arc<Self>,
        channels: usize,
        events: usize,
        interval: Duration,
        tasks: usize,
    ) -> anyhow::Result<Sent> {
        let tasks = tasks.clamp(1, channels);
        let started = Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let me = Arc::clone(self);
            let mine: Vec<usize> = (0..channels).filter(|c| c % tasks == t).collect();
            handles.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let (mut sent, mut errors) = (0usize, 0usize);
                for seq in 0..events {
                    tick.tick().await;
                    match me.send(&mine, seq).await {
                        Ok(()) => sent += mine.len(),
                        Err(e) => {
                            errors += 1;
                            eprintln!("loadgen: write failed: {e}");
                        }
                    }
                }
                (sent, errors)
            }));
        }
        let (mut events_sent, mut errors) = (0, 0);
        for h in handles {
            let (s, e) = h.await?;
            events_sent += s;
            errors += e;
        }
        Ok(Sent {
            events: events_sent,
            errors,
            elapsed: started.elapsed(),
        })
    }

    async fn send(&self, channels: &[usize], seq: usize) -> anyhow::Result<()> {
        match self.kind {
            WriterKind::Mongo => {
                let docs: Vec<Document> = channels
                    .iter()
                    .map(|c| {
                        let mut d = doc! {
                            "workspace_id": &self.workspace,
                            "workflow_id": format!("c{c}"),
                            "seq": seq as i64,
                            "sent_us": now_us() as i64,
                        };
                        if !self.pad.is_empty() {
                            d.insert("pad", &self.pad);
                        }
                        d
                    })
                    .collect();
                if let Some(coll) = &self.collection {
                    coll.insert_many(docs).await?;
                }
            }
            WriterKind::Http => {
                for c in channels {
                    let url = self.pub_url.replace("{c}", &c.to_string());
                    let body =
                        serde_json::json!({"seq": seq, "sent_us": now_us(), "pad": self.pad});
                    let r = self.http.post(url).body(body.to_string()).send().await?;
                    if !r.status().is_success() {
                        anyhow::bail!("publish answered {}", r.status());
                    }
                }
            }
            WriterKind::Publish => {
                let events: Vec<serde_json::Value> = channels
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "channel": self.publish_channel.replace("{c}", &c.to_string()),
                            "data": {"seq": seq, "sent_us": now_us(), "pad": self.pad},
                        })
                    })
                    .collect();
                for batch in events.chunks(100) {
                    let r = self
                        .http
                        .post(&self.pub_url)
                        .header("content-type", "application/json")
                        .body(serde_json::Value::Array(batch.to_vec()).to_string())
                        .send()
                        .await?;
                    if !r.status().is_success() {
                        anyhow::bail!("publish answered {}", r.status());
                    }
                }
            }
        }
        Ok(())
    }
}
