//! The figures of one run, as a table for people and one JSON object for scripts.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

use crate::reader::Received;
use crate::writer::Sent;
use crate::Args;

pub struct Report {
    pub label: String,
    pub connections: usize,
    pub channels: usize,
    pub failed_connections: usize,
    pub connect_wall: Duration,
    pub connect: Histogram<u64>,
    pub latency: Histogram<u64>,
    pub sent: usize,
    pub write_errors: usize,
    pub write_elapsed: Duration,
    pub deliveries: u64,
    pub delivery_span: Duration,
    pub lost: usize,
    pub duplicated: usize,
    pub out_of_order: usize,
    pub client_cpu: Duration,
    /// KiB: before connecting, with every connection idle, peak during the events.
    pub rss: [u64; 3],
    pub first_errors: Vec<String>,
}

impl Report {
    pub fn new(
        args: &Args,
        connect_wall: Duration,
        sent: Sent,
        received: Received,
        client_cpu: Duration,
        rss: [u64; 3],
    ) -> Report {
        let mut r = Report {
            label: args.label.clone(),
            connections: received.conns.len(),
            channels: args.channels,
            failed_connections: 0,
            connect_wall,
            connect: received.connect,
            deliveries: received.latency.len(),
            latency: received.latency,
            sent: sent.events,
            write_errors: sent.errors,
            write_elapsed: sent.elapsed,
            delivery_span: received.delivery_span,
            lost: 0,
            duplicated: 0,
            out_of_order: 0,
            client_cpu,
            rss,
            first_errors: Vec::new(),
        };
        for c in &received.conns {
            if let Some(e) = &c.error {
                if r.first_errors.len() < 5 {
                    r.first_errors.push(e.clone());
                }
            }
            if !c.connected {
                r.failed_connections += 1;
                continue;
            }
            r.lost += received.events_per_channel.saturating_sub(c.distinct);
            r.duplicated += c.duplicated;
            r.out_of_order += c.out_of_order;
        }
        r
    }

    fn ms(h: &Histogram<u64>, q: f64) -> f64 {
        h.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn rss_per_connection_kib(&self) -> f64 {
        let open = self
            .connections
            .saturating_sub(self.failed_connections)
            .max(1);
        self.rss[1].saturating_sub(self.rss[0]) as f64 / open as f64
    }

    pub fn print(&self) {
        let l = &self.latency;
        println!("== loadgen {} ==", self.label);
        println!(
            "connections {} on {} channels ({} failed), opened in {:.2} s; connect p50 {:.1} ms p99 {:.1} ms",
            self.connections,
            self.channels,
            self.failed_connections,
            self.connect_wall.as_secs_f64(),
            Self::ms(&self.connect, 0.5),
            Self::ms(&self.connect, 0.99),
        );
        println!(
            "events sent {} in {:.2} s ({:.0}/s, {} write errors)",
            self.sent,
            self.write_elapsed.as_secs_f64(),
            self.sent as f64 / self.write_elapsed.as_secs_f64().max(1e-9),
            self.write_errors
        );
        println!(
            "deliveries {} ({:.0}/s); latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
            self.deliveries,
            self.deliveries as f64 / self.delivery_span.as_secs_f64().max(1e-9),
            Self::ms(l, 0.5),
            Self::ms(l, 0.9),
            Self::ms(l, 0.99),
            l.max() as f64 / 1000.0,
        );
        println!(
            "lost {} duplicated {} out of order {}",
            self.lost, self.duplicated, self.out_of_order
        );
        println!(
            "server RSS KiB: before {} idle {} peak {} ({:.1} KiB per connection); client CPU {:.2} s",
            self.rss[0],
            self.rss[1],
            self.rss[2],
            self.rss_per_connection_kib(),
            self.client_cpu.as_secs_f64()
        );
        for e in &self.first_errors {
            println!("error: {e}");
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let l = &self.latency;
        json!({
            "label": self.label,
            "connections": self.connections,
            "channels": self.channels,
            "failed_connections": self.failed_connections,
            "connect_wall_s": self.connect_wall.as_secs_f64(),
            "connect_p50_ms": Self::ms(&self.connect, 0.5),
            "connect_p99_ms": Self::ms(&self.connect, 0.99),
            "sent": self.sent,
            "write_errors": self.write_errors,
            "write_rate": self.sent as f64 / self.write_elapsed.as_secs_f64().max(1e-9),
            "deliveries": self.deliveries,
            "delivery_rate": self.deliveries as f64 / self.delivery_span.as_secs_f64().max(1e-9),
            "latency_p50_ms": Self::ms(l, 0.5),
            "latency_p90_ms": Self::ms(l, 0.9),
            "latency_p99_ms": Self::ms(l, 0.99),
            "latency_max_ms": l.max() as f64 / 1000.0,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "rss_before_kib": self.rss[0],
            "rss_idle_kib": self.rss[1],
            "rss_peak_kib": self.rss[2],
            "rss_per_connection_kib": self.rss_per_connection_kib(),
            "client_cpu_s": self.client_cpu.as_secs_f64(),
        })
    }
}
