//! Resource samples of each gateway process from /proc: resident memory, open descriptors and
//! CPU time, once a second, so the report can show whether they grow over the run and come
//! back to their baseline once the readers are gone.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    pub pid: u32,
    pub rss_kib: u64,
    pub fds: u64,
    /// User + system CPU seconds of the process so far.
    pub cpu_s: f64,
}

pub fn sample(pid: u32, t: f64) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    // utime and stime are fields 14 and 15 of stat: 11 and 12 after the name.
    let (ut, st) = (ticks(11)?, ticks(12)?);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(Sample {
        t,
        pid,
        rss_kib,
        fds,
        cpu_s: (ut + st) as f64 / hz,
    })
}

/// Least-squares slope of `y` over `t`, per minute.
pub fn slope_per_min(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let cov: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - my)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    if var == 0.0 {
        0.0
    } else {
        cov / var * 60.0
    }
}

pub const INTERVAL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    #[test]
    fn slope_of_a_line_and_of_this_process() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 2.0 * i as f64 + 1.0)).collect();
        assert!((super::slope_per_min(&pts) - 120.0).abs() < 1e-9);
        let s = super::sample(std::process::id(), 0.0).expect("own /proc entry");
        assert!(s.rss_kib > 0 && s.fds > 0);
    }
}
