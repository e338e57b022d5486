//! The server under hostile input and load: a connection that breaks the wire protocol is
//! closed, alone, while every other client keeps working; and a thousand concurrent driver
//! connections, each holding a waiting change-stream `getMore`, are all served.

use bson::{doc, Document};
use futures::StreamExt;
use mongo_sim::{Sim, SimConfig};
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongodb::options::ClientOptions;
use mongodb::Client;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upper bound on waits for things that take milliseconds, so a hang fails instead of
/// blocking the suite. It is a guard, not a measurement.
const GUARD: Duration = Duration::from_secs(60);
const OP_MSG: i32 = 2013;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

async fn client(uri: &str, configure: impl FnOnce(&mut ClientOptions)) -> Client {
    let mut opts = ClientOptions::parse(uri).await.expect("uri parses");
    opts.server_selection_timeout = Some(GUARD);
    configure(&mut opts);
    Client::with_options(opts).expect("client builds")
}

fn bson_bytes(d: &Document) -> Vec<u8> {
    let mut v = Vec::new();
    d.to_writer(&mut v).expect("serialises");
    v
}

/// A whole message: header (length patched in), then `body`.
fn message(request_id: i32, opcode: i32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&((16 + body.len()) as i32).to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&opcode.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// OP_MSG with flags 0 and one kind-0 section holding `section` verbatim.
fn op_msg(request_id: i32, section: &[u8]) -> Vec<u8> {
    let mut body = 0u32.to_le_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(section);
    message(request_id, OP_MSG, &body)
}

/// A raw connection on which one well-formed `ping` has been answered, so that what follows
/// is tested on a connection known to work.
async fn raw_connection(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connects");
    s.write_all(&op_msg(1, &bson_bytes(&doc! {"ping": 1, "$db": "admin"})))
        .await
        .expect("write ping");
    let mut header = [0u8; 16];
    tokio::time::timeout(GUARD, s.read_exact(&mut header))
        .await
        .expect("ping answered in time")
        .expect("ping reply header");
    let len = i32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
    assert_eq!(i32::from_le_bytes(header[8..12].try_into().unwrap()), 1);
    let mut rest = vec![0u8; len - 16];
    s.read_exact(&mut rest).await.expect("ping reply body");
    let reply = Document::from_reader(&rest[5..]).expect("reply is BSON");
    assert_eq!(reply.get_f64("ok"), Ok(1.0), "{reply}");
    s
}

/// Sends `bytes` and asserts the server closes the connection without replying.
async fn assert_closed_after(addr: SocketAddr, what: &str, bytes: &[u8]) {
    let mut s = raw_connection(addr).await;
    // The server may close before taking every byte; a failed write is fine, the read decides.
    let _ = s.write_all(bytes).await;
    let mut buf = [0u8; 4096];
    let outcome = tokio::time::timeout(GUARD, s.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{what}: server neither replied nor closed"));
    match outcome {
        Ok(0) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ) => {}
        Ok(n) => panic!("{what}: server replied with {n} bytes instead of closing"),
        Err(e) => panic!("{what}: unexpected read error {e}"),
    }
}

/// The driver, on its own connections, still works.
async fn driver_still_works(client: &Client, what: &str, n: u64) {
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap_or_else(|e| panic!("ping after {what}: {e}"));
    let coll = client.database("robust").collection::<Document>("after");
    coll.insert_one(doc! {"after": what})
        .await
        .unwrap_or_else(|e| panic!("insert after {what}: {e}"));
    assert_eq!(coll.count_documents(doc! {}).await.expect("count"), n);
    assert_eq!(coll.estimated_document_count().await.expect("count"), n);
}

#[tokio::test]
async fn protocol_violations_close_only_that_connection() {
    let sim = Sim::start(SimConfig::default()).await.expect("sim starts");
    let addr = sim.addr();
    let client = client(&sim.uri(), |_| {}).await;
    driver_still_works(&client, "nothing", 1).await;

    // A declared length shorter than the header itself.
    let mut bad_len = 3i32.to_le_bytes().to_vec();
    bad_len.extend_from_slice(&[0u8; 12]);
    assert_closed_after(addr, "length 3", &bad_len).await;
    driver_still_works(&client, "length 3", 2).await;

    // A well-framed OP_MSG whose BSON document claims more bytes than the section holds.
    let ping = bson_bytes(&doc! {"ping": 1, "$db": "admin"});
    assert_closed_after(addr, "truncated BSON", &op_msg(2, &ping[..6])).await;
    driver_still_works(&client, "truncated BSON", 3).await;

    // A BSON document whose length fits but whose content is garbage.
    let mut garbage = ping.clone();
    for b in &mut garbage[4..ping.len() - 1] {
        *b = 0xff;
    }
    assert_closed_after(addr, "garbage BSON", &op_msg(3, &garbage)).await;
    driver_still_works(&client, "garbage BSON", 4).await;

    // An opcode MongoDB removed long ago (OP_UPDATE).
    assert_closed_after(addr, "opcode 2001", &message(4, 2001, &ping)).await;
    driver_still_works(&client, "opcode 2001", 5).await;

    // A header announcing 60 MB, above maxMessageSizeBytes: refused before any body arrives.
    let mut huge = message(5, OP_MSG, &[]);
    huge[..4].copy_from_slice(&60_000_000i32.to_le_bytes());
    assert_closed_after(addr, "60 MB header", &huge).await;
    driver_still_works(&client, "60 MB header", 6).await;

    client.shutdown().immediate(true).await;
    sim.shutdown().await;
}

/// Makes sure this process may open `want` file descriptors, raising the soft limit when the
/// hard one allows. Returns why not otherwise.
fn ensure_fd_limit(want: libc::rlim_t) -> Result<libc::rlim_t, String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!(
            "getrlimit failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    if lim.rlim_max < want {
        return Err(format!(
            "ulimit -n is {} and the hard limit {} is below the {want} needed",
            lim.rlim_cur, lim.rlim_max
        ));
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(format!(
            "cannot raise ulimit -n from {} to {want}: {}",
            lim.rlim_cur,
            std::io::Error::last_os_error()
        ));
    }
    Ok(want)
}

const CONCURRENT: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_driver_connections_hold() {
    // Both ends live in this process: 1000 client sockets, 1000 server sockets, and spares.
    let want = (2 * CONCURRENT + 500) as libc::rlim_t;
    match ensure_fd_limit(want) {
        Ok(n) => println!("ulimit -n: {n} (needed {want})"),
        Err(reason) => {
            let msg = format!("SKIP: 1000-connection test not run: {reason}");
            if in_ci() {
                panic!("{msg} (CI=true: a skipped test is a failure)");
            }
            let _ = writeln!(std::io::stderr(), "\n==========\n{msg}\n==========");
            return;
        }
    }

    let sim = Sim::start(SimConfig::default()).await.expect("sim starts");
    // Counts getMores the driver has put on the wire. The driver reports a command as started
    // once it holds a connection for it, so N started and unanswered getMores are N
    // connections held at once.
    let (started_tx, mut started) = tokio::sync::watch::channel(0usize);
    let pool = client(&sim.uri(), |o| {
        o.max_pool_size = Some(CONCURRENT as u32);
        o.max_connecting = Some(16);
        o.command_event_handler = Some(EventHandler::callback(move |ev: CommandEvent| {
            if let CommandEvent::Started(s) = ev {
                if s.command_name == "getMore" {
                    started_tx.send_modify(|n| *n += 1);
                }
            }
        }));
    })
    .await;
    let control = client(&sim.uri(), |_| {}).await;
    let coll = pool.database("robust").collection::<Document>("fanout");

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CONCURRENT {
        let coll = coll.clone();
        tasks.spawn(async move {
            // A long maxAwaitTimeMS: each getMore holds its connection until the release below.
            let mut stream = coll
                .watch()
                .max_await_time(Duration::from_secs(300))
                .await
                .map_err(|e| format!("watcher {i}: open: {e}"))?;
            match stream.next().await {
                Some(Ok(ev)) => Ok(ev),
                Some(Err(e)) => Err(format!("watcher {i}: {e}")),
                None => Err(format!("watcher {i}: stream ended")),
            }
        });
    }

    let all_waiting = async {
        tokio::select! {
            r = started.wait_for(|n| *n >= CONCURRENT) => { r.expect("sender alive"); }
            Some(early) = tasks.join_next() => {
                panic!("a watcher finished before any event was written: {early:?}");
            }
        }
    };
    tokio::time::timeout(GUARD * 3, all_waiting)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "only {} of {CONCURRENT} getMores started in time",
                *started.borrow()
            )
        });

    let status = control
        .database("admin")
        .run_command(doc! {"serverStatus": 1})
        .await
        .expect("serverStatus");
    let current = status
        .get_document("connections")
        .and_then(|c| c.get_i32("current"))
        .expect("connections.current");
    println!("serverStatus.connections.current = {current}");
    assert!(
        current >= CONCURRENT as i32,
        "connections.current {current} < {CONCURRENT}"
    );
    assert!(sim.connections() >= CONCURRENT as i64);

    control
        .database("robust")
        .collection::<Document>("fanout")
        .insert_one(doc! {"_id": "release"})
        .await
        .expect("insert");
    let mut ok = 0;
    let all_done = async {
        while let Some(joined) = tasks.join_next().await {
            let ev = joined
                .expect("watcher task")
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(ev.document_key, Some(doc! {"_id": "release"}));
            ok += 1;
        }
    };
    tokio::time::timeout(GUARD * 3, all_done)
        .await
        .expect("every watcher received the event");
    assert_eq!(ok, CONCURRENT);

    pool.shutdown().immediate(true).await;
    control.shutdown().immediate(true).await;
    sim.shutdown().await;
}
