//! The `mongo-sse` binary as a child process, for the tests that need what only a process
//! gives: exit codes, signals, a SIGKILL that leaves no chance to clean up.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::task::JoinHandle;

use crate::common::*;

/// `mongo-sse` with a clean environment (see [`mongo_sse`]), logging at `info`.
pub fn command(vars: &[(&str, &str)]) -> tokio::process::Command {
    let mut c = mongo_sse(&[], vars);
    if !vars.iter().any(|(k, _)| *k == "RUST_LOG") {
        c.env("RUST_LOG", "info");
    }
    c
}

/// A running `mongo-sse serve`, with its stderr collected (a full pipe would block it).
pub struct Served {
    pub child: Child,
    pub base: String,
    log: Arc<Mutex<String>>,
    reader: JoinHandle<()>,
}

impl Served {
    /// Starts `mongo-sse serve` on a free port against `mongo`'s database and waits until
    /// `/readyz` says it is ready.
    pub async fn start(mongo: &Mongo, vars: &[(&str, &str)]) -> Served {
        let mut all = vec![
            ("SSE_AUTH", "none"),
            ("MONGODB_URI", mongo.uri.as_str()),
            ("MONGODB_DB", mongo.db_name.as_str()),
            ("SSE_BIND", "127.0.0.1:0"),
        ];
        all.extend_from_slice(vars);
        let mut child = command(&all).arg("serve").spawn().expect("spawn mongo-sse");
        // Hand over the address from "mongo-sse serving addr=…" while collecting the log.
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
        let stderr = child.stderr.take().expect("piped stderr");
        let reader = {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                let mut addr_tx = Some(addr_tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    let line = strip_ansi(&line);
                    if line.contains("mongo-sse serving") {
                        if let Some(addr) = line
                            .split_whitespace()
                            .find_map(|w| w.strip_prefix("addr="))
                        {
                            if let Some(tx) = addr_tx.take() {
                                let _ = tx.send(addr.to_string());
                            }
                        }
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            })
        };
        let addr = match tokio::time::timeout(WAIT, addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => panic!(
                "mongo-sse did not log its address; stderr:\n{}",
                log.lock().unwrap()
            ),
        };
        let base = format!("http://{addr}");
        wait_ready(&base).await;
        Served {
            child,
            base,
            log,
            reader,
        }
    }

    #[allow(dead_code)]
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self
            .child
            .id()
            .expect("the process has not been waited for") as libc::pid_t;
        // SAFETY: kill(2) on the child we spawned and still own (it has not been waited for).
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the process to exit and for its stderr to close.
    pub async fn wait(
        mut self,
        within_: std::time::Duration,
    ) -> (std::process::ExitStatus, String) {
        let status = within(within_, "mongo-sse to exit", self.child.wait())
            .await
            .expect("wait for mongo-sse");
        let _ = within(WAIT, "stderr to close", self.reader).await;
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }
}

/// Removes ANSI escape sequences, in case the log output is colored anyway.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
