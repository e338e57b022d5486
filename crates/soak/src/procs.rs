//! The processes under test: the `mongo-sim` binary and the `mongo-sse serve` gateways, each on
//! a loopback port, their output appended to files in the run's directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A free loopback port (bound, then released for the gateway to bind).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .with_context(|| format!("cannot open {name} in {}", dir.display()))
}

pub struct Sim {
    child: Child,
    pub uri: String,
}

impl Sim {
    /// Starts `mongo-sim --bind 127.0.0.1:0` and reads the port from its one stdout line.
    pub async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Sim> {
        let mut child = Command::new(bin)
            .args(["--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(log_file(dir, "mongo-sim.log")?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("mongo-sim has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("mongo-sim did not say it was listening within 30 s")??
            .context("mongo-sim exited before listening")?;
        let addr = line
            .strip_prefix("mongo-sim listening on ")
            .context("unexpected first line from mongo-sim")?
            .trim()
            .to_string();
        if !addr.starts_with("127.0.0.1:") {
            bail!("mongo-sim listens on {addr}, not on loopback");
        }
        Ok(Sim {
            child,
            uri: format!("mongodb://{addr}/?replicaSet=rs0"),
        })
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            signal(pid, libc::SIGTERM);
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid we spawned and still own (not yet reaped).
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

pub struct Gateway {
    pub index: usize,
    pub port: u16,
    bin: PathBuf,
    env: Vec<(String, String)>,
    dir: PathBuf,
    child: Option<Child>,
    pub starts: u64,
}

impl Gateway {
    pub fn new(
        index: usize,
        bin: &Path,
        dir: &Path,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Gateway> {
        Ok(Gateway {
            index,
            port: free_port()?,
            bin: bin.to_path_buf(),
            env,
            dir: dir.to_path_buf(),
            child: None,
            starts: 0,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("gateway-{}.log", self.index))
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = log_file(&self.dir, &format!("gateway-{}.log", self.index))?;
        let err = log.try_clone()?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SSE_BIND", format!("127.0.0.1:{}", self.port))
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// Waits (at most `limit`) for `/readyz` to answer 200.
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let url = format!("{}/readyz", self.url());
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    bail!("gateway {} exited during start: {status}", self.index);
                }
            }
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_secs(2), http.get(&url).send()).await
            {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("gateway {} not ready after {limit:?}", self.index)
    }

    /// Sends `sig` and waits (at most `limit`) for the process to exit; false when it did not.
    pub async fn stop_with(&mut self, sig: libc::c_int, limit: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if let Some(pid) = child.id() {
            signal(pid, sig);
        }
        let exited = tokio::time::timeout(limit, child.wait()).await.is_ok();
        if !exited {
            let _ = child.kill().await;
        }
        exited
    }
}
