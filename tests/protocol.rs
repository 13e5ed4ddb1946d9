//! Everything a direct connection can do also works through jitgate: the extended
//! protocol with named/unnamed statements and binary values, pipelining, COPY both
//! ways, notices, LISTEN/NOTIFY, transactions, a 100 MB result, and cancel.

mod common;
mod harness;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{future, SinkExt, StreamExt, TryStreamExt};
use harness::server_view::ServerView;
use harness::{Env, ALICE};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

async fn ready(prefix: &str) -> (Env, tokio_postgres::Client) {
    let env = Env::start(prefix).await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, _conn) = env.connect().await.expect("connect");
    (env, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_with_parameters_binary_values_and_pipelining() {
    let (env, client) = ready("ext").await;
    client
        .batch_execute(
            "CREATE TABLE items(id int PRIMARY KEY, name text, data bytea, price numeric)",
        )
        .await
        .unwrap();
    let insert = client
        .prepare("INSERT INTO items VALUES ($1, $2, $3, $4::text::numeric)")
        .await
        .unwrap();
    for i in 0..20i32 {
        let name = format!("item {i}");
        let data: Vec<u8> = vec![0, 1, 2, 255, i as u8];
        let price = format!("{i}.50");
        client
            .execute(&insert, &[&i, &name, &data, &price])
            .await
            .unwrap();
    }
    // Pipelining: many queries in flight on one connection at once.
    let select = client
        .prepare("SELECT name, data FROM items WHERE id = $1")
        .await
        .unwrap();
    let queries = (0..20i32).map(|i| {
        let client = &client;
        let select = &select;
        async move { client.query_one(select, &[&i]).await }
    });
    let rows = future::try_join_all(queries).await.unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<_, String>(0), format!("item {i}"));
        assert_eq!(row.get::<_, Vec<u8>>(1), vec![0, 1, 2, 255, i as u8]);
    }
    // NULL parameter and an error in the middle of a pipeline.
    let null: Option<String> = None;
    let row = client
        .query_one("SELECT $1::text IS NULL", &[&null])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    let err = client
        .query_one("SELECT 1/0", &[])
        .await
        .expect_err("division by zero");
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    let n: i64 = client
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20);

    // The audit log has the parameters of the extended queries.
    let events = env.audit_events();
    let inserts: Vec<_> = events
        .iter()
        .filter(|e| matches!(&e.body, jitgate_audit::EventBody::Query { sql, .. } if sql.starts_with("INSERT INTO items")))
        .collect();
    assert_eq!(inserts.len(), 20);
    if let jitgate_audit::EventBody::Query {
        params, protocol, ..
    } = &inserts[3].body
    {
        assert_eq!(*protocol, jitgate_audit::Protocol::Extended);
        assert_eq!(params.len(), 4);
        // tokio-postgres binds in binary; binary values are kept losslessly as base64.
        assert_eq!(params[1].format, jitgate_audit::ParamFormat::Binary);
        assert_eq!(params[1].value.as_deref(), Some("aXRlbSAz")); // "item 3"
    } else {
        unreachable!()
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_simple_queries_and_transactions() {
    let (env, client) = ready("simple").await;
    let messages = client
        .simple_query("CREATE TABLE t(x int); INSERT INTO t VALUES (1),(2); SELECT sum(x) FROM t")
        .await
        .unwrap();
    let sum = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap();
    assert_eq!(sum, "3");
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (10); ROLLBACK")
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let (env, client) = ready("copy").await;
    client
        .batch_execute("CREATE TABLE c(id int, v text)")
        .await
        .unwrap();
    let sink = client
        .copy_in("COPY c FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..10_000 {
        data.push_str(&format!("{i},value {i}\n"));
    }
    for chunk in data.as_bytes().chunks(7_000) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let rows = sink.finish().await.unwrap();
    assert_eq!(rows, 10_000);

    let stream = client
        .copy_out("COPY (SELECT * FROM c ORDER BY id) TO STDOUT WITH (FORMAT csv)")
        .await
        .unwrap();
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    let out: Vec<u8> = chunks.concat();
    assert_eq!(out, data.as_bytes());

    let copies = || -> Vec<_> {
        env.audit_events()
            .into_iter()
            .filter_map(|e| match e.body {
                jitgate_audit::EventBody::Copy {
                    direction,
                    bytes,
                    rows,
                    ..
                } => Some((direction, bytes, rows)),
                _ => None,
            })
            .collect()
    };
    // Outcomes reach the log shortly after the reply (with the next statement, or within
    // jitgate's flush delay): wait for the second one.
    env.eventually("both copy events logged", Duration::from_secs(5), || {
        copies().len() >= 2
    })
    .await;
    let copies = copies();
    assert_eq!(copies.len(), 2, "{copies:?}");
    assert_eq!(copies[0].0, jitgate_audit::CopyDirection::In);
    assert_eq!(copies[0].1, data.len() as u64);
    assert_eq!(copies[0].2, Some(10_000));
    assert_eq!(copies[1].0, jitgate_audit::CopyDirection::Out);
    assert_eq!(copies[1].1, data.len() as u64);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_result_streams_through() {
    let (env, client) = ready("large").await;
    // 100 000 rows × 1 000 bytes = 100 MB of values.
    let stream = client
        .query_raw(
            "SELECT repeat('x', 1000) FROM generate_series(1, 100000)",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let mut rows = 0u64;
    let mut bytes = 0u64;
    while let Some(row) = stream.next().await {
        let row = row.unwrap();
        bytes += row.get::<_, &str>(0).len() as u64;
        rows += 1;
    }
    assert_eq!(rows, 100_000);
    assert_eq!(bytes, 100_000_000);
    let results = || -> Vec<_> {
        env.audit_events()
            .into_iter()
            .filter_map(|e| match e.body {
                jitgate_audit::EventBody::QueryResult { rows, tag, .. } => Some((tag, rows)),
                _ => None,
            })
            .collect()
    };
    let expected = (Some("SELECT".into()), Some(100_000));
    // The outcome follows the reply within jitgate's flush delay.
    env.eventually("the result logged", Duration::from_secs(5), || {
        results().contains(&expected)
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_and_listen_notify() {
    let env = Env::start("notify").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (listener, mut connection) = env
        .client_config(ALICE, harness::ALICE_PASSWORD)
        .connect(NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            let _ = tx.send(m);
        }
    });
    listener.batch_execute("LISTEN jobs").await.unwrap();
    listener
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .await
        .unwrap();
    let (sender, _conn) = env.connect().await.unwrap();
    let sender_pid: i32 = sender
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    sender.batch_execute("NOTIFY jobs, 'job-42'").await.unwrap();
    let mut got_notice = false;
    let notification = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rx.recv().await.expect("connection open") {
                AsyncMessage::Notice(n) => {
                    got_notice |= n.message() == "hello from plpgsql";
                }
                AsyncMessage::Notification(n) => return n,
                _ => {}
            }
        }
    })
    .await
    .expect("notification arrives");
    assert!(got_notice);
    assert_eq!(notification.channel(), "jobs");
    assert_eq!(notification.payload(), "job-42");
    // The sender pid is the upstream pid the sender's driver was told.
    assert_eq!(notification.process_id(), sender_pid);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_running_query() {
    let (env, client) = ready("cancel").await;
    let token = client.cancel_token();
    let view = ServerView::connect(&env).await;
    let canceller = tokio::spawn(async move {
        view.wait_statement("SELECT pg_sleep(30)", Duration::from_secs(10))
            .await;
        token.cancel_query(NoTls).await
    });
    let started = std::time::Instant::now();
    let err = client
        .simple_query("SELECT pg_sleep(30)")
        .await
        .expect_err("cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED));
    assert!(started.elapsed() < Duration::from_secs(20));
    canceller.await.unwrap().expect("cancel request sent");
    // The session is still usable after the cancel.
    let row = client.query_one("SELECT 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    env.stop().await;
}
