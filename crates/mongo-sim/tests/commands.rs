//! The command surface through the official Rust driver: handshake and server commands,
//! namespaces, CRUD, queries, aggregation and indexes. Every assertion is behaviour MongoDB 7.0
//! documents, so the suite also runs against a real server (`MONGODB_URI=... cargo test`).

mod common;

use bson::{doc, oid::ObjectId, Binary, Bson, DateTime, Document, Regex, Timestamp};
use common::{command_error, ids, write_error_code, TestEnv};
use futures::TryStreamExt;
use mongodb::error::ErrorKind;
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::IndexModel;

fn num(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(i)) => *i as i64,
        Some(Bson::Int64(i)) => *i,
        Some(Bson::Double(f)) => *f as i64,
        other => panic!("{key} is not a number: {other:?} in {d}"),
    }
}

async fn find_all(coll: &mongodb::Collection<Document>, filter: Document) -> Vec<Document> {
    coll.find(filter)
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

// ---------------------------------------------------------------- handshake and server

#[tokio::test]
async fn hello_ping_and_build_info_describe_a_7_0_primary_of_rs0() {
    let env = TestEnv::start("hello").await;
    if env.is_sim() {
        assert!(env.uri.contains("replicaSet=rs0"), "{}", env.uri);
    }
    // Replica-set discovery worked if the driver can select the primary for a write.
    env.coll("c").insert_one(doc! {"_id": 1}).await.unwrap();

    let hello = env.admin(doc! {"hello": 1}).await.unwrap();
    assert_eq!(hello.get_str("setName").unwrap(), "rs0");
    assert!(hello.get_bool("isWritablePrimary").unwrap());
    assert!(!hello.get_bool("secondary").unwrap());
    let max_wire = num(&hello, "maxWireVersion");
    if env.is_sim() {
        assert_eq!(max_wire, 21);
    } else {
        assert!(max_wire >= 21, "{hello}");
    }
    let primary = hello.get_str("primary").unwrap();
    assert_eq!(hello.get_str("me").unwrap(), primary);
    let hosts = hello.get_array("hosts").unwrap();
    assert!(hosts.iter().any(|h| h.as_str() == Some(primary)), "{hello}");

    let legacy = env.admin(doc! {"isMaster": 1}).await.unwrap();
    assert!(legacy.get_bool("ismaster").unwrap());

    let ping = env.admin(doc! {"ping": 1}).await.unwrap();
    assert_eq!(ping.get_f64("ok").unwrap(), 1.0);

    let info = env.admin(doc! {"buildInfo": 1}).await.unwrap();
    assert!(
        info.get_str("version").unwrap().starts_with("7.0."),
        "{info}"
    );
    let arr = info.get_array("versionArray").unwrap();
    assert_eq!(arr[..2], [Bson::Int32(7), Bson::Int32(0)]);
    env.cleanup().await;
}

#[tokio::test]
async fn a_wrong_replica_set_name_is_never_selected() {
    let env = TestEnv::start("wrongset").await;
    let Some(sim) = &env.sim else { return };
    let uri = format!(
        "mongodb://{}/?replicaSet=other&serverSelectionTimeoutMS=300",
        sim.addr()
    );
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let err = client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap_err();
    assert!(
        matches!(*err.kind, ErrorKind::ServerSelection { .. }),
        "{err:?}"
    );
}

async fn opcounters(env: &TestEnv) -> Document {
    env.admin(doc! {"serverStatus": 1})
        .await
        .unwrap()
        .get_document("opcounters")
        .unwrap()
        .clone()
}

#[tokio::test]
async fn server_status_opcounters_count_queries_and_documents() {
    let env = TestEnv::start("opcounters").await;
    let coll = env.coll("c");
    let before = opcounters(&env).await;
    coll.insert_many((0..3).map(|i| doc! {"_id": i, "a": i}))
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 10}).await.unwrap();
    let _: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    coll.find_one(doc! {"_id": 1}).await.unwrap();
    coll.update_many(doc! {"a": {"$gte": 1}}, doc! {"$set": {"b": 1}})
        .await
        .unwrap();
    coll.delete_one(doc! {"_id": 10}).await.unwrap();
    let after = opcounters(&env).await;
    let delta = |k: &str| num(&after, k) - num(&before, k);
    let expected = [("insert", 4), ("query", 2), ("update", 1), ("delete", 1)];
    for (k, n) in expected {
        if env.is_sim() {
            assert_eq!(delta(k), n, "opcounters.{k}: {before} -> {after}");
        } else {
            assert!(delta(k) >= n, "opcounters.{k}: {before} -> {after}");
        }
    }
    assert!(delta("command") >= 1, "serverStatus itself is a command");
    env.cleanup().await;
}

#[tokio::test]
async fn connection_status_shows_privileges_as_a_server_without_auth_does() {
    let env = TestEnv::start("conn_status").await;
    let plain = env.admin(doc! {"connectionStatus": 1}).await.unwrap();
    let auth = plain.get_document("authInfo").unwrap();
    assert!(auth.get_array("authenticatedUsers").is_ok(), "{plain}");
    assert!(auth.get_array("authenticatedUserRoles").is_ok(), "{plain}");
    assert!(!auth.contains_key("authenticatedUserPrivileges"), "{plain}");
    let shown = env
        .admin(doc! {"connectionStatus": 1, "showPrivileges": true})
        .await
        .unwrap();
    let auth = shown.get_document("authInfo").unwrap();
    let privileges = auth.get_array("authenticatedUserPrivileges").unwrap();
    if env.is_sim() {
        // No access control: nobody is authenticated, and no privilege is listed.
        assert!(auth.get_array("authenticatedUsers").unwrap().is_empty());
        assert!(privileges.is_empty(), "{shown}");
    }
}

/// What oplog-window tools read: the oldest and the newest entry of `local.oplog.rs`.
#[tokio::test]
async fn the_oplog_window_is_readable_from_local_oplog_rs() {
    let env = TestEnv::start("oplog_window").await;
    env.coll("c").insert_one(doc! {"_id": 1}).await.unwrap();
    let oplog = env
        .client
        .database("local")
        .collection::<Document>("oplog.rs");
    let first = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": 1})
        .projection(doc! {"ts": 1, "wall": 1})
        .await
        .unwrap()
        .expect("an oldest entry");
    let last = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .await
        .unwrap()
        .expect("a newest entry");
    let (a, b) = (
        first.get_timestamp("ts").unwrap(),
        last.get_timestamp("ts").unwrap(),
    );
    assert!(
        (a.time, a.increment) < (b.time, b.increment),
        "{first} {last}"
    );
    assert!(first.get_datetime("wall").is_ok(), "{first}");
    assert!(!first.contains_key("o"), "projected: {first}");
    if env.is_sim() {
        // The newest entry is the insert just made.
        assert_eq!(last.get_str("op").unwrap(), "i");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_standalone_server_has_no_oplog() {
    let config = mongo_sim::SimConfig {
        standalone: true,
        ..mongo_sim::SimConfig::default()
    };
    let env = TestEnv::with_config("oplog_standalone", config).await;
    if !env.is_sim() {
        return;
    }
    env.coll("c").insert_one(doc! {"_id": 1}).await.unwrap();
    let oplog = env
        .client
        .database("local")
        .collection::<Document>("oplog.rs");
    let first = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": 1})
        .await
        .unwrap();
    assert_eq!(first, None);
}

// ---------------------------------------------------------------- namespaces

#[tokio::test]
async fn databases_and_collections_are_listed_created_dropped_and_renamed() {
    let env = TestEnv::start("ns").await;
    let name = env.db.name().to_string();
    env.db.create_collection("a").await.unwrap();
    env.coll("b").insert_one(doc! {"_id": 1}).await.unwrap();

    let dbs = env.client.list_database_names().await.unwrap();
    assert!(dbs.contains(&name), "{dbs:?}");
    let mut colls = env.db.list_collection_names().await.unwrap();
    colls.sort();
    assert_eq!(colls, ["a", "b"]);
    let specs: Vec<_> = env
        .db
        .list_collections()
        .filter(doc! {"name": "a"})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].name, "a");

    // MongoDB 7.0: creating an existing collection with identical options is a no-op; with
    // other options it is NamespaceExists.
    env.db.create_collection("a").await.unwrap();
    let validator = doc! {"a": {"$exists": true}};
    let err = env
        .db
        .create_collection("a")
        .validator(validator.clone())
        .await
        .unwrap_err();
    assert_eq!(command_error(&err), (48, "NamespaceExists".into()));
    env.db
        .create_collection("capped")
        .validator(validator.clone())
        .await
        .unwrap();
    env.db
        .create_collection("capped")
        .validator(validator.clone())
        .await
        .unwrap();
    let err = env.db.create_collection("capped").await.unwrap_err();
    assert_eq!(command_error(&err), (48, "NamespaceExists".into()));
    let spec: Vec<_> = env
        .db
        .list_collections()
        .filter(doc! {"name": "capped"})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(spec[0].options.validator, Some(validator));
    env.coll("capped").drop().await.unwrap();
    // Capped collections are created (and enforced, tests/capped.rs); without a size, 72.
    env.db
        .create_collection("real_capped")
        .capped(true)
        .size(4096)
        .await
        .unwrap();
    env.coll("real_capped").drop().await.unwrap();
    let e = env
        .db
        .run_command(doc! {"create": "no_size", "capped": true})
        .await
        .unwrap_err();
    assert_eq!(command_error(&e).0, 72);

    env.coll("a").drop().await.unwrap();
    assert_eq!(env.db.list_collection_names().await.unwrap(), ["b"]);
    // A database lives while it has collections.
    let gone = env.client.database(&common::unique_name("ns_gone"));
    gone.create_collection("only").await.unwrap();
    assert!(env
        .client
        .list_database_names()
        .await
        .unwrap()
        .contains(&gone.name().to_string()));
    gone.collection::<Document>("only").drop().await.unwrap();
    assert!(!env
        .client
        .list_database_names()
        .await
        .unwrap()
        .contains(&gone.name().to_string()));
    // Dropping a collection that does not exist succeeds (MongoDB 7.0).
    env.coll("a").drop().await.unwrap();

    let rename = |from: &str, to: &str| {
        doc! {"renameCollection": format!("{name}.{from}"), "to": format!("{name}.{to}")}
    };
    env.admin(rename("b", "c")).await.unwrap();
    assert_eq!(env.db.list_collection_names().await.unwrap(), ["c"]);
    assert_eq!(find_all(&env.coll("c"), doc! {}).await, [doc! {"_id": 1}]);

    let err = env.admin(rename("missing", "d")).await.unwrap_err();
    assert_eq!(command_error(&err), (26, "NamespaceNotFound".into()));
    env.db.create_collection("d").await.unwrap();
    let err = env.admin(rename("c", "d")).await.unwrap_err();
    assert_eq!(command_error(&err), (48, "NamespaceExists".into()));
    let mut cmd = rename("c", "d");
    cmd.insert("dropTarget", true);
    env.admin(cmd).await.unwrap();
    assert_eq!(env.db.list_collection_names().await.unwrap(), ["d"]);
    assert_eq!(find_all(&env.coll("d"), doc! {}).await, [doc! {"_id": 1}]);

    env.db.drop().await.unwrap();
    let dbs = env.client.list_database_names().await.unwrap();
    assert!(!dbs.contains(&name), "{dbs:?}");
    assert!(env.db.list_collection_names().await.unwrap().is_empty());
}

#[tokio::test]
async fn unknown_commands_fail_with_command_not_found() {
    let env = TestEnv::start("unknown").await;
    let err = env
        .db
        .run_command(doc! {"noSuchCommand": 1})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err), (59, "CommandNotFound".into()));
    env.cleanup().await;
}

// ---------------------------------------------------------------- insert

#[tokio::test]
async fn insert_generates_an_object_id_and_puts_id_first() {
    let env = TestEnv::start("insert").await;
    let coll = env.coll("c");
    // Raw commands: the driver would otherwise generate the _id itself.
    let reply = env
        .db
        .run_command(doc! {"insert": "c", "documents": [{"a": 1}, {"b": 2, "_id": 7}]})
        .await
        .unwrap();
    assert_eq!(num(&reply, "n"), 2);
    let docs: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(docs.len(), 2);
    let first = docs.iter().find(|d| d.contains_key("a")).unwrap();
    assert_eq!(first.keys().next().unwrap(), "_id");
    assert!(
        matches!(first.get("_id"), Some(Bson::ObjectId(_))),
        "{first}"
    );
    let second = docs.iter().find(|d| d.contains_key("b")).unwrap();
    assert_eq!(second, &doc! {"_id": 7, "b": 2});
    assert_eq!(second.keys().collect::<Vec<_>>(), ["_id", "b"]);

    let res = coll.insert_one(doc! {"x": 1}).await.unwrap();
    assert!(matches!(res.inserted_id, Bson::ObjectId(_)));

    // Arrays and regexes cannot be an _id.
    let regex = Bson::RegularExpression(Regex {
        pattern: "a".into(),
        options: String::new(),
    });
    for bad in [Bson::Array(vec![Bson::Int32(1)]), regex] {
        let err = coll.insert_one(doc! {"_id": bad}).await.unwrap_err();
        assert_eq!(write_error_code(&err), 2, "{err:?}");
    }
    assert_eq!(coll.estimated_document_count().await.unwrap(), 3);
    env.cleanup().await;
}

#[tokio::test]
async fn duplicate_ids_fail_with_11000_and_name_the_key() {
    let env = TestEnv::start("dupid").await;
    let coll = env.coll("c");
    coll.insert_one(doc! {"_id": 1, "a": 1}).await.unwrap();
    let err = coll.insert_one(doc! {"_id": 1, "a": 2}).await.unwrap_err();
    assert_eq!(write_error_code(&err), 11000);
    // Numbers compare by value: 1.0 is the same _id as 1.
    let err = coll.insert_one(doc! {"_id": 1.0}).await.unwrap_err();
    assert_eq!(write_error_code(&err), 11000);

    let reply = env
        .db
        .run_command(doc! {"insert": "c", "documents": [{"_id": 1}]})
        .await
        .unwrap();
    assert_eq!(num(&reply, "n"), 0);
    let we = reply.get_array("writeErrors").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(num(&we, "index"), 0);
    assert_eq!(num(&we, "code"), 11000);
    assert!(we.get_str("errmsg").unwrap().contains("E11000"), "{we}");
    assert_eq!(we.get_document("keyPattern").unwrap(), &doc! {"_id": 1});
    assert_eq!(we.get_document("keyValue").unwrap(), &doc! {"_id": 1});
    assert_eq!(find_all(&coll, doc! {}).await, [doc! {"_id": 1, "a": 1}]);
    env.cleanup().await;
}

#[tokio::test]
async fn ordered_insert_many_stops_at_the_first_error_unordered_goes_on() {
    let env = TestEnv::start("ordered").await;
    let batch = || (1..=4).map(|i| doc! {"_id": if i == 3 { 1 } else { i }});

    let ordered = env.coll("o");
    let err = ordered.insert_many(batch()).await.unwrap_err();
    let ErrorKind::InsertMany(e) = &*err.kind else {
        panic!("{err:?}")
    };
    let we = e.write_errors.as_ref().unwrap();
    assert_eq!((we.len(), we[0].index, we[0].code), (1, 2, 11000));
    assert_eq!(ids(&find_all(&ordered, doc! {}).await), [1, 2]);

    let unordered = env.coll("u");
    let err = unordered
        .insert_many(batch())
        .ordered(false)
        .await
        .unwrap_err();
    let ErrorKind::InsertMany(e) = &*err.kind else {
        panic!("{err:?}")
    };
    let we = e.write_errors.as_ref().unwrap();
    assert_eq!((we.len(), we[0].index, we[0].code), (1, 2, 11000));
    assert_eq!(ids(&find_all(&unordered, doc! {}).await), [1, 2, 4]);
    env.cleanup().await;
}

// ---------------------------------------------------------------- find

#[tokio::test]
async fn find_supports_comparison_logical_element_operators_paths_and_arrays() {
    let env = TestEnv::start("operators").await;
    let coll = env.coll("c");
    coll.insert_many([
        doc! {"_id": 1, "a": 1, "b": "x", "tags": ["red", "blue"], "n": {"k": 1}},
        doc! {"_id": 2, "a": 2, "b": "y", "tags": ["green"], "n": {"k": 2}},
        doc! {"_id": 3, "a": 3, "tags": [], "n": {"k": 3}},
        doc! {"_id": 4, "a": Bson::Null},
        doc! {"_id": 5, "a": [1, 5]},
        doc! {"_id": 6, "b": "z"},
        doc! {"_id": 7, "items": [{"sku": "p", "q": 1}, {"sku": "q", "q": 5}]},
    ])
    .await
    .unwrap();
    let cases: Vec<(Document, Vec<i32>)> = vec![
        (doc! {}, vec![1, 2, 3, 4, 5, 6, 7]),
        (doc! {"a": 2}, vec![2]),
        (doc! {"a": {"$eq": 1}}, vec![1, 5]),
        (doc! {"a": {"$ne": 1}}, vec![2, 3, 4, 6, 7]),
        (doc! {"a": {"$gt": 2}}, vec![3, 5]),
        (doc! {"a": {"$gte": 2}}, vec![2, 3, 5]),
        (doc! {"a": {"$lt": 2}}, vec![1, 5]),
        (doc! {"a": {"$lte": 2}}, vec![1, 2, 5]),
        (doc! {"a": {"$gt": 1, "$lt": 3}}, vec![2, 5]),
        (doc! {"a": {"$in": [2, 3]}}, vec![2, 3]),
        (doc! {"a": {"$in": [Bson::Null]}}, vec![4, 6, 7]),
        (doc! {"a": {"$nin": [1, 2]}}, vec![3, 4, 6, 7]),
        (doc! {"a": {"$exists": true}}, vec![1, 2, 3, 4, 5]),
        (doc! {"a": {"$exists": false}}, vec![6, 7]),
        (doc! {"a": Bson::Null}, vec![4, 6, 7]),
        (doc! {"a": {"$ne": Bson::Null}}, vec![1, 2, 3, 5]),
        (
            doc! {"$and": [{"a": {"$gte": 2}}, {"a": {"$lt": 3}}]},
            vec![2, 5],
        ),
        (doc! {"$or": [{"a": 1}, {"b": "y"}]}, vec![1, 2, 5]),
        (
            doc! {"$or": [{"a": 3}, {"b": {"$exists": true}}]},
            vec![1, 2, 3, 6],
        ),
        (doc! {"a": {"$gte": 1}, "b": "x"}, vec![1]),
        // Type bracketing: a string bound only compares with strings.
        (doc! {"a": {"$gt": "a"}}, vec![]),
        (doc! {"b": {"$gt": "x"}}, vec![2, 6]),
        // Dotted paths into documents and through arrays of documents.
        (doc! {"n.k": {"$gte": 2}}, vec![2, 3]),
        (doc! {"n": {"k": 1}}, vec![1]),
        (doc! {"items.sku": "q"}, vec![7]),
        (doc! {"items.q": {"$gt": 3}}, vec![7]),
        (doc! {"items.1.sku": "q"}, vec![7]),
        // Arrays: element match, whole-array equality, positions.
        (doc! {"tags": "red"}, vec![1]),
        (doc! {"tags": ["green"]}, vec![2]),
        (doc! {"tags": []}, vec![3]),
        (doc! {"tags.0": "red"}, vec![1]),
        (doc! {"tags": {"$in": ["blue", "green"]}}, vec![1, 2]),
        (doc! {"a": [1, 5]}, vec![5]),
    ];
    for (filter, want) in cases {
        let got = ids(&find_all(&coll, filter.clone()).await);
        assert_eq!(got, want, "filter {filter}");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn object_id_ranges_and_type_filters_serve_polling() {
    let env = TestEnv::start("oidrange").await;
    let coll = env.coll("c");
    let oid_at = |secs: u32| {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&secs.to_be_bytes());
        ObjectId::from_bytes(b)
    };
    let ids: Vec<ObjectId> = (0..5u32)
        .map(|i| {
            let mut b = oid_at(1_700_000_000 + i * 10).bytes();
            b[11] = 1;
            ObjectId::from_bytes(b)
        })
        .collect();
    // Stored out of order, plus a document whose _id is not an ObjectId.
    for i in [3usize, 0, 4, 1, 2] {
        coll.insert_one(doc! {"_id": ids[i], "i": i as i32})
            .await
            .unwrap();
    }
    coll.insert_one(doc! {"_id": "not-an-oid"}).await.unwrap();

    let window: Vec<Document> = coll
        .find(doc! {"_id": {"$gte": oid_at(1_700_000_015)}})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let got: Vec<i32> = window.iter().map(|d| d.get_i32("i").unwrap()).collect();
    assert_eq!(got, [2, 3, 4]);

    let newest = coll
        .find_one(doc! {"_id": {"$type": "objectId"}})
        .sort(doc! {"_id": -1})
        .projection(doc! {"_id": 1})
        .await
        .unwrap();
    assert_eq!(newest, Some(doc! {"_id": ids[4]}));
    let typed: Vec<Document> = coll
        .find(doc! {"_id": {"$type": 2}})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(typed, [doc! {"_id": "not-an-oid"}]);
    env.cleanup().await;
}

#[tokio::test]
async fn values_of_different_types_compare_in_bson_order() {
    let env = TestEnv::start("bsonorder").await;
    let coll = env.coll("c");
    let oid = ObjectId::parse_str("650000000000000000000000").unwrap();
    let values: Vec<(i32, Option<Bson>)> = vec![
        (1, Some(Bson::MaxKey)),
        (2, Some(Bson::String("str".into()))),
        (3, Some(Bson::Int32(5))),
        (4, Some(Bson::Null)),
        (5, Some(Bson::MinKey)),
        (6, Some(Bson::Document(doc! {"a": 1}))),
        (7, Some(Bson::ObjectId(oid))),
        (8, Some(Bson::Boolean(true))),
        (9, Some(Bson::DateTime(DateTime::from_millis(1_000)))),
        (
            10,
            Some(Bson::Timestamp(Timestamp {
                time: 1,
                increment: 1,
            })),
        ),
        (
            11,
            Some(Bson::Binary(Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: vec![1, 2],
            })),
        ),
        (12, Some(Bson::Double(2.5))),
        (
            13,
            Some(Bson::RegularExpression(Regex {
                pattern: "^a".into(),
                options: String::new(),
            })),
        ),
        (14, Some(Bson::Int64(3))),
        (15, None),
        (16, Some(Bson::Boolean(false))),
        (17, Some(Bson::String("abc".into()))),
    ];
    coll.insert_many(values.iter().map(|(id, v)| {
        let mut d = doc! {"_id": id};
        if let Some(v) = v {
            d.insert("v", v.clone());
        }
        d
    }))
    .await
    .unwrap();
    let sorted = |spec: Document| {
        let coll = coll.clone();
        async move {
            let docs: Vec<Document> = coll
                .find(doc! {})
                .sort(spec)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            ids(&docs)
        }
    };
    // MinKey < null = missing < numbers < strings < objects < binData < ObjectId < bool < date
    // < timestamp < regex < MaxKey.
    let ascending = vec![5, 4, 15, 12, 14, 3, 17, 2, 6, 11, 7, 16, 8, 9, 10, 13, 1];
    assert_eq!(sorted(doc! {"v": 1, "_id": 1}).await, ascending);
    let mut descending = vec![1, 13, 10, 9, 8, 16, 7, 11, 6, 2, 17, 3, 14, 12];
    descending.extend([4, 15, 5]);
    assert_eq!(sorted(doc! {"v": -1, "_id": 1}).await, descending);

    // Numbers compare by value whatever their type.
    assert_eq!(ids(&find_all(&coll, doc! {"v": 3}).await), [14]);
    assert_eq!(ids(&find_all(&coll, doc! {"v": 5.0}).await), [3]);
    assert_eq!(
        ids(&find_all(&coll, doc! {"v": {"$gte": 2.5, "$lt": 5i64}}).await),
        [12, 14]
    );
    assert_eq!(
        ids(&find_all(&coll, doc! {"v": {"$gt": DateTime::from_millis(0)}}).await),
        [9]
    );
    assert_eq!(
        ids(&find_all(&coll, doc! {"v": {"$lt": "b"}}).await),
        [17],
        "only strings compare with a string"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn sort_skip_and_limit() {
    let env = TestEnv::start("sort").await;
    let coll = env.coll("c");
    coll.insert_many([
        doc! {"_id": 1, "g": "b", "n": 1},
        doc! {"_id": 2, "g": "a", "n": 2},
        doc! {"_id": 3, "g": "b", "n": 3},
        doc! {"_id": 4, "g": "a", "n": 1},
        doc! {"_id": 5, "g": "c", "n": 2},
    ])
    .await
    .unwrap();
    let run = |sort: Document, skip: u64, limit: i64| {
        let coll = coll.clone();
        async move {
            let mut find = coll.find(doc! {}).sort(sort).skip(skip);
            if limit != 0 {
                find = find.limit(limit);
            }
            let docs: Vec<Document> = find.await.unwrap().try_collect().await.unwrap();
            ids(&docs)
        }
    };
    assert_eq!(run(doc! {"n": 1, "_id": 1}, 0, 0).await, [1, 4, 2, 5, 3]);
    assert_eq!(run(doc! {"n": -1, "_id": 1}, 0, 0).await, [3, 2, 5, 1, 4]);
    assert_eq!(run(doc! {"g": 1, "n": -1}, 0, 0).await, [2, 4, 3, 1, 5]);
    assert_eq!(run(doc! {"g": -1, "n": 1}, 0, 0).await, [5, 1, 3, 4, 2]);
    assert_eq!(run(doc! {"_id": 1}, 1, 3).await, [2, 3, 4]);
    assert_eq!(run(doc! {"_id": -1}, 3, 0).await, [2, 1]);
    assert_eq!(run(doc! {"_id": 1}, 10, 0).await, Vec::<i32>::new());
    // A negative limit is a single batch of that many.
    assert_eq!(run(doc! {"_id": 1}, 0, -2).await, [1, 2]);
    env.cleanup().await;
}

#[tokio::test]
async fn a_sort_order_other_than_1_or_minus_1_fails_with_15975() {
    let env = TestEnv::start("badsort").await;
    let coll = env.coll("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let err = coll
        .find_one(doc! {})
        .sort(doc! {"a": 2})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err), (15975, "Location15975".into()));
    let err = coll
        .aggregate([doc! {"$sort": {"a": 0}}])
        .await
        .unwrap_err();
    assert_eq!(command_error(&err), (15975, "Location15975".into()));
    env.cleanup().await;
}

#[tokio::test]
async fn small_batches_return_every_document_once_in_order() {
    let env = TestEnv::start("batches").await;
    let coll = env.coll("c");
    coll.insert_many((0..1000).map(|i| doc! {"_id": i, "pad": "x"}))
        .await
        .unwrap();
    let before = opcounters(&env).await;
    let docs: Vec<Document> = coll
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .batch_size(7)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids(&docs), (0..1000).collect::<Vec<_>>());
    let after = opcounters(&env).await;
    let get_mores = num(&after, "getmore") - num(&before, "getmore");
    // 7 in the first batch, then 993 / 7 = 142 getMores.
    if env.is_sim() {
        assert_eq!(get_mores, 142);
    } else {
        assert!(get_mores >= 142);
    }

    // Natural order, with a limit that cuts a batch short.
    let docs: Vec<Document> = coll
        .find(doc! {"_id": {"$gte": 500}})
        .batch_size(7)
        .limit(50)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids(&docs), (500..550).collect::<Vec<_>>());
    env.cleanup().await;
}

#[tokio::test]
async fn projections_include_exclude_and_drop_the_id() {
    let env = TestEnv::start("projection").await;
    let coll = env.coll("c");
    coll.insert_one(doc! {"_id": 1, "a": 1, "b": {"c": 2, "d": 3}, "e": "x"})
        .await
        .unwrap();
    let project = |p: Document| {
        let coll = coll.clone();
        async move { coll.find_one(doc! {}).projection(p).await.unwrap().unwrap() }
    };
    assert_eq!(project(doc! {"a": 1}).await, doc! {"_id": 1, "a": 1});
    assert_eq!(project(doc! {"a": 1, "_id": 0}).await, doc! {"a": 1});
    assert_eq!(
        project(doc! {"b.c": 1}).await,
        doc! {"_id": 1, "b": {"c": 2}}
    );
    assert_eq!(
        project(doc! {"a": 0}).await,
        doc! {"_id": 1, "b": {"c": 2, "d": 3}, "e": "x"}
    );
    assert_eq!(
        project(doc! {"_id": 0, "b": 0}).await,
        doc! {"a": 1, "e": "x"}
    );
    assert_eq!(
        project(doc! {"b.d": 0}).await,
        doc! {"_id": 1, "a": 1, "b": {"c": 2}, "e": "x"}
    );
    assert_eq!(
        project(doc! {"_id": 0}).await,
        doc! {"a": 1, "b": {"c": 2, "d": 3}, "e": "x"}
    );
    // Inclusion and exclusion cannot be mixed (except for _id).
    let err = coll
        .find_one(doc! {})
        .projection(doc! {"a": 1, "e": 0})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err), (31254, "Location31254".into()));
    env.cleanup().await;
}

// ---------------------------------------------------------------- update and delete

#[tokio::test]
async fn updates_set_unset_inc_and_replace() {
    let env = TestEnv::start("update").await;
    let coll = env.coll("c");
    coll.insert_many([
        doc! {"_id": 1, "a": 1, "b": 1, "n": 5},
        doc! {"_id": 2, "a": 1, "n": 1},
        doc! {"_id": 3, "a": 2},
    ])
    .await
    .unwrap();

    let r = coll
        .update_one(doc! {"a": 1}, doc! {"$set": {"x": 1, "sub.k": "v"}})
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 1));
    let r = coll
        .update_many(doc! {"a": 1}, doc! {"$inc": {"n": 10, "m": 2}})
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (2, 2));
    let r = coll
        .update_one(doc! {"_id": 1}, doc! {"$unset": {"b": ""}})
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 1));
    // Setting a value to what it already is matches but does not modify.
    let r = coll
        .update_one(doc! {"_id": 1}, doc! {"$set": {"a": 1}})
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 0));
    let r = coll
        .update_many(doc! {"a": 99}, doc! {"$set": {"z": 1}})
        .await
        .unwrap();
    assert_eq!(
        (r.matched_count, r.modified_count, r.upserted_id),
        (0, 0, None)
    );

    let r = coll
        .replace_one(doc! {"_id": 3}, doc! {"z": 9})
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (1, 1));

    assert_eq!(
        find_all(&coll, doc! {}).await,
        [
            doc! {"_id": 1, "a": 1, "n": 15, "x": 1, "sub": {"k": "v"}, "m": 2},
            doc! {"_id": 2, "a": 1, "n": 11, "m": 2},
            doc! {"_id": 3, "z": 9},
        ]
    );

    // _id is immutable.
    let err = coll
        .update_one(doc! {"_id": 2}, doc! {"$set": {"_id": 20}})
        .await
        .unwrap_err();
    assert_eq!(write_error_code(&err), 66);
    let err = coll
        .replace_one(doc! {"_id": 2}, doc! {"_id": 20, "a": 1})
        .await
        .unwrap_err();
    assert_eq!(write_error_code(&err), 66);
    env.cleanup().await;
}

#[tokio::test]
async fn upserts_insert_with_the_id_and_equalities_of_the_filter() {
    let env = TestEnv::start("upsert").await;
    let coll = env.coll("c");
    let r = coll
        .update_one(doc! {"_id": 7, "k": "v"}, doc! {"$set": {"x": 1}})
        .upsert(true)
        .await
        .unwrap();
    assert_eq!((r.matched_count, r.modified_count), (0, 0));
    assert_eq!(r.upserted_id, Some(Bson::Int32(7)));
    let r = coll
        .replace_one(doc! {"_id": 8}, doc! {"y": 1})
        .upsert(true)
        .await
        .unwrap();
    assert_eq!(r.upserted_id, Some(Bson::Int32(8)));
    let r = coll
        .update_one(doc! {"k": "w", "n": {"$gt": 3}}, doc! {"$inc": {"c": 1}})
        .upsert(true)
        .await
        .unwrap();
    let Some(Bson::ObjectId(generated)) = r.upserted_id else {
        panic!("{r:?}")
    };
    // A second upsert with the same filter now matches.
    let r = coll
        .update_one(doc! {"_id": 7, "k": "v"}, doc! {"$set": {"x": 2}})
        .upsert(true)
        .await
        .unwrap();
    assert_eq!(
        (r.matched_count, r.modified_count, r.upserted_id),
        (1, 1, None)
    );

    let docs: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        docs,
        [
            doc! {"_id": 7, "k": "v", "x": 2},
            doc! {"_id": 8, "y": 1},
            doc! {"_id": generated, "k": "w", "c": 1},
        ]
    );
    env.cleanup().await;
}

#[tokio::test]
async fn delete_one_and_delete_many() {
    let env = TestEnv::start("delete").await;
    let coll = env.coll("c");
    coll.insert_many((1..=6).map(|i| doc! {"_id": i, "even": i % 2 == 0}))
        .await
        .unwrap();
    let r = coll.delete_one(doc! {"even": true}).await.unwrap();
    assert_eq!(r.deleted_count, 1);
    assert_eq!(ids(&find_all(&coll, doc! {}).await), [1, 3, 4, 5, 6]);
    let r = coll.delete_many(doc! {"even": false}).await.unwrap();
    assert_eq!(r.deleted_count, 3);
    assert_eq!(ids(&find_all(&coll, doc! {}).await), [4, 6]);
    let r = coll.delete_one(doc! {"_id": 99}).await.unwrap();
    assert_eq!(r.deleted_count, 0);
    let r = coll.delete_many(doc! {}).await.unwrap();
    assert_eq!(r.deleted_count, 2);
    assert_eq!(coll.estimated_document_count().await.unwrap(), 0);
    env.cleanup().await;
}

#[tokio::test]
async fn find_one_and_modify_returns_the_document_before_or_after() {
    let env = TestEnv::start("fam").await;
    let coll = env.coll("c");
    coll.insert_many([
        doc! {"_id": 1, "n": 1},
        doc! {"_id": 2, "n": 5},
        doc! {"_id": 3, "n": 3},
    ])
    .await
    .unwrap();

    let before = coll
        .find_one_and_update(doc! {"_id": 1}, doc! {"$inc": {"n": 1}})
        .await
        .unwrap();
    assert_eq!(before, Some(doc! {"_id": 1, "n": 1}));
    let after = coll
        .find_one_and_update(doc! {"_id": 1}, doc! {"$inc": {"n": 1}})
        .return_document(ReturnDocument::After)
        .await
        .unwrap();
    assert_eq!(after, Some(doc! {"_id": 1, "n": 3}));
    // The sort picks which of several matches is modified.
    let top = coll
        .find_one_and_update(doc! {}, doc! {"$set": {"top": true}})
        .sort(doc! {"n": -1})
        .projection(doc! {"n": 0})
        .return_document(ReturnDocument::After)
        .await
        .unwrap();
    assert_eq!(top, Some(doc! {"_id": 2, "top": true}));

    let old = coll
        .find_one_and_replace(doc! {"_id": 3}, doc! {"r": 1})
        .await
        .unwrap();
    assert_eq!(old, Some(doc! {"_id": 3, "n": 3}));
    let new = coll
        .find_one_and_replace(doc! {"_id": 3}, doc! {"r": 2})
        .return_document(ReturnDocument::After)
        .await
        .unwrap();
    assert_eq!(new, Some(doc! {"_id": 3, "r": 2}));

    let deleted = coll.find_one_and_delete(doc! {"_id": 2}).await.unwrap();
    assert_eq!(deleted, Some(doc! {"_id": 2, "n": 5, "top": true}));
    assert_eq!(coll.find_one(doc! {"_id": 2}).await.unwrap(), None);

    let none = coll
        .find_one_and_update(doc! {"_id": 42}, doc! {"$set": {"a": 1}})
        .await
        .unwrap();
    assert_eq!(none, None);
    let upserted = coll
        .find_one_and_update(doc! {"_id": 42}, doc! {"$set": {"a": 1}})
        .upsert(true)
        .return_document(ReturnDocument::After)
        .await
        .unwrap();
    assert_eq!(upserted, Some(doc! {"_id": 42, "a": 1}));
    assert_eq!(
        coll.find_one_and_delete(doc! {"_id": 2}).await.unwrap(),
        None
    );
    env.cleanup().await;
}

// ---------------------------------------------------------------- aggregate and count

#[tokio::test]
async fn aggregate_match_sort_skip_limit_project_count() {
    let env = TestEnv::start("aggregate").await;
    let coll = env.coll("c");
    coll.insert_many((0..10).map(|i| doc! {"_id": i, "g": i % 3, "v": i}))
        .await
        .unwrap();
    let out: Vec<Document> = coll
        .aggregate([
            doc! {"$match": {"g": {"$ne": 0}}},
            doc! {"$sort": {"v": -1}},
            doc! {"$skip": 1},
            doc! {"$limit": 3},
            doc! {"$project": {"_id": 0, "v": 1}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out, [doc! {"v": 7}, doc! {"v": 5}, doc! {"v": 4}]);

    let out: Vec<Document> = coll
        .aggregate([doc! {"$match": {"g": 1}}, doc! {"$count": "n"}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out, [doc! {"n": 3}]);

    // Nothing matches: $count outputs no document at all.
    let out: Vec<Document> = coll
        .aggregate([doc! {"$match": {"g": 7}}, doc! {"$count": "n"}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(out.is_empty(), "{out:?}");

    let err = coll
        .aggregate([doc! {"$noSuchStage": {}}])
        .await
        .unwrap_err();
    assert_eq!(command_error(&err), (40324, "Location40324".into()));
    // A change-stream-only stage in a plain pipeline is known, but not allowed there.
    let err = coll
        .aggregate([doc! {"$changeStreamSplitLargeEvent": {}}])
        .await
        .unwrap_err();
    assert_eq!(command_error(&err), (20, "IllegalOperation".into()));
    env.cleanup().await;
}

#[tokio::test]
async fn aggregate_results_span_many_batches() {
    let env = TestEnv::start("aggbatches").await;
    let coll = env.coll("c");
    coll.insert_many((0..250).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let out: Vec<Document> = coll
        .aggregate([doc! {"$sort": {"_id": -1}}])
        .batch_size(9)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ids(&out), (0..250).rev().collect::<Vec<_>>());
    env.cleanup().await;
}

#[tokio::test]
async fn count_documents_and_estimated_document_count() {
    let env = TestEnv::start("count").await;
    let coll = env.coll("c");
    assert_eq!(coll.estimated_document_count().await.unwrap(), 0);
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 0);
    coll.insert_many((0..10).map(|i| doc! {"_id": i, "g": i % 3}))
        .await
        .unwrap();
    assert_eq!(coll.estimated_document_count().await.unwrap(), 10);
    // The driver's count_documents is an aggregate: $match, then $group with $sum.
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 10);
    assert_eq!(coll.count_documents(doc! {"g": 1}).await.unwrap(), 3);
    assert_eq!(
        coll.count_documents(doc! {"g": {"$gte": 1}})
            .skip(1)
            .limit(4)
            .await
            .unwrap(),
        4
    );
    env.cleanup().await;
}

// ---------------------------------------------------------------- indexes

#[tokio::test]
async fn indexes_are_created_listed_enforced_and_dropped() {
    let env = TestEnv::start("indexes").await;
    let coll = env.coll("c");
    let err = coll.list_index_names().await.unwrap_err();
    assert_eq!(command_error(&err), (26, "NamespaceNotFound".into()));

    coll.insert_many([doc! {"_id": 1, "a": 1, "b": 1, "c": 1}])
        .await
        .unwrap();
    let r = coll
        .create_index(IndexModel::builder().keys(doc! {"a": 1}).build())
        .await
        .unwrap();
    assert_eq!(r.index_name, "a_1");
    let r = coll
        .create_index(
            IndexModel::builder()
                .keys(doc! {"b": -1, "c": 1})
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .name("bc".to_string())
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    assert_eq!(r.index_name, "bc");
    // Creating the same index again is a no-op; the same key under another name conflicts.
    coll.create_index(IndexModel::builder().keys(doc! {"a": 1}).build())
        .await
        .unwrap();
    let err = coll
        .create_index(
            IndexModel::builder()
                .keys(doc! {"a": 1})
                .options(IndexOptions::builder().name("other".to_string()).build())
                .build(),
        )
        .await
        .unwrap_err();
    assert_eq!(command_error(&err), (85, "IndexOptionsConflict".into()));
    let err = coll
        .create_index(
            IndexModel::builder()
                .keys(doc! {"z": 1})
                .options(IndexOptions::builder().name("a_1".to_string()).build())
                .build(),
        )
        .await
        .unwrap_err();
    assert_eq!(command_error(&err), (86, "IndexKeySpecsConflict".into()));

    let indexes: Vec<IndexModel> = coll
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let names: Vec<_> = indexes
        .iter()
        .map(|i| i.options.as_ref().unwrap().name.clone().unwrap())
        .collect();
    assert_eq!(names, ["_id_", "a_1", "bc"]);
    assert_eq!(indexes[2].keys, doc! {"b": -1, "c": 1});
    assert_eq!(indexes[2].options.as_ref().unwrap().unique, Some(true));

    // The unique index is enforced on insert and on update.
    let err = coll
        .insert_one(doc! {"_id": 2, "b": 1, "c": 1})
        .await
        .unwrap_err();
    assert_eq!(write_error_code(&err), 11000);
    let reply = env
        .db
        .run_command(doc! {"insert": "c", "documents": [{"_id": 3, "b": 1, "c": 1}]})
        .await
        .unwrap();
    let we = reply.get_array("writeErrors").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(num(&we, "code"), 11000);
    assert_eq!(
        we.get_document("keyPattern").unwrap(),
        &doc! {"b": -1, "c": 1}
    );
    assert_eq!(we.get_document("keyValue").unwrap(), &doc! {"b": 1, "c": 1});
    coll.insert_one(doc! {"_id": 4, "b": 1, "c": 2})
        .await
        .unwrap();
    let err = coll
        .update_one(doc! {"_id": 4}, doc! {"$set": {"c": 1}})
        .await
        .unwrap_err();
    assert_eq!(write_error_code(&err), 11000);
    // A unique index cannot be built over existing duplicates.
    let err = coll
        .create_index(
            IndexModel::builder()
                .keys(doc! {"b": 1})
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 11000);

    coll.drop_index("a_1").await.unwrap();
    assert_eq!(coll.list_index_names().await.unwrap(), ["_id_", "bc"]);
    let err = coll.drop_index("nope").await.unwrap_err();
    assert_eq!(command_error(&err), (27, "IndexNotFound".into()));
    coll.drop_indexes().await.unwrap();
    assert_eq!(coll.list_index_names().await.unwrap(), ["_id_"]);
    // Without the index, duplicates are allowed again.
    coll.insert_one(doc! {"_id": 5, "b": 1, "c": 1})
        .await
        .unwrap();
    env.cleanup().await;
}

/// What `mongo-sse migrate` and the publish API rely on: a TTL index is created and listed
/// with its `expireAfterSeconds` (not enforced by the sim, see the README), racing inserts
/// under a unique index leave exactly one winner and E11000 for the rest, and an equality on
/// an array field (the events collection's `channels`) matches any element.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_and_unique_indexes_as_migrations_use_them() {
    let env = TestEnv::start("migrations").await;
    env.db
        .run_command(doc! {"createIndexes": "ev", "indexes": [
            {"key": {"published_at": 1}, "name": "published_at_ttl", "expireAfterSeconds": 60_i64},
            {"key": {"channels": 1, "_id": 1}, "name": "channels_1__id_1"},
        ]})
        .await
        .unwrap();
    let listed = env
        .db
        .run_command(doc! {"listIndexes": "ev"})
        .await
        .unwrap();
    let batch = listed
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .clone();
    let ttl = batch
        .iter()
        .filter_map(Bson::as_document)
        .find(|d| d.get_str("name") == Ok("published_at_ttl"))
        .expect("the TTL index is listed");
    assert_eq!(num(ttl, "expireAfterSeconds"), 60);
    assert_eq!(ttl.get_document("key").unwrap(), &doc! {"published_at": 1});

    let ev = env.coll("ev");
    ev.insert_one(doc! {"channels": ["a:b:c", "a:b", "a"], "published_at": DateTime::now()})
        .await
        .unwrap();
    assert_eq!(
        ev.count_documents(doc! {"channels": "a:b"}).await.unwrap(),
        1
    );
    assert_eq!(
        ev.count_documents(doc! {"channels": "a:c"}).await.unwrap(),
        0
    );

    env.db
        .run_command(doc! {"createIndexes": "_migrations", "indexes": [
            {"key": {"version": 1}, "name": "version_unique", "unique": true},
        ]})
        .await
        .unwrap();
    let claims = (0..8).map(|i| {
        let coll = env.coll("_migrations");
        async move { coll.insert_one(doc! {"version": 1_i64, "by": i}).await }
    });
    let results = futures::future::join_all(claims).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(write_error_code(r), 11000, "{r}");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn tools_start_up_commands_answer_in_mongodb_shapes() {
    let env = TestEnv::start("tools").await;
    env.coll("c")
        .insert_many([doc! {"_id": 1, "a": "x"}, doc! {"_id": 2}])
        .await
        .unwrap();

    let opts = env.admin(doc! {"getCmdLineOpts": 1}).await.unwrap();
    assert!(
        opts.get_array("argv").is_ok_and(|a| !a.is_empty()),
        "{opts}"
    );
    let parsed = opts.get_document("parsed").unwrap();
    assert!(parsed.get_document("net").is_ok(), "{parsed}");
    if env.is_sim() {
        assert_eq!(
            parsed
                .get_document("replication")
                .unwrap()
                .get_str("replSet"),
            Ok("rs0")
        );
    }
    let err = env
        .db
        .run_command(doc! {"getCmdLineOpts": 1})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 13);

    let p = env
        .admin(doc! {"getParameter": 1, "featureCompatibilityVersion": 1})
        .await
        .unwrap();
    assert_eq!(
        p.get_document("featureCompatibilityVersion")
            .unwrap()
            .get_str("version"),
        Ok("7.0")
    );
    let all = env.admin(doc! {"getParameter": "*"}).await.unwrap();
    if env.is_sim() {
        assert_eq!(all.get_bool("enableTestCommands"), Ok(true), "{all}");
    }
    assert!(all.contains_key("cursorTimeoutMillis"), "{all}");
    let err = env
        .admin(doc! {"getParameter": 1, "noSuchParameter": 1})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err), (72, "InvalidOptions".into()));

    let status = env.admin(doc! {"replSetGetStatus": 1}).await.unwrap();
    let members = status.get_array("members").unwrap();
    assert_eq!(members.len(), 1);
    let me = members[0].as_document().unwrap();
    assert_eq!(me.get_str("stateStr"), Ok("PRIMARY"));
    assert!(matches!(
        me.get_document("optime").unwrap().get("ts"),
        Some(Bson::Timestamp(_))
    ));
    assert!(status
        .get_document("optimes")
        .unwrap()
        .contains_key("lastCommittedOpTime"));

    let host = env.admin(doc! {"hostInfo": 1}).await.unwrap();
    assert!(host
        .get_document("system")
        .unwrap()
        .contains_key("numCores"));

    let stats = env.db.run_command(doc! {"dbStats": 1}).await.unwrap();
    assert_eq!(stats.get_str("db"), Ok(env.db.name()));
    assert_eq!(
        stats
            .get("objects")
            .and_then(Bson::as_i64)
            .or(stats.get_i32("objects").ok().map(i64::from)),
        Some(2)
    );
    let cs = env.db.run_command(doc! {"collStats": "c"}).await.unwrap();
    assert_eq!(
        cs.get("count")
            .and_then(|v| v.as_i64().or(v.as_i32().map(i64::from))),
        Some(2)
    );
    assert!(cs.get_document("indexSizes").unwrap().contains_key("_id_"));
    let ds = env
        .admin(doc! {"dataSize": format!("{}.c", env.db.name())})
        .await
        .unwrap();
    assert_eq!(
        ds.get("numObjects")
            .and_then(|v| v.as_i64().or(v.as_i32().map(i64::from))),
        Some(2)
    );
    let v = env.db.run_command(doc! {"validate": "c"}).await.unwrap();
    assert_eq!(v.get_bool("valid"), Ok(true));
    let err = env
        .db
        .run_command(doc! {"validate": "nope"})
        .await
        .unwrap_err();
    assert_eq!(command_error(&err).0, 26);

    let prof = env.db.run_command(doc! {"profile": -1}).await.unwrap();
    assert_eq!(prof.get_i32("was"), Ok(0));
    env.db.run_command(doc! {"profile": 0}).await.unwrap();
    if env.is_sim() {
        let err = env.db.run_command(doc! {"profile": 2}).await.unwrap_err();
        assert_eq!(
            command_error(&err).0,
            72,
            "profiling is refused, not ignored"
        );
    }

    let cmds = env.admin(doc! {"listCommands": 1}).await.unwrap();
    let cmds = cmds.get_document("commands").unwrap();
    for name in ["find", "insert", "aggregate", "getParameter", "collMod"] {
        assert!(cmds.contains_key(name), "{name} not listed");
    }

    let names = env.client.list_database_names().await.unwrap();
    for internal in ["admin", "config", "local"] {
        assert!(
            names.iter().any(|n| n == internal),
            "{internal} not in {names:?}"
        );
    }
    env.cleanup().await;
}
