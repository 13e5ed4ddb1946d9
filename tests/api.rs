//! The admin API, served for real (SQLite store and audit log in a temp dir) on
//! 127.0.0.1:0 and driven through `AdminClient`; plus smoke tests of the `jitgate` binary.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jitgate::api::{self, AdminClient, ApiState, IssueBody, ListQuery, RevokeBody, TokenKeys};
use jitgate::config::AdminSettings;
use jitgate::lifecycle::Lifecycle;
use jitgate::notify::Notifier;
use jitgate::Error;
use jitgate_audit::{AuditConfig, AuditWriter, Event, EventBody, WriterGuard};
use jitgate_policy::{Catalog, Engine, GrantState, SqliteStore, SystemClock};
use jitgate_proxy::auth::ScramVerifier;
use jitgate_proxy::registry::{SessionInfo, SessionRegistry};
use jitgate_proxy::settings::Secret;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const TOKEN: &str = "api-test-token-0123456789abcdef";
/// The server's key for login tokens: the tests mint tokens with it (and with another).
const LOGIN_KEY: &[u8] = b"api-test-login-key-0123456789abcdef";

struct Server {
    addr: SocketAddr,
    client: AdminClient,
    registry: Arc<SessionRegistry>,
    audit_path: PathBuf,
    audit_guard: Option<WriterGuard>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("grants.db")).unwrap();
        let catalog = Catalog {
            identities: BTreeSet::from(["alice".to_owned(), "bob".to_owned()]),
            targets: BTreeMap::from([(
                "prod".to_owned(),
                BTreeSet::from(["readonly".to_owned(), "readwrite".to_owned()]),
            )]),
        };
        let engine = Engine::new(Arc::new(store), Arc::new(SystemClock), catalog);
        let audit_path = dir.path().join("audit.jsonl");
        let (audit, guard) = AuditWriter::start(AuditConfig::new(&audit_path)).unwrap();
        let registry = SessionRegistry::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let state = ApiState {
            lifecycle: Lifecycle {
                engine,
                registry: Arc::clone(&registry),
                audit,
                notifier: Notifier::disabled(),
                own_changes: Default::default(),
                provisioner: Default::default(),
            },
            token: Secret::new(TOKEN),
            login_keys: TokenKeys::new(LOGIN_KEY, Duration::from_secs(3600)),
            identities: Arc::new(std::collections::HashMap::new()),
            mock_secret: [7; 32],
            login_limits: api::LoginLimits::new(&Default::default()),
            refusal_audit: Arc::new(jitgate_proxy::limits::RefusalAudit::new(&Default::default())),
        };
        let task = tokio::spawn(api::serve(listener, state, shutdown.clone()));
        let client = AdminClient::from_settings(&AdminSettings {
            listen: addr,
            token: Secret::new(TOKEN),
        })
        .unwrap();
        Server {
            addr,
            client,
            registry,
            audit_path,
            audit_guard: Some(guard),
            shutdown,
            task,
            dir,
        }
    }

    fn audit_events(&self) -> Vec<Event> {
        jitgate_audit::read_events(&self.audit_path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops on shutdown")
            .unwrap()
            .unwrap();
    }
}

fn issue_body(identity: &str, role: &str, duration: &str) -> IssueBody {
    IssueBody {
        identity: identity.to_owned(),
        target: "prod".to_owned(),
        role: role.to_owned(),
        duration: duration.to_owned(),
        reason: "INC-42 investigate slow queries".to_owned(),
        not_before: None,
        issued_by: Some("dba-carol".to_owned()),
    }
}

/// The HTTP status of an API error, failing the test on any other outcome.
fn status_of<T: std::fmt::Debug>(result: Result<T, Error>) -> (u16, String) {
    match result {
        Err(Error::Admin { status, message }) => (status, message),
        other => panic!("expected an admin API error, got {other:?}"),
    }
}

#[tokio::test]
async fn requests_without_the_right_token_get_401() {
    let server = Server::start().await;
    let url = format!("http://{}/v1/grants", server.addr);

    let response = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers().get("www-authenticate").unwrap(),
        "Bearer"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("missing admin token"));

    let wrong = AdminClient::new(
        format!("http://{}", server.addr),
        Secret::new("wrong-token-0123456789"),
    )
    .unwrap();
    let (status, message) = status_of(wrong.list(&ListQuery::default()).await);
    assert_eq!(status, 401);
    assert!(message.contains("invalid admin token"), "{message}");
    let (status, _) = status_of(wrong.issue(&issue_body("alice", "readonly", "30m")).await);
    assert_eq!(status, 401);
    // Nothing was issued by the refused request.
    assert!(server
        .client
        .list(&ListQuery::default())
        .await
        .unwrap()
        .is_empty());

    // Health is deliberately open (probes), and says nothing else.
    assert_eq!(wrong.health().await.unwrap().status, "ok");
    server.stop().await;
}

/// Calls `route` with `token` (none: no `Authorization` header); the status and error.
async fn call(server: &Server, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let url = format!(
        "http://{}{}",
        server.addr,
        path.replace("{id}", &Uuid::new_v4().to_string())
    );
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .header("content-type", "application/json")
        .body("{}");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn every_route_demands_its_token_and_refuses_the_wrong_kind() {
    let server = Server::start().await;
    let now = Timestamp::now();
    let login = TokenKeys::new(LOGIN_KEY, Duration::from_secs(600))
        .issue("alice", now)
        .0;
    let forged = TokenKeys::new(b"some-other-key-0123456789abcdef", Duration::from_secs(600))
        .issue("alice", now)
        .0;
    let routes = api::routes();
    assert!(routes.len() >= 16, "{routes:?}");
    for route in &routes {
        let (method, path) = (route.method.as_str(), route.path);
        let at = format!("{method} {path}");
        let guarded = route.access != api::Access::Public;
        let (none, _) = call(&server, method, path, None).await;
        assert_eq!(none == 401, guarded, "{at} without a token: {none}");
        if !guarded {
            continue;
        }
        for bad in ["nope", forged.as_str(), "Basic abc"] {
            let (status, body) = call(&server, method, path, Some(bad)).await;
            assert_eq!(status, 401, "{at} with token {bad:?}: {body}");
        }
        let (as_login, body) = call(&server, method, path, Some(&login)).await;
        let (as_admin, admin_body) = call(&server, method, path, Some(TOKEN)).await;
        assert_ne!(as_admin, 401, "{at} with the admin token: {admin_body}");
        match route.access {
            api::Access::Admin => {
                assert_eq!(as_login, 403, "{at} with a login token: {body}");
                assert!(body.contains("needs the admin token"), "{at}: {body}");
                assert_ne!(as_admin, 403, "{at} with the admin token: {admin_body}");
            }
            _ => {
                assert_ne!(as_login, 401, "{at} with a login token: {body}");
                assert!(!body.contains("needs the admin token"), "{at}: {body}");
            }
        }
    }
    // At each path, the methods not in the table are not served, whatever the token.
    let paths: BTreeSet<&str> = routes.iter().map(|r| r.path).collect();
    for path in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if routes
                .iter()
                .any(|r| r.path == path && r.method.as_str() == method)
            {
                continue;
            }
            let (status, body) = call(&server, method, path, Some(TOKEN)).await;
            assert_eq!(status, 405, "{method} {path}: {body}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn issue_list_get_revoke_with_audit_trail() {
    let server = Server::start().await;
    let client = &server.client;

    let before = Timestamp::now();
    let issued = client
        .issue(&issue_body("alice", "readonly", "30m"))
        .await
        .unwrap();
    let g = &issued.grant;
    assert_eq!(
        (g.identity.as_str(), g.target.as_str(), g.role.as_str()),
        ("alice", "prod", "readonly")
    );
    assert_eq!(g.state, GrantState::Approved);
    assert_eq!(g.issued_by, "dba-carol");
    assert_eq!(g.expires_at.duration_since(g.not_before).as_secs(), 30 * 60);
    assert!(
        g.not_before
            >= before
                .checked_sub(jiff::SignedDuration::from_secs(1))
                .unwrap()
    );
    let remaining = issued.remaining_s.expect("active grant has remaining_s");
    assert!((30 * 60 - 60..=30 * 60).contains(&remaining), "{remaining}");
    let id = g.id;

    let other = client
        .issue(&issue_body("bob", "readwrite", "1h"))
        .await
        .unwrap();

    let all = client.list(&ListQuery::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].grant.id, other.grant.id, "newest first");
    let alice_only = client
        .list(&ListQuery {
            identity: Some("alice".into()),
            active: Some(true),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(alice_only.len(), 1);
    assert_eq!(alice_only[0].grant.id, id);

    let fetched = client.get(id).await.unwrap();
    assert_eq!(fetched.grant, issued.grant);

    let revoked = client
        .revoke(
            id,
            &RevokeBody {
                reason: Some("done".into()),
                revoked_by: Some("dba-dave".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(revoked.sessions_dropped, 0);
    assert_eq!(revoked.grant.grant.state, GrantState::Revoked);
    assert_eq!(revoked.grant.grant.revoked_by.as_deref(), Some("dba-dave"));
    assert_eq!(revoked.grant.remaining_s, None);

    // Revoking again is idempotent: the same revoked grant, nothing dropped or recorded.
    let again = client.revoke(id, &RevokeBody::default()).await.unwrap();
    assert_eq!(again.grant.grant.state, GrantState::Revoked);
    assert_eq!(again.grant.grant.revoked_by.as_deref(), Some("dba-dave"));
    assert_eq!(again.sessions_dropped, 0);

    let revoked_list = client
        .list(&ListQuery {
            state: Some(GrantState::Revoked),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(revoked_list.len(), 1);
    assert_eq!(revoked_list[0].grant.id, id);

    let events = server.audit_events();
    let issued_event = events
        .iter()
        .find(|e| e.grant_id == Some(id) && e.kind() == "grant_issued")
        .expect("grant_issued event");
    assert_eq!(issued_event.identity.as_deref(), Some("alice"));
    assert_eq!(issued_event.target.as_deref(), Some("prod"));
    assert_eq!(issued_event.role.as_deref(), Some("readonly"));
    match &issued_event.body {
        EventBody::GrantIssued {
            expires_at,
            issued_by,
            reason,
            ..
        } => {
            assert_eq!(*expires_at, issued.grant.expires_at);
            assert_eq!(issued_by, "dba-carol");
            assert_eq!(reason, "INC-42 investigate slow queries");
        }
        other => panic!("{other:?}"),
    }
    let revoked_event = events
        .iter()
        .find(|e| e.grant_id == Some(id) && e.kind() == "grant_revoked")
        .expect("grant_revoked event");
    assert_eq!(
        revoked_event.body,
        EventBody::GrantRevoked {
            revoked_by: "dba-dave".into(),
            reason: Some("done".into()),
            from: Some("approved".into()),
            rule: None,
        }
    );
    assert!(events
        .iter()
        .any(|e| e.grant_id == Some(other.grant.id) && e.kind() == "grant_issued"));
    assert_eq!(events.len(), 3, "a repeated revoke writes nothing");
    server.stop().await;
}

#[tokio::test]
async fn invalid_requests_get_400_and_unknown_ids_404() {
    let server = Server::start().await;
    let client = &server.client;

    let (status, message) = status_of(
        client
            .issue(&issue_body("mallory", "readonly", "30m"))
            .await,
    );
    assert_eq!(status, 400);
    assert!(
        message.contains("unknown identity \"mallory\""),
        "{message}"
    );

    let (status, message) = status_of(client.issue(&issue_body("alice", "superuser", "30m")).await);
    assert_eq!(status, 400);
    assert!(message.contains("unknown role"), "{message}");

    let (status, message) = status_of(
        client
            .issue(&issue_body("alice", "readonly", "30 fortnights"))
            .await,
    );
    assert_eq!(status, 400);
    assert!(
        message.starts_with("duration: invalid duration"),
        "{message}"
    );

    let mut body = issue_body("alice", "readonly", "30m");
    body.not_before = Some("tomorrow".into());
    let (status, message) = status_of(client.issue(&body).await);
    assert_eq!(status, 400);
    assert!(message.contains("not_before"), "{message}");

    let mut body = issue_body("alice", "readonly", "30m");
    body.reason = "  ".into();
    let (status, _) = status_of(client.issue(&body).await);
    assert_eq!(status, 400);

    let (status, message) = status_of(client.get(Uuid::now_v7()).await);
    assert_eq!(status, 404);
    assert!(message.contains("no grant with id"), "{message}");
    let (status, _) = status_of(client.revoke(Uuid::now_v7(), &RevokeBody::default()).await);
    assert_eq!(status, 404);

    // Not a UUID, unknown route, bad filter: JSON errors too.
    let http = reqwest::Client::new();
    for (path, expected) in [
        ("/v1/grants/not-a-uuid", 400),
        ("/v1/nope", 404),
        ("/v1/grants?state=sleeping", 400),
    ] {
        let response = http
            .get(format!("http://{}{path}", server.addr))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    assert!(client.list(&ListQuery::default()).await.unwrap().is_empty());
    server.stop().await;
}

fn session_for(grant: &jitgate_policy::Grant) -> SessionInfo {
    SessionInfo {
        session_id: Uuid::now_v7(),
        identity: grant.identity.clone(),
        target: grant.target.clone(),
        role: grant.role.clone(),
        grant_id: grant.id,
        client_addr: "127.0.0.1:50000".into(),
        tls: false,
        started_at: Timestamp::now(),
        deadline: grant.expires_at,
        upstream_pid: Some(4242),
    }
}

#[tokio::test]
async fn revoke_drops_the_grants_live_sessions() {
    let server = Server::start().await;
    let client = &server.client;
    let grant = client
        .issue(&issue_body("alice", "readonly", "30m"))
        .await
        .unwrap()
        .grant;
    let bystander = client
        .issue(&issue_body("bob", "readonly", "30m"))
        .await
        .unwrap()
        .grant;

    let info = session_for(&grant);
    let mut handle = server.registry.register(info.clone(), None);
    let mut other = server.registry.register(session_for(&bystander), None);

    let sessions = client.sessions().await.unwrap();
    assert_eq!(sessions.len(), 2);
    let listed = sessions
        .iter()
        .find(|s| s.session_id == info.session_id)
        .unwrap();
    assert_eq!(listed.grant_id, grant.id);
    assert_eq!(listed.deadline, grant.expires_at);
    assert_eq!(listed.upstream_pid, Some(4242));

    let revoked = client
        .revoke(
            grant.id,
            &RevokeBody {
                reason: Some("access no longer needed".into()),
                revoked_by: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(revoked.sessions_dropped, 1);

    let control = handle.control();
    tokio::time::timeout(Duration::from_secs(5), control.changed())
        .await
        .expect("the session is told at once")
        .unwrap();
    let revocation = control.borrow().revoked.clone().expect("marked revoked");
    assert_eq!(revocation.by, "admin");
    assert_eq!(
        revocation.reason.as_deref(),
        Some("access no longer needed")
    );
    assert_eq!(Some(revocation.at), revoked.grant.grant.revoked_at);
    assert!(
        !other.control().has_changed().unwrap(),
        "other grants' sessions untouched"
    );

    drop(handle);
    let sessions = client.sessions().await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].grant_id, bystander.id);
    server.stop().await;
}

#[tokio::test]
async fn issue_fails_closed_when_the_audit_log_is_gone() {
    let mut server = Server::start().await;
    // Stop the writer: every later write fails.
    server.audit_guard.take().unwrap().close().await.unwrap();

    let (status, message) = status_of(
        server
            .client
            .issue(&issue_body("alice", "readonly", "30m"))
            .await,
    );
    assert_eq!(status, 503);
    assert!(message.contains("the grant was not issued"), "{message}");

    // The grant was taken back: nothing can admit alice.
    let grants = server.client.list(&ListQuery::default()).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].grant.state, GrantState::Revoked);
    assert_eq!(grants[0].grant.revoked_by.as_deref(), Some("jitgate"));
    let active = server
        .client
        .list(&ListQuery {
            active: Some(true),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert!(active.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn unreachable_server_is_reported_as_such() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = AdminClient::from_settings(&AdminSettings {
        listen: addr,
        token: Secret::new(TOKEN),
    })
    .unwrap();
    let err = client.list(&ListQuery::default()).await.unwrap_err();
    assert!(matches!(err, Error::AdminUnreachable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("is `jitgate serve` running?"),
        "{err}"
    );
}

// ---- the `jitgate` binary ----------------------------------------------------------

fn jitgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jitgate"));
    cmd.env_remove("JITGATE_CONFIG");
    cmd
}

const VERIFIER: &str = "SCRAM-SHA-256$4096:pgLk2ty//ojYzgNkOmbvrQ==$oUjxOBa69Yw/eqhzhV2aaKAzCtnx+qbxqhETFLYnktQ=:mPZ+HtNQVJQn5NM3y9Z22zIthEDp//7rjjLBC9WJdQw=";

/// A config whose admin section points at `admin`.
fn cli_config(dir: &std::path::Path, admin: SocketAddr) -> PathBuf {
    let path = dir.join("cli.yaml");
    std::fs::write(
        &path,
        format!(
            r#"listen: 127.0.0.1:1
identities:
  alice: {{ scram_verifier: "{VERIFIER}" }}
targets:
  prod:
    host: 127.0.0.1
    tls: {{ mode: disable }}
    roles:
      readonly: {{ user: app_ro, password_env: CLI_TEST_UNSET_PASSWORD }}
store: {{ sqlite: grants.db }}
audit: {{ path: audit.jsonl }}
admin: {{ listen: "{admin}", token_env: CLI_TEST_TOKEN }}
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn hash_password_from_stdin_prints_a_parseable_verifier() {
    use std::io::Write;
    let mut child = jitgate()
        .args(["hash-password", "--identity", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery staple\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let first = stdout.lines().next().unwrap();
    assert!(first.starts_with("SCRAM-SHA-256$"), "{stdout}");
    ScramVerifier::parse(first).expect("the printed verifier parses");
    assert!(
        stdout.contains(&format!("  alice:\n    scram_verifier: \"{first}\"")),
        "{stdout}"
    );
}

#[test]
fn check_config_names_the_bad_field_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = cli_config(dir.path(), "127.0.0.1:6433".parse().unwrap());
    let out = jitgate()
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env("CLI_TEST_TOKEN", TOKEN)
        .env_remove("CLI_TEST_UNSET_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains("targets.prod.roles.readonly.password_env: environment variable CLI_TEST_UNSET_PASSWORD is not set"),
        "{stderr}"
    );

    // With the variable set, the summary lists what is configured (and no secret).
    let out = jitgate()
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env("CLI_TEST_TOKEN", TOKEN)
        .env("CLI_TEST_UNSET_PASSWORD", "pw-secret-value")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("role readonly → user app_ro"), "{stdout}");
    assert!(
        !stdout.contains("pw-secret-value") && !stdout.contains(TOKEN),
        "{stdout}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = jitgate()
        .args([
            "grant",
            "--identity",
            "alice",
            "--target",
            "prod",
            "--role",
            "ro",
        ])
        .args(["--for", "soon", "--reason", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid duration"));
}

/// grant → grants → revoke through the binary against a live API server. Needs only the
/// admin section: the role's password env var is unset.
#[tokio::test]
async fn cli_grant_grants_revoke_against_live_server() {
    let server = Server::start().await;
    let config = cli_config(server.dir.path(), server.addr);
    let run = |args: Vec<String>| {
        let config = config.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                jitgate()
                    .arg("--config")
                    .arg(&config)
                    .args(args)
                    .env("CLI_TEST_TOKEN", TOKEN)
                    .env_remove("CLI_TEST_UNSET_PASSWORD")
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let args = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();

    let mut grant_args =
        args("grant --identity alice --target prod --role readonly --for 30m --reason");
    grant_args.push("CHG-7 schema check".into());
    let out = run(grant_args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: Uuid = stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("grant "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(stdout.contains("expires "), "{stdout}");
    let grant = server.client.get(id).await.unwrap();
    assert!(
        stdout.contains(&grant.grant.expires_at.to_string()),
        "{stdout}"
    );
    assert_eq!(grant.grant.reason, "CHG-7 schema check");

    let out = run(args("grants")).await;
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success());
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains(&id.to_string()) && table.contains("approved"),
        "{table}"
    );

    let out = run(args("grants --json")).await;
    let listed: Vec<api::GrantView> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].grant.id, id);

    let out = run(args(&format!("revoke {id} --reason done"))).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("revoked grant {id}; 0 live sessions dropped")
    );

    // Ended grants are hidden by default, shown with --all.
    let out = run(args("grants")).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "no current grants"
    );
    let out = run(args("grants --all")).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));

    // A refused request: exit 1 with the server's explanation.
    let missing = Uuid::now_v7();
    let out = run(args(&format!("revoke {missing}"))).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error:") && stderr.contains(&format!("no grant with id {missing}")),
        "{stderr}"
    );

    let out = run(args("sessions")).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "no live sessions"
    );

    // audit replay/tail read the log named by the config.
    let out = run(args("audit tail")).await;
    let tail = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        tail.contains("grant_issued") && tail.contains("grant_revoked"),
        "{tail}"
    );
    let out = run(args(&format!("audit replay --session {}", Uuid::now_v7()))).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no events of session"));
    server.stop().await;
}
