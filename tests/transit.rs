//! Secrets stay secret in transit: `tls.required` refuses clients without TLS (28000,
//! audited) and serves those with it; PostgreSQL 17's direct TLS is served with ALPN
//! `postgresql` and refused without it; the PostgreSQL grant store is reached over
//! verify-full TLS (the server's own view says so) and a wrong CA or a name not in its
//! certificate stops jitgate at startup with the cause; the admin API serves HTTPS to the
//! CLI (`jitgate login --ca-file`, `whoami`, `grants` through `admin.tls.ca_file`), and
//! `jitgate login` will not send a password over plain HTTP to a host that is not
//! loopback.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
mod harness;
mod tlsutil;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{ALICE, ALICE_PASSWORD};
use jitgate_audit::EventBody;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::ServerName;
use tlsutil::{
    describe, error_fields, run_within, split_message, stdout, upstream_ssl, Ca, EnvSpec, Leaf,
    TlsEnv, LIMIT,
};
use tokio::io::AsyncReadExt;
use tokio_postgres::config::{SslMode, SslNegotiation};

/// What every env here shares; tests set what they are about.
fn spec<'a>(prefix: &'a str, files: &'a [(&'a str, &'a str)]) -> EnvSpec<'a> {
    EnvSpec {
        prefix,
        client_tls: None,
        upstream_tls: "{ mode: disable }",
        files,
        upstream_port: None,
        tls_required: false,
        admin_tls: None,
        store: None,
    }
}

fn server_leaf(ca: &Ca) -> Leaf {
    ca.leaf(&["localhost", "127.0.0.1"])
}

/// A rustls client trusting only `ca`, offering `alpn`.
fn client_config(ca: &Ca, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_refuses_plain_clients_with_28000_and_serves_tls_ones() {
    let ca = Ca::new("jitgate tls.required test CA");
    let leaf = server_leaf(&ca);
    let files = [("ca.pem", ca.pem())];
    let env = TlsEnv::start(EnvSpec {
        client_tls: Some(&leaf),
        tls_required: true,
        ..spec("tls_required", &files)
    })
    .await;
    env.grant(Duration::from_secs(600)).await;

    // A driver without TLS: FATAL 28000 with what to do.
    let err = match env.connect().await {
        Ok(_) => panic!("a plain connection was served"),
        Err(e) => e,
    };
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {err:?}"));
    assert_eq!(db.code().code(), "28000", "{db:?}");
    assert!(db.message().contains("jitgate requires TLS"), "{db:?}");
    assert!(
        db.hint().is_some_and(|h| h.contains("sslmode=require")),
        "{db:?}"
    );

    // psql with sslmode=disable is refused with the message ...
    let mut cmd = env.psql();
    cmd.env("PGSSLMODE", "disable").args(["-c", "SELECT 1"]);
    let out = run_within(cmd, LIMIT).await;
    assert!(
        !out.status.success(),
        "plain psql served: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("jitgate requires TLS"),
        "{}",
        describe(&out)
    );
    // ... and served with sslmode=require.
    let mut cmd = env.psql();
    cmd.env("PGSSLMODE", "require").args(["-c", "SELECT 1"]);
    let out = run_within(cmd, LIMIT).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "1");

    // Both refusals are audited with the reason; the TLS session started as TLS.
    let events = env.audit_events();
    let refusals = events
        .iter()
        .filter(|e| {
            matches!(&e.body, EventBody::AccessDenied { reason, .. } if reason.contains("tls.required"))
        })
        .count();
    assert_eq!(refusals, 2, "{events:#?}");
    let starts: Vec<bool> = events
        .iter()
        .filter_map(|e| match e.body {
            EventBody::SessionStart { tls, .. } => Some(tls),
            _ => None,
        })
        .collect();
    assert_eq!(starts, vec![true]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_with_alpn_is_served_and_audited_and_without_alpn_refused() {
    let ca = Ca::new("jitgate direct TLS test CA");
    let leaf = server_leaf(&ca);
    let files = [("ca.pem", ca.pem())];
    let env = TlsEnv::start(EnvSpec {
        client_tls: Some(&leaf),
        tls_required: true,
        ..spec("tls_direct", &files)
    })
    .await;
    env.grant(Duration::from_secs(600)).await;

    // tokio-postgres supports sslnegotiation=direct: the TLS handshake is its first byte.
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .hostaddr(std::net::Ipv4Addr::LOCALHOST.into())
        .port(env.proxy_port())
        .user(ALICE)
        .password(ALICE_PASSWORD)
        .dbname(&env.target)
        .ssl_mode(SslMode::Require)
        .ssl_negotiation(SslNegotiation::Direct)
        .connect_timeout(Duration::from_secs(10));
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(&ca, &[b"postgresql"]));
    let (client, connection) = tokio::time::timeout(LIMIT, config.connect(tls))
        .await
        .expect("connect must not hang")
        .unwrap();
    let driver = tokio::spawn(connection);
    let row = client
        .query_one("SELECT 'direct tls' AS hop", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "direct tls");
    let info = env.new_session(&[]).await;
    assert!(info.tls, "{info:?}");
    drop(client);
    let _ = driver.await;
    env.no_sessions().await;
    let events = env.audit_events();
    assert!(
        events.iter().any(|e| matches!(&e.body,
            EventBody::Query { sql, .. } if sql == "SELECT 'direct tls' AS hop")),
        "query not audited: {events:#?}"
    );

    // A raw TLS client that offers no ALPN: told why over TLS (FATAL 08P01), then closed.
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&ca, &[])));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", env.proxy_port()))
        .await
        .unwrap();
    let mut stream = tokio::time::timeout(
        LIMIT,
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("handshake must not hang")
    .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(LIMIT, stream.read_to_end(&mut reply))
        .await
        .expect("the server must close");
    let (tag, body, _) =
        split_message(&reply).unwrap_or_else(|| panic!("expected an ErrorResponse: {reply:?}"));
    assert_eq!(tag, b'E');
    let fields = error_fields(body);
    let field = |k: u8| {
        fields
            .iter()
            .find(|(t, _)| *t == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field(b'S'), "FATAL");
    assert_eq!(field(b'C'), "08P01");
    assert!(field(b'M').contains("without ALPN"), "{fields:?}");
    assert!(field(b'H').contains("postgresql"), "{fields:?}");

    // A client offering only another protocol fails the handshake itself (no_application_protocol).
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&ca, &[b"http/1.1"])));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", env.proxy_port()))
        .await
        .unwrap();
    let handshake = tokio::time::timeout(
        LIMIT,
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("handshake must not hang");
    assert!(handshake.is_err(), "a foreign ALPN protocol was accepted");

    assert!(env.server().registry.list().is_empty());
    env.stop().await;
}

/// A store database on the shared cluster (ssl on, certificate for localhost and
/// 127.0.0.1) and a key/value connection string to it naming `host`.
async fn store_conninfo(host: &str) -> (String, String) {
    let (name, owner, password) = common::owned_database("tls_store").await;
    let conninfo = format!(
        "host={host} hostaddr=127.0.0.1 port={} user={owner} password={password} dbname={name}",
        common::cluster().port()
    );
    (owner, conninfo)
}

const STORE_VERIFY_FULL: &str =
    "{ postgres: { url_file: store.url, tls: { mode: verify-full, ca_file: store-ca.pem } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grant_store_is_reached_over_verify_full_tls() {
    let ssl = upstream_ssl().await;
    let (owner, conninfo) = store_conninfo("localhost").await;
    let files = [
        ("store-ca.pem", ssl.ca_pem.as_str()),
        ("store.url", &conninfo),
    ];
    let env = TlsEnv::start(EnvSpec {
        store: Some(STORE_VERIFY_FULL),
        ..spec("tls_store_ok", &files)
    })
    .await;
    // The store works: a grant is written and read back through it.
    let grant = env.grant(Duration::from_secs(600)).await;
    let listed = env.server().engine.store().get(grant.id).await.unwrap();
    assert_eq!(listed.map(|g| g.id), Some(grant.id));

    // The server's own view: every connection of the store's role is encrypted.
    let sql = format!(
        "SELECT count(*) || ' ' || bool_and(s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.usename = '{owner}'"
    );
    let seen = tokio::task::spawn_blocking(move || common::cluster().psql("postgres", &sql))
        .await
        .unwrap()
        .unwrap();
    let (count, all_ssl) = seen.split_once(' ').unwrap();
    assert!(
        count.parse::<u32>().unwrap() >= 2,
        "pool and listener: {seen}"
    );
    assert_eq!(all_ssl, "true", "a store connection without TLS: {seen}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_store_with_a_wrong_ca_or_name_stops_startup_with_the_cause() {
    let ssl = upstream_ssl().await;
    let other = Ca::new("not the store's CA");

    // A CA that did not sign the store's certificate.
    let (_, conninfo) = store_conninfo("localhost").await;
    let files = [("store-ca.pem", other.pem()), ("store.url", &conninfo)];
    let started = TlsEnv::try_start(EnvSpec {
        store: Some(STORE_VERIFY_FULL),
        ..spec("tls_store_ca", &files)
    })
    .await;
    let message = match started {
        Ok(_) => panic!("started with a store certificate from an unknown CA"),
        Err((e, _)) => e.to_string(),
    };
    assert!(
        message.contains("not signed by a CA jitgate trusts"),
        "{message}"
    );
    assert!(message.contains("store.postgres.tls.ca_file"), "{message}");
    assert!(!message.contains("pw-"), "the password leaked: {message}");

    // The right CA, but connecting by a name the certificate does not hold.
    let (_, conninfo) = store_conninfo("store.invalid").await;
    let files = [
        ("store-ca.pem", ssl.ca_pem.as_str()),
        ("store.url", &conninfo),
    ];
    let started = TlsEnv::try_start(EnvSpec {
        store: Some(STORE_VERIFY_FULL),
        ..spec("tls_store_name", &files)
    })
    .await;
    let message = match started {
        Ok(_) => panic!("started with a store certificate for another name"),
        Err((e, _)) => e.to_string(),
    };
    assert!(message.contains("does not name the host="), "{message}");

    // A connection string that asks for unverified TLS is refused as such.
    let (_, conninfo) = store_conninfo("localhost").await;
    let conninfo = format!("{conninfo} sslmode=require");
    let files = [("store.url", conninfo.as_str())];
    let started = TlsEnv::try_start(EnvSpec {
        store: Some("{ postgres: { url_file: store.url, tls: { mode: disable } } }"),
        ..spec("tls_store_require", &files)
    })
    .await;
    let message = match started {
        Ok(_) => panic!("started with sslmode=require and tls disabled"),
        Err((e, _)) => e.to_string(),
    };
    assert!(message.contains("mode: verify-full"), "{message}");
}

/// The jitgate binary with its own credentials file, no ambient configuration.
fn jitgate(env: &TlsEnv) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jitgate"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("JITGATE_CREDENTIALS", env.path("credentials.json"))
        .arg("--config")
        .arg(env.path("jitgate.yaml"))
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` with alice's password on its stdin, bounded by [`LIMIT`].
async fn with_password(cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        tlsutil::Running::spawn(cmd).finish(&format!("{ALICE_PASSWORD}\n"), LIMIT)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_logs_in_over_https_and_never_sends_a_password_in_clear_text() {
    let ca = Ca::new("jitgate admin API test CA");
    let leaf = server_leaf(&ca);
    let files = [("ca.pem", ca.pem())];
    let env = TlsEnv::start(EnvSpec {
        admin_tls: Some(&leaf),
        ..spec("tls_admin", &files)
    })
    .await;
    let https = format!("https://127.0.0.1:{}", env.server().admin_addr.port());

    // login over HTTPS, verified against the CA file; the password on stdin.
    let login = |server: &str, ca_file: Option<&str>| {
        let mut cmd = jitgate(&env);
        cmd.args(["login", "--server", server, "--identity", ALICE]);
        if let Some(ca) = ca_file {
            cmd.arg("--ca-file").arg(env.path(ca));
        }
        cmd
    };
    let out = with_password(login(&https, Some("ca.pem"))).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).contains("logged in as alice"),
        "{}",
        describe(&out)
    );

    // The stored login remembers the CA: whoami goes over HTTPS too.
    let mut cmd = jitgate(&env);
    cmd.arg("whoami");
    let out = run_within(cmd, LIMIT).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("alice"), "{}", describe(&out));

    // Admin-token commands reach it through the config (https, admin.tls.ca_file); the
    // file the CLI reads names the port the server got.
    let yaml = std::fs::read_to_string(env.path("jitgate.yaml")).unwrap();
    let yaml = yaml.replace(
        "admin:\n  listen: 127.0.0.1:0",
        &format!(
            "admin:\n  listen: 127.0.0.1:{}",
            env.server().admin_addr.port()
        ),
    );
    std::fs::write(env.path("jitgate.yaml"), yaml).unwrap();
    let mut cmd = jitgate(&env);
    cmd.arg("grants");
    let out = run_within(cmd, LIMIT).await;
    assert!(out.status.success(), "{}", describe(&out));

    // Without the CA the certificate is not trusted, and nothing is logged in.
    let out = with_password(login(&https, None)).await;
    assert!(!out.status.success(), "untrusted certificate accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        describe(&out)
    );

    // Plain HTTP to a host that is not loopback: refused before any password is read or
    // any connection is made (192.0.2.1 is TEST-NET-1, and nothing is sent there).
    let started = Instant::now();
    let out = run_within(login("http://192.0.2.1:6433", None), LIMIT).await;
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to send your password over plain HTTP to http://192.0.2.1:6433"),
        "{}",
        describe(&out)
    );
    assert!(stderr.contains("https://"), "says how to fix it: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the refusal must not wait for a network"
    );
    env.stop().await;
}
