//! `mongo-sse check` against a replica set, a standalone server, a server refusing change
//! streams, an unreachable one, and bad configuration.

use bson::doc;
use mongo_sim::SimConfig;

use crate::common::*;
use crate::run;

/// `(section, line)` of every FAIL finding in check's output.
fn fails_in(stdout: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in stdout.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            section = line.to_string();
        } else if let Some(text) = line.trim_start().strip_prefix("FAIL") {
            out.push((section.clone(), text.trim().to_string()));
        }
    }
    out
}

async fn check(mongo: &Mongo, uri: &str, vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut all = vec![
        ("SSE_AUTH", "none"),
        ("MONGODB_URI", uri),
        ("MONGODB_DB", mongo.db_name.as_str()),
    ];
    all.extend_from_slice(vars);
    run(&["check"], &all).await
}

/// `mongo-sse migrate` on the test's database, which must succeed.
async fn migrate(mongo: &Mongo) {
    let (code, out, err) = run(
        &["migrate"],
        &[
            ("MONGODB_URI", mongo.uri.as_str()),
            ("MONGODB_DB", mongo.db_name.as_str()),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "migrate: {out}\n{err}");
}

const SECRET: &str = "check-test-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "check-test-admin-token-42";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_a_replica_set_says_change_streams_work() {
    let mongo = Mongo::start("check_rs").await;
    mongo.insert("w1", "f1", 1).await;
    let (code, stdout, stderr) = check(
        &mongo,
        &mongo.uri,
        &[
            ("SSE_AUTH", "jwt"),
            ("SSE_JWT_SECRET", SECRET),
            ("SSE_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    )
    .await;
    // A fresh deployment lacks only what `mongo-sse migrate` creates: the indexes.
    let fails = fails_in(&stdout);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        fails.len() >= 2
            && fails
                .iter()
                .all(|(s, t)| s.starts_with("Indexes") && t.starts_with("missing:")),
        "fails {fails:?}\n{stdout}"
    );
    assert!(
        stdout.contains("workspace_id"),
        "the logs index is named: {stdout}"
    );
    assert!(stdout.contains("run `mongo-sse migrate`"), "{stdout}");
    assert!(
        stdout.contains("the gateway will use change streams"),
        "{stdout}"
    );
    assert!(stdout.contains("replica set"), "{stdout}");
    assert!(stdout.contains("h (oldest entry"), "{stdout}");
    assert!(stdout.contains("Indexes"), "{stdout}");
    assert!(stdout.contains("Open files"), "{stdout}");
    assert!(stdout.contains(&mongo.db_name), "{stdout}");
    // Secrets are never printed; that they are set is.
    for secret in [SECRET, ADMIN_TOKEN] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}"
        );
    }
    assert!(stdout.contains("SSE_JWT_SECRET"), "{stdout}");
    assert!(stdout.contains("(set, not shown)"), "{stdout}");

    // After `mongo-sse migrate` (same environment) serve would run fully.
    migrate(&mongo).await;
    let (code, stdout, stderr) = check(&mongo, &mongo.uri, &[]).await;
    assert_eq!(code, Some(0), "after migrate: {stdout}\n{stderr}");
    assert!(!stdout.contains("missing:"), "{stdout}");

    // An explicit cap the open-file limit cannot carry would not run fully.
    let (code, stdout, _) = check(&mongo, &mongo.uri, &[("SSE_MAX_CONNECTIONS", "10000000")]).await;
    let fails = fails_in(&stdout);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        fails
            .iter()
            .any(|(s, t)| s == "Open files" && t.contains("SSE_MAX_CONNECTIONS=10000000")),
        "{fails:?}\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_a_standalone_server_says_it_will_poll() {
    if skip_unless_sim(
        "check_on_a_standalone_server_says_it_will_poll",
        "needs a standalone mongo-sim",
    ) {
        return;
    }
    let mongo = Mongo::with_sim_config(
        "check_standalone",
        SimConfig {
            standalone: true,
            ..SimConfig::default()
        },
    )
    .await;
    let (code, stdout, stderr) = check(&mongo, &mongo.uri, &[]).await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("standalone"), "{stdout}");
    let fails = fails_in(&stdout);
    assert!(
        fails.iter().any(|(s, t)| s == "Change streams"
            && t.contains("will poll every 5000 ms")
            && t.contains("not a replica set")),
        "{fails:?}\n{stdout}"
    );
    assert!(stdout.contains("--replSet"), "the fix is named: {stdout}");
    assert!(stdout.contains("no oplog on a standalone"), "{stdout}");

    // Polling on purpose, with the indexes polling needs, is running fully.
    migrate(&mongo).await;
    let (code, stdout, _) = check(&mongo, &mongo.uri, &[("SSE_MODE", "polling")]).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("SSE_MODE=polling: the gateway polls"),
        "{stdout}"
    );
    // Insisting on change streams delivers nothing.
    let (code, stdout, _) = check(&mongo, &mongo.uri, &[("SSE_MODE", "change_stream")]).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("would deliver nothing"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_missing_change_stream_privilege() {
    let mongo = Mongo::start("check_unauthorized").await;
    let app = unique_name("check_fp");
    // The user may not open change streams: MongoDB answers the $changeStream with 13.
    mongo
        .fail_point(doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["aggregate"], "errorCode": 13, "appName": app.as_str()},
        })
        .await;
    let (code, stdout, stderr) = check(&mongo, &mongo.uri_with_app_name(&app), &[]).await;
    mongo
        .fail_point(doc! {"configureFailPoint": "failCommand", "mode": "off"})
        .await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let fails = fails_in(&stdout);
    assert!(
        fails.iter().any(|(s, t)| s == "Change streams"
            && t.contains("will poll")
            && t.contains("changeStream privilege")),
        "{fails:?}\n{stdout}"
    );
    assert!(stdout.contains("grant the user"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_when_mongodb_is_unreachable() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let uri = format!("mongodb://user:hunter2secret@127.0.0.1:{port}/?directConnection=true");
    let (code, stdout, stderr) = run(
        &["check"],
        &[("SSE_AUTH", "none"), ("MONGODB_URI", uri.as_str())],
    )
    .await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let fails = fails_in(&stdout);
    assert!(
        fails
            .iter()
            .any(|(s, t)| s == "MongoDB" && t.contains("cannot reach MongoDB")),
        "{fails:?}\n{stdout}"
    );
    assert!(!stdout.contains("hunter2secret"), "{stdout}");
    assert!(stdout.contains("mongodb://***@127.0.0.1"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_bad_configuration_exits_2_naming_the_variable() {
    let (code, stdout, stderr) =
        run(&["check"], &[("SSE_AUTH", "none"), ("SSE_QUEUE_LEN", "0")]).await;
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("SSE_QUEUE_LEN"), "{stderr}");
    let (code, _, stderr) = run(&["check"], &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("SSE_AUTH"), "{stderr}");
    let (code, _, stderr) = run(
        &["check"],
        &[("SSE_AUTH", "jwt"), ("SSE_JWT_SECRET", "short")],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("SSE_JWT_SECRET") && !stderr.contains("short\""),
        "{stderr}"
    );
}
