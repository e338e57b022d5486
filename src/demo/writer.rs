//! The demo's synthetic log writer: it imitates the Datashop ETL services, which insert one
//! document per log line into the `logs` collection with the Datashop log schema —
//! `date`, `level`, `message`, `step`, `workspace_id`, `workflow_id` and `run_id`.
//!
//! A few workspaces each have a few workflows; a handful of ETL runs are under way at any time,
//! each going through `extract`, `transform` and `load` and then finishing (or, now and then,
//! failing), after which a new run of some workflow starts. Most lines are `info`, some
//! `debug`, with occasional `warning`s and `error`s and a rare `critical` when a run gives up.
//! The default routing (`SSE_SOURCES=logs:logs:workspace_id/workflow_id`) puts each line on
//! channel `logs:<workspace>:<workflow>`, which the logs page shows.

use std::time::{Duration, Instant};

use bson::{doc, DateTime, Document};
use mongodb::Collection;
use tokio_util::sync::CancellationToken;

/// The demo's workspaces and their workflows (channel segments: `[A-Za-z0-9_.-]`).
pub const WORKSPACES: &[(&str, &[&str])] = &[
    ("sales", &["daily-orders", "refunds", "crm-sync"]),
    ("marketing", &["campaign-stats", "newsletter-export"]),
    ("finance", &["ledger-close", "fx-rates", "invoices"]),
];

pub const STEPS: &[&str] = &["extract", "transform", "load"];

/// ETL runs under way at once.
const CONCURRENT_RUNS: usize = 4;

/// Highest accepted `--rate`.
pub const MAX_RATE: f64 = 10_000.0;

/// A small deterministic PRNG (xorshift64*): the demo needs variety, not cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// True with `per_mille`/1000 probability.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// One ETL run in progress.
#[derive(Debug, Clone)]
struct Run {
    workspace: &'static str,
    workflow: &'static str,
    run_id: String,
    step: usize,
    /// Lines left in the current step.
    left: u32,
    /// Batch number within the step.
    batch: u32,
    rows: u64,
    /// The step at which this run will fail, if it will.
    fails_at: Option<usize>,
    started: Instant,
    started_line: bool,
}

/// Generates Datashop-shaped log documents.
#[derive(Debug, Clone)]
pub struct LogGenerator {
    rng: Rng,
    runs: Vec<Run>,
    next_run: u64,
}

impl LogGenerator {
    pub fn new(seed: u64) -> LogGenerator {
        let mut g = LogGenerator {
            rng: Rng::new(seed),
            runs: Vec::new(),
            next_run: 1,
        };
        for _ in 0..CONCURRENT_RUNS {
            let r = g.new_run();
            g.runs.push(r);
        }
        g
    }

    fn new_run(&mut self) -> Run {
        let (workspace, workflows) = *self.rng.pick(WORKSPACES);
        let workflow = *self.rng.pick(workflows);
        let n = self.next_run;
        self.next_run += 1;
        // One run in fifteen fails somewhere.
        let fails_at = self
            .rng
            .chance(66)
            .then(|| self.rng.below(STEPS.len() as u64) as usize);
        Run {
            workspace,
            workflow,
            run_id: format!("run-{n:05}"),
            step: 0,
            left: self.step_lines(),
            batch: 0,
            rows: 0,
            fails_at,
            started: Instant::now(),
            started_line: false,
        }
    }

    fn step_lines(&mut self) -> u32 {
        6 + self.rng.below(20) as u32
    }

    /// The next log line of one of the runs under way.
    pub fn next_doc(&mut self) -> Document {
        let i = self.rng.below(self.runs.len() as u64) as usize;
        let (level, message, step) = self.line(i);
        let run = &self.runs[i];
        let d = doc! {
            "date": DateTime::now(),
            "level": level,
            "message": message,
            "step": step,
            "workspace_id": run.workspace,
            "workflow_id": run.workflow,
            "run_id": run.run_id.clone(),
        };
        if self.runs[i].step >= STEPS.len() {
            let next = self.new_run();
            self.runs[i] = next;
        }
        d
    }

    /// Advances run `i` by one line: `(level, message, step)`.
    fn line(&mut self, i: usize) -> (&'static str, String, &'static str) {
        let mut run = self.runs[i].clone();
        let step = STEPS[run.step.min(STEPS.len() - 1)];
        let out = if !run.started_line {
            run.started_line = true;
            (
                "info",
                format!(
                    "run {} of {} started (trigger: {})",
                    run.run_id,
                    run.workflow,
                    if self.rng.chance(800) {
                        "schedule"
                    } else {
                        "manual"
                    }
                ),
                step,
            )
        } else if run.left == 0 {
            if run.fails_at == Some(run.step) {
                let msg = format!(
                    "run {} failed in {step} after {} rows: giving up after 5 attempts",
                    run.run_id, run.rows
                );
                run.step = STEPS.len();
                ("critical", msg, step)
            } else if run.step + 1 == STEPS.len() {
                let msg = format!(
                    "run {} finished: {} rows loaded in {:.1} s",
                    run.run_id,
                    run.rows,
                    run.started.elapsed().as_secs_f64()
                );
                run.step = STEPS.len();
                ("info", msg, step)
            } else {
                let msg = format!("step {step} done ({} batches)", run.batch);
                run.step += 1;
                run.left = self.step_lines();
                run.batch = 0;
                ("info", msg, step)
            }
        } else {
            run.left -= 1;
            run.batch += 1;
            let rows = 200 + self.rng.below(4800);
            let roll = self.rng.below(1000);
            let failing = run.fails_at == Some(run.step);
            let (level, msg) = if roll < 180 {
                ("debug", debug_message(step, run.batch, rows))
            } else if roll < 260 || (failing && roll < 400) {
                ("warning", warning_message(&mut self.rng, step, run.batch))
            } else if roll < 290 || (failing && roll < 500) {
                ("error", error_message(&mut self.rng, step, run.batch))
            } else {
                run.rows += rows;
                ("info", info_message(&mut self.rng, step, run.batch, rows))
            };
            (level, msg, step)
        };
        self.runs[i] = run;
        out
    }
}

const SOURCES: &[&str] = &["orders_2024", "crm.contacts", "s3://datashop-raw/events"];
const TABLES: &[&str] = &[
    "warehouse.orders",
    "warehouse.customers",
    "warehouse.ledger",
];

fn info_message(rng: &mut Rng, step: &str, batch: u32, rows: u64) -> String {
    match step {
        "extract" => format!(
            "fetched {rows} rows from {} (page {batch})",
            rng.pick(SOURCES)
        ),
        "transform" => format!(
            "normalised {rows} rows, {} rejected by the currency rule",
            rows % 13
        ),
        _ => format!("upserted {rows} rows into {}", rng.pick(TABLES)),
    }
}

fn debug_message(step: &str, batch: u32, rows: u64) -> String {
    format!(
        "{step}: cursor at offset {}, {} rows buffered",
        u64::from(batch) * 500,
        rows % 97
    )
}

fn warning_message(rng: &mut Rng, step: &str, batch: u32) -> String {
    let secs = 2.0 + rng.below(80) as f64 / 10.0;
    match step {
        "extract" => format!("slow query: {secs:.1} s for page {batch}"),
        "transform" => format!(
            "{} rows without customer_id dropped in batch {batch}",
            1 + rng.below(40)
        ),
        _ => format!(
            "lock wait {secs:.1} s on {} (batch {batch})",
            rng.pick(TABLES)
        ),
    }
}

fn error_message(rng: &mut Rng, step: &str, batch: u32) -> String {
    let attempt = 1 + rng.below(4);
    match step {
        "extract" => format!(
            "connection reset by {}, retrying (attempt {attempt}/5)",
            rng.pick(SOURCES)
        ),
        "transform" => format!("batch {batch}: schema mismatch on column amount (string, expected decimal); batch skipped"),
        _ => format!("batch {batch}: deadlock detected, retrying (attempt {attempt}/5)"),
    }
}

/// Writes generated lines into `coll` at `rate` lines per second until `stop` is cancelled.
pub struct Writer {
    pub coll: Collection<Document>,
    pub rate: f64,
    pub generator: LogGenerator,
}

impl Writer {
    pub fn new(coll: Collection<Document>, rate: f64) -> Writer {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Writer {
            coll,
            rate,
            generator: LogGenerator::new(seed),
        }
    }

    /// Paces the writes: at every tick, inserts the lines due by then (one `insert_many`),
    /// so any rate works with a bounded number of ticks per second. A failed insert is logged
    /// (at most every few seconds) and its lines are dropped: the demo keeps going while
    /// MongoDB is away.
    pub async fn run(mut self, stop: CancellationToken) -> u64 {
        let rate = self.rate.clamp(f64::MIN_POSITIVE, MAX_RATE);
        let period = Duration::from_secs_f64((1.0 / rate).clamp(0.02, 1.0));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = Instant::now();
        let mut due_so_far: u64 = 0;
        let mut written: u64 = 0;
        let mut last_warning: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            let n = due.saturating_sub(due_so_far).min(10_000);
            due_so_far = due;
            if n == 0 {
                continue;
            }
            let docs: Vec<Document> = (0..n).map(|_| self.generator.next_doc()).collect();
            let result = tokio::select! {
                _ = stop.cancelled() => break,
                r = self.coll.insert_many(docs) => r,
            };
            match result {
                Ok(_) => written += n,
                Err(e) => {
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                        tracing::warn!("demo writer: insert failed ({e}); continuing");
                        last_warning = Some(Instant::now());
                    }
                }
            }
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn lines_look_like_datashop_logs() {
        let mut g = LogGenerator::new(7);
        let docs: Vec<Document> = (0..5000).map(|_| g.next_doc()).collect();
        let mut levels: HashMap<String, usize> = HashMap::new();
        let mut channels = HashSet::new();
        let mut runs: HashMap<String, Vec<String>> = HashMap::new();
        for d in &docs {
            for key in [
                "level",
                "message",
                "step",
                "workspace_id",
                "workflow_id",
                "run_id",
            ] {
                assert!(!d.get_str(key).unwrap().is_empty(), "{key} in {d}");
            }
            assert!(d.get_datetime("date").is_ok(), "{d}");
            *levels
                .entry(d.get_str("level").unwrap().to_owned())
                .or_default() += 1;
            let ws = d.get_str("workspace_id").unwrap();
            let wf = d.get_str("workflow_id").unwrap();
            assert!(WORKSPACES
                .iter()
                .any(|(w, fs)| *w == ws && fs.contains(&wf)));
            channels.insert(format!("logs:{ws}:{wf}"));
            runs.entry(d.get_str("run_id").unwrap().to_owned())
                .or_default()
                .push(d.get_str("step").unwrap().to_owned());
        }
        // A realistic mix: mostly info, some debug, a few warnings and errors.
        let share = |l: &str| levels.get(l).copied().unwrap_or(0) as f64 / docs.len() as f64;
        assert!(share("info") > 0.5, "{levels:?}");
        assert!(share("debug") > 0.05, "{levels:?}");
        assert!(
            share("warning") > 0.02 && share("warning") < 0.2,
            "{levels:?}"
        );
        assert!(share("error") > 0.005 && share("error") < 0.1, "{levels:?}");
        assert!(channels.len() >= 5, "{channels:?}");
        // Each run goes through its steps in order.
        let order = |s: &str| STEPS.iter().position(|x| *x == s).unwrap();
        for (run, steps) in &runs {
            assert!(
                steps.windows(2).all(|w| order(&w[0]) <= order(&w[1])),
                "{run}: {steps:?}"
            );
        }
        assert!(runs.values().any(|s| s.iter().any(|x| x == "load")));
    }
}
