//! The `mongo-sim` binary's contract, which scripts (pymongo tests, the demo, CI) rely on:
//! exactly one `mongo-sim listening on HOST:PORT` line on stdout when ready, an address the
//! driver can use, `--standalone` without a replica set, a clean exit 0 on SIGTERM/SIGINT, and a
//! non-zero exit with a message for an address it cannot use.

use bson::doc;
use mongodb::Client;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_mongo-sim");
/// An upper bound for things that take milliseconds, so a hang fails instead of blocking.
const GUARD: Duration = Duration::from_secs(30);
/// How long a signalled process may take to exit.
const EXIT_GUARD: Duration = Duration::from_secs(10);

struct Running {
    child: Child,
    addr: SocketAddr,
    stdout: BufReader<ChildStdout>,
}

async fn start(extra: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .args(["--bind", "127.0.0.1:0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("mongo-sim starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    tokio::time::timeout(GUARD, stdout.read_line(&mut line))
        .await
        .expect("mongo-sim prints its address")
        .expect("stdout is readable");
    let addr = parse_listening(&line);
    Running {
        child,
        addr,
        stdout,
    }
}

/// `mongo-sim listening on HOST:PORT\n`, nothing else on the line.
fn parse_listening(line: &str) -> SocketAddr {
    let body = line
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("line is not newline-terminated: {line:?}"));
    let addr = body
        .strip_prefix("mongo-sim listening on ")
        .unwrap_or_else(|| panic!("unexpected ready line: {line:?}"));
    let addr: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("not HOST:PORT in {line:?}: {e}"));
    assert_eq!(addr.ip().to_string(), "127.0.0.1", "{line:?}");
    assert_ne!(addr.port(), 0, "port 0 must be resolved: {line:?}");
    addr
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("still running").to_string();
    let status = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid} failed");
}

impl Running {
    /// Signals, waits (bounded) for the exit, and returns whatever else was printed on stdout.
    async fn stop(mut self, sig: &str) -> (std::process::ExitStatus, String) {
        signal(&self.child, sig);
        let status = tokio::time::timeout(EXIT_GUARD, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("mongo-sim did not exit within {EXIT_GUARD:?} of {sig}"))
            .expect("wait succeeds");
        let mut rest = String::new();
        tokio::time::timeout(GUARD, self.stdout.read_to_string(&mut rest))
            .await
            .expect("stdout closes")
            .expect("stdout is readable");
        (status, rest)
    }
}

async fn client(uri: &str) -> Client {
    let mut opts = mongodb::options::ClientOptions::parse(uri)
        .await
        .expect("uri parses");
    opts.server_selection_timeout = Some(GUARD);
    Client::with_options(opts).expect("client builds")
}

#[tokio::test]
async fn prints_one_line_serves_the_driver_and_exits_zero_on_sigterm() {
    let sim = start(&[]).await;
    let uri = format!("mongodb://{}/?replicaSet=rs0", sim.addr);
    let client = client(&uri).await;
    let hello = client
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .expect("hello");
    assert_eq!(hello.get_str("setName"), Ok("rs0"));
    assert_eq!(hello.get_bool("isWritablePrimary"), Ok(true));
    let coll = client
        .database("binary_test")
        .collection::<bson::Document>("c");
    coll.insert_one(doc! {"_id": 1, "x": "y"})
        .await
        .expect("insert");
    let found = coll.find_one(doc! {"_id": 1}).await.expect("find");
    assert_eq!(found, Some(doc! {"_id": 1, "x": "y"}));

    // A client still connected (with its monitor's awaitable hello parked on the server) must
    // not hold the exit up.
    let (status, rest) = sim.stop("-TERM").await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert_eq!(rest, "", "stdout must carry exactly one line");
    client.shutdown().immediate(true).await;
}

#[tokio::test]
async fn standalone_has_no_set_name_and_exits_zero_on_sigint() {
    let sim = start(&["--standalone"]).await;
    let uri = format!("mongodb://{}/?directConnection=true", sim.addr);
    let client = client(&uri).await;
    let hello = client
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .expect("hello");
    assert!(!hello.contains_key("setName"), "standalone hello: {hello}");
    assert!(!hello.contains_key("hosts"), "standalone hello: {hello}");
    assert_eq!(hello.get_bool("isWritablePrimary"), Ok(true));
    let err = client
        .database("binary_test")
        .collection::<bson::Document>("c")
        .watch()
        .await
        .expect_err("change streams need a replica set");
    match *err.kind {
        mongodb::error::ErrorKind::Command(ref c) => assert_eq!(c.code, 40573, "{err}"),
        ref other => panic!("expected a command error, got {other:?}"),
    }
    let (status, rest) = sim.stop("-INT").await;
    assert!(status.success(), "exit status after SIGINT: {status}");
    assert_eq!(rest, "");
    client.shutdown().immediate(true).await;
}

async fn run_to_exit(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(GUARD, out)
        .await
        .expect("mongo-sim exits by itself")
        .expect("mongo-sim runs")
}

#[tokio::test]
async fn unusable_bind_values_exit_nonzero_with_a_message() {
    let out = run_to_exit(&["--bind", "not-an-address"]).await;
    assert!(!out.status.success(), "{:?}", out.status);
    assert!(out.stdout.is_empty(), "nothing on stdout when not ready");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--bind"), "stderr names the bad option: {err}");

    // A well-formed address that cannot be bound: the port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run_to_exit(&["--bind", &addr]).await;
    assert!(!out.status.success(), "{:?}", out.status);
    assert!(out.stdout.is_empty(), "nothing on stdout when not ready");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen") && err.contains(&addr),
        "stderr explains: {err}"
    );
}
