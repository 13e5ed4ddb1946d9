//! Two jitgate replicas sharing one PostgreSQL grant store: a session on replica A is
//! dropped when its grant is revoked through replica B (pushed with LISTEN/NOTIFY), an
//! extension approved on B moves A's live deadline, and a replica whose store is gone
//! admits nobody (fail closed) and says so.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;
mod harness;

use std::time::{Duration, Instant};

use harness::{Env, EnvConfig, ALICE, ALICE_PASSWORD};
use jitgate::api::{AdminClient, RevokeBody};
use jitgate::config;
use jitgate::serve::{self, Server};
use jitgate_proxy::settings::Secret;

/// Replica B: the same config file as A, except its own audit log and listeners.
async fn second_replica(env: &Env) -> Server {
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    let b_yaml = yaml.replace("path: audit.jsonl", "path: audit-b.jsonl");
    assert_ne!(yaml, b_yaml);
    let b_path = env.dir.path().join("jitgate-b.yaml");
    std::fs::write(&b_path, b_yaml).unwrap();
    serve::start(config::load(&b_path).unwrap()).await.unwrap()
}

async fn env_on_shared_store(prefix: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (_, url_file) = common::store_database(dir.path(), "store").await;
    let store = format!(
        "postgres:\n  url_file: {}\n  connect_timeout: 2s\n  tls: {{ mode: disable }}\nreconcile_interval: 60s",
        url_file.display()
    );
    let env = Env::start_config(
        prefix,
        EnvConfig {
            store: Some(&store),
            ..EnvConfig::default()
        },
    )
    .await;
    // Keep the url file's directory alive as long as the env.
    std::mem::forget(dir);
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_through_replica_b_drops_the_session_on_replica_a() {
    let env = env_on_shared_store("rep_revoke").await;
    let b = second_replica(&env).await;
    let b_admin = AdminClient::new(
        format!("http://{}", b.admin_addr),
        Secret::new(harness::ADMIN_TOKEN),
    )
    .unwrap();

    // Issued through A, visible on B (one store).
    let grant = env.grant(ALICE, Duration::from_secs(600)).await;
    let seen = b_admin.get(grant.id).await.unwrap();
    assert_eq!(seen.grant.id, grant.id);

    // Both replicas admit alice.
    let (on_a, _conn_a) = env.connect().await.unwrap();
    on_a.simple_query("SELECT 1").await.unwrap();
    let mut on_b_cfg = tokio_postgres::Config::new();
    on_b_cfg
        .host("127.0.0.1")
        .port(b.proxy_addr.port())
        .user(ALICE)
        .password(ALICE_PASSWORD)
        .dbname(&env.target)
        .connect_timeout(Duration::from_secs(10));
    let (on_b, conn_b) = on_b_cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn_b);
    on_b.simple_query("SELECT 1").await.unwrap();

    let started = Instant::now();
    let revoked = b_admin
        .revoke(
            grant.id,
            &RevokeBody {
                reason: Some("replica test".into()),
                revoked_by: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        revoked.sessions_dropped, 1,
        "B drops its own session at once"
    );
    // A hears of it through the store's change feed: its periodic reconcile runs only
    // every 60 s, so arriving within the bound below means it was pushed.
    env.eventually(
        "replica A dropped its session",
        Duration::from_secs(20),
        || env.server().registry.is_empty(),
    )
    .await;
    println!("revocation reached replica A after {:?}", started.elapsed());
    let err = on_a.simple_query("SELECT 2").await.unwrap_err();
    let code = err.as_db_error().map(|e| e.code().code().to_owned());
    assert!(
        code.as_deref() == Some("57P01") || err.is_closed(),
        "{err:?}"
    );
    // Neither replica admits alice any more.
    assert!(env.connect().await.is_err());
    b.stop().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_on_b_moves_the_deadline_on_a() {
    let env = env_on_shared_store("rep_extend").await;
    let b = second_replica(&env).await;
    let grant = env.grant(ALICE, Duration::from_secs(600)).await;
    let (on_a, _conn) = env.connect().await.unwrap();
    on_a.simple_query("SELECT 1").await.unwrap();

    // An administrator-side change made through B's engine, exactly as an approved
    // extension stores it: the grant's expires_at moves later.
    let mut g = b.engine.get(grant.id).await.unwrap();
    let new_end = g
        .expires_at
        .checked_add(jiff::SignedDuration::from_mins(30))
        .unwrap();
    g.expires_at = new_end;
    b.engine.store().update(&[g]).await.unwrap();
    env.eventually(
        "replica A moved the session's deadline",
        Duration::from_secs(10),
        || {
            env.server()
                .registry
                .list()
                .first()
                .is_some_and(|s| s.deadline == new_end)
        },
    )
    .await;
    on_a.simple_query("SELECT 2").await.unwrap();
    b.stop().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_its_store_admits_nobody_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (store_db, url_file) = common::store_database(dir.path(), "store").await;
    let store = format!(
        "postgres:\n  url_file: {}\n  connect_timeout: 2s\n  tls: {{ mode: disable }}",
        url_file.display()
    );
    let env = Env::start_config(
        "rep_down",
        EnvConfig {
            store: Some(&store),
            ..EnvConfig::default()
        },
    )
    .await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    env.connect().await.unwrap();

    // The store's database goes away (as if the store server were unreachable).
    let db = store_db.clone();
    tokio::task::spawn_blocking(move || {
        common::cluster()
            .psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"))
            .unwrap();
    })
    .await
    .unwrap();
    let err = harness::refused(env.connect().await, "store gone");
    let db_err = err
        .as_db_error()
        .expect("an ErrorResponse, not a dropped connection");
    assert_eq!(db_err.code().code(), "58000", "{db_err:?}");
    assert!(
        db_err.message().contains("grant store"),
        "{}",
        db_err.message()
    );
    assert!(
        !db_err.message().contains("pw-"),
        "no secrets in the message"
    );
    let health = AdminClient::new(env.admin_url(), Secret::new(harness::ADMIN_TOKEN))
        .unwrap()
        .health()
        .await
        .unwrap();
    assert_eq!(health.status, "degraded");
    assert_eq!(health.store, "unavailable");
    env.stop().await;
}
