//! The statement guard through jitgate against a real PostgreSQL (issue 17 item 2): every
//! statement that changes a role or the server is refused with 42501 before it reaches
//! the server — simple, multi-statement, extended, fast-path, psql's `\password` — the
//! role is unchanged as the server sees it, an open transaction is aborted as
//! PostgreSQL would abort it, the audit records the refusal (passwords masked), harmless
//! statements with the same words still run, and `guard.role_changes: allow` lets the
//! changes through.

mod common;
mod harness;
mod rawclient;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use harness::{Env, ALICE, ALICE_PASSWORD};
use jitgate_audit::EventBody;
use rawclient::{extended, parse_error, query, Raw};
use tokio_postgres::error::SqlState;

/// The error of a statement the guard must refuse: 42501 with jitgate's message.
fn assert_refused(result: Result<impl Sized, tokio_postgres::Error>, sql: &str) {
    let Err(e) = result else {
        panic!("not refused: {sql}");
    };
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error for {sql}: {e}"));
    assert_eq!(
        db.code(),
        &SqlState::INSUFFICIENT_PRIVILEGE,
        "{sql}: {db:?}"
    );
    assert!(
        db.message().starts_with("jitgate refused this statement"),
        "{sql}: {db:?}"
    );
}

/// What the server holds about the upstream role: password, settings, memberships,
/// name, and the database's connection limit.
fn role_state(env: &Env) -> String {
    let u = &env.upstream_user;
    env.superuser_sql(&format!(
        "SELECT (SELECT rolpassword FROM pg_authid WHERE rolname = '{u}') || '|' || \
         (SELECT count(*) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = '{u}') || '|' || \
         (SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database()) || '|' || \
         (SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = '{u}') || '|' || \
         (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'guard_made_%') || '|' || \
         (SELECT datconnlimit FROM pg_database WHERE datname = current_database())"
    ))
}

/// The statements refused in every form, with the upstream role `u` and database `db`.
fn forbidden(u: &str, db: &str) -> Vec<String> {
    [
        "ALTER ROLE CURRENT_USER PASSWORD 'stolen-pw'".to_string(),
        format!("ALTER USER {u} WITH ENCRYPTED PASSWORD 'stolen-pw' VALID UNTIL 'infinity'"),
        "ALTER ROLE CURRENT_USER SET work_mem = '1MB'".into(),
        format!("ALTER ROLE {u} IN DATABASE {db} SET work_mem = '1MB'"),
        "ALTER ROLE CURRENT_USER RESET ALL".into(),
        format!("ALTER ROLE {u} RENAME TO guard_made_renamed"),
        "CREATE ROLE guard_made_backdoor LOGIN PASSWORD 'x'".into(),
        "CREATE USER guard_made_user".into(),
        "DROP ROLE IF EXISTS guard_made_none".into(),
        "GRANT pg_read_all_data TO CURRENT_USER".into(),
        "REVOKE pg_read_all_data FROM CURRENT_USER".into(),
        "ALTER SYSTEM SET work_mem = '1MB'".into(),
        "SET SESSION AUTHORIZATION DEFAULT".into(),
        "RESET SESSION AUTHORIZATION".into(),
        "SELECT set_config('role', 'none', false)".into(),
        "SELECT pg_catalog.set_config('session_authorization', 'x', false)".into(),
        "SELECT set_config(current_setting('application_name'), 'x', false)".into(),
        "WITH c AS (SELECT set_config('role', 'none', false) AS r) SELECT r FROM c".into(),
        "REASSIGN OWNED BY CURRENT_USER TO CURRENT_USER".into(),
        "DROP OWNED BY CURRENT_USER".into(),
        format!("ALTER DATABASE {db} SET work_mem = '1MB'"),
        format!("ALTER DATABASE {db} CONNECTION LIMIT 0"),
    ]
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_are_refused_in_simple_and_extended_form() {
    let env = Env::start("guard_forms").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let before = role_state(&env);
    let (client, conn) = env.connect().await.unwrap();
    for sql in forbidden(&env.upstream_user, &env.target) {
        assert_refused(client.simple_query(&sql).await, &sql);
        // Extended protocol (Parse/Describe/Sync, then Bind/Execute/Sync).
        assert_refused(client.execute(sql.as_str(), &[]).await, &sql);
    }
    // With a parameter the client left to the server to type.
    let sql = "SELECT set_config('role', $1, false)";
    assert_refused(client.query(sql, &[&"none"]).await, sql);
    // The session goes on, as itself.
    let row = client
        .query_one("SELECT current_user::text, session_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), env.upstream_user);
    assert_eq!(row.get::<_, String>(1), env.upstream_user);
    drop(client);
    let _ = conn.await;
    assert_eq!(
        role_state(&env),
        before,
        "the server's view of the role changed"
    );

    // Audited as refused: the client's text, a skipped result with 42501.
    env.eventually("session_end written", Duration::from_secs(10), || {
        env.audit_events().iter().any(|e| e.kind() == "session_end")
    })
    .await;
    let events = env.audit_events();
    let id = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::Query { sql, query_id, .. } if sql.starts_with("ALTER SYSTEM") => {
                Some(*query_id)
            }
            _ => None,
        })
        .expect("the refused statement is audited");
    let result = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::QueryResult {
                query_id,
                skipped,
                sqlstate,
                message,
                ..
            } if *query_id == id => Some((*skipped, sqlstate.clone(), message.clone())),
            _ => None,
        })
        .expect("its result");
    assert!(result.0, "recorded as not run: {result:?}");
    assert_eq!(result.1.as_deref(), Some("42501"));
    assert!(result.2.unwrap().starts_with("jitgate refused"));
    // Passwords in refused statements are masked.
    let raw = std::fs::read_to_string(env.audit_path()).unwrap();
    assert!(
        !raw.contains("stolen-pw"),
        "a password reached the audit log"
    );
    assert!(raw.contains("PASSWORD '<redacted>'"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harmless_statements_with_the_same_words_run() {
    let env = Env::start("guard_harmless").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE accounts (user_id int, role text); \
             INSERT INTO accounts VALUES (1, 'admin'); \
             GRANT SELECT ON accounts TO CURRENT_USER",
        )
        .await
        .unwrap();
    for sql in [
        "SELECT 'role'",
        "SELECT user_id, role FROM accounts GROUP BY user_id, role",
        "SELECT current_user, current_database()",
        "SELECT set_config('application_name', 'guarded', false)",
        "SELECT 'ALTER ROLE x PASSWORD ''y'''",
    ] {
        client.simple_query(sql).await.unwrap();
        client.query(sql, &[]).await.unwrap();
    }
    let row = client
        .query_one("SELECT set_config('search_path', $1, false)", &[&"public"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "public");
    drop(client);
    let _ = conn.await;
    env.stop().await;
}

/// Reads frames up to and including ReadyForQuery; returns (errors' SQLSTATEs,
/// CommandComplete tags, the transaction status).
async fn until_ready(raw: &mut Raw) -> (Vec<String>, Vec<String>, u8) {
    let (mut errors, mut tags) = (Vec::new(), Vec::new());
    loop {
        let (tag, body) = raw.frame().await;
        match tag {
            b'E' => errors.push(parse_error(&body).code),
            b'C' => tags.push(String::from_utf8_lossy(&body[..body.len() - 1]).into_owned()),
            b'Z' => return (errors, tags, body[0]),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_aborts_the_transaction_and_a_multi_statement_query_whole() {
    let env = Env::start("guard_tx").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let before = role_state(&env);
    let (mut raw, _) = Raw::login(&env).await;
    raw.send(&query("CREATE TABLE t (a int)")).await;
    assert_eq!(until_ready(&mut raw).await.0, Vec::<String>::new());

    // A multi-statement Query is one implicit transaction: refused whole.
    raw.send(&query(
        "INSERT INTO t VALUES (1); ALTER ROLE CURRENT_USER PASSWORD 'x'; INSERT INTO t VALUES (2)",
    ))
    .await;
    let (errors, tags, status) = until_ready(&mut raw).await;
    assert_eq!((errors, tags, status), (vec!["42501".into()], vec![], b'I'));

    // Inside a transaction block, simple protocol: the block fails; COMMIT rolls back.
    for refused in [
        query("ALTER ROLE CURRENT_USER SET work_mem = '1MB'"),
        extended("ALTER ROLE CURRENT_USER PASSWORD 'x'"),
    ] {
        raw.send(&query("BEGIN; INSERT INTO t VALUES (3)")).await;
        assert_eq!(until_ready(&mut raw).await.2, b'T');
        raw.send(&refused).await;
        let (errors, _, status) = until_ready(&mut raw).await;
        assert_eq!((errors, status), (vec!["42501".to_string()], b'E'));
        raw.send(&query("COMMIT")).await;
        let (errors, tags, status) = until_ready(&mut raw).await;
        assert_eq!(
            (errors, tags, status),
            (vec![], vec!["ROLLBACK".into()], b'I')
        );
    }
    assert_eq!(env.superuser_sql("SELECT count(*) FROM t"), "0");
    assert_eq!(role_state(&env), before);
    env.stop().await;
}

/// A fast-path FunctionCall of `set_config` (OID 2078) with text arguments.
fn set_config_call(name: &str, value: &str) -> BytesMut {
    let args: [&[u8]; 3] = [name.as_bytes(), value.as_bytes(), b"false"];
    let mut body = BytesMut::new();
    body.put_u32(2078);
    body.put_i16(0);
    body.put_i16(3);
    for a in args {
        body.put_i32(a.len() as i32);
        body.put_slice(a);
    }
    body.put_i16(0);
    let mut b = BytesMut::new();
    b.put_u8(b'F');
    b.put_i32(4 + body.len() as i32);
    b.put_slice(&body);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_set_config_of_role_is_refused() {
    let env = Env::start("guard_fastpath").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (mut raw, _) = Raw::login(&env).await;
    for name in ["role", "Session_Authorization"] {
        raw.send(&set_config_call(name, "none")).await;
        let (errors, _, status) = until_ready(&mut raw).await;
        assert_eq!(
            (errors, status),
            (vec!["42501".to_string()], b'I'),
            "{name}"
        );
    }
    // Another setting goes through (FunctionCallResponse, no error).
    raw.send(&set_config_call("application_name", "fast")).await;
    let (tag, _) = raw.frame().await;
    assert_eq!(tag, b'V');
    assert_eq!(until_ready(&mut raw).await.0, Vec::<String>::new());
    raw.send(&query("SELECT current_user")).await;
    let (tag, body) = loop {
        let (tag, body) = raw.frame().await;
        if tag == b'D' {
            break (tag, body);
        }
    };
    assert_eq!(tag, b'D');
    assert!(String::from_utf8_lossy(&body).ends_with(&env.upstream_user));
    until_ready(&mut raw).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_password_is_refused_and_not_logged() {
    let env = Env::start("guard_psql").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let before = role_state(&env);
    // `setsid`: no controlling terminal, so psql reads the new password from stdin.
    let mut child = std::process::Command::new("setsid")
        .arg(env.cluster.bin("psql"))
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-c", "\\password"])
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", env.proxy_port().to_string())
        .env("PGUSER", ALICE)
        .env("PGPASSWORD", ALICE_PASSWORD)
        .env("PGDATABASE", &env.target)
        .env("PGSSLMODE", "disable")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run setsid psql (util-linux, postgresql-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"psql-new-pw\npsql-new-pw\n")
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "psql succeeded: {stderr}");
    assert!(stderr.contains("jitgate refused"), "{stderr}");
    assert_eq!(role_state(&env), before);
    env.eventually(
        "the refused statement audited",
        Duration::from_secs(10),
        || env.audit_events().iter().any(|e| e.kind() == "session_end"),
    )
    .await;
    let raw = std::fs::read_to_string(env.audit_path()).unwrap();
    assert!(raw.contains("PASSWORD '<redacted>'"), "{raw}");
    assert!(!raw.contains("SCRAM-SHA-256$") && !raw.contains("psql-new-pw"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_allow_lets_them_through() {
    let env = Env::start_with("guard_allow", "guard:\n  role_changes: allow", "").await;
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, conn) = env.connect().await.unwrap();
    client
        .simple_query("ALTER ROLE CURRENT_USER SET work_mem = '1MB'")
        .await
        .unwrap();
    drop(client);
    let _ = conn.await;
    let u = &env.upstream_user;
    assert_eq!(
        env.superuser_sql(&format!(
            "SELECT count(*) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = '{u}'"
        )),
        "1"
    );
    env.stop().await;
}
