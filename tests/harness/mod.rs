//! End-to-end harness: a jitgate server started in-process from a real config file,
//! in front of the test binary's shared PostgreSQL cluster, with its own database,
//! upstream role, identities, grant store and audit log per test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use jitgate::config;
use jitgate::serve::{self, Server};
use jitgate_audit::Event;
use jitgate_policy::{Grant, IssueRequest, SignedDuration};
use jitgate_proxy::auth::ScramVerifier;
use jitgate_testkit::PgCluster;

use super::common;

pub mod server_view;

/// Identities every test environment has.
pub const ALICE: &str = "alice";
pub const ALICE_PASSWORD: &str = "alice-secret-pw";
pub const BOB: &str = "bob";
pub const BOB_PASSWORD: &str = "bob-secret-pw";
/// A third identity (an approver in the workflow tests).
pub const CAROL: &str = "carol";
pub const CAROL_PASSWORD: &str = "carol-secret-pw";
/// The role grants name; upstream it is a role owning the test database.
pub const ROLE: &str = "rw";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The error of a connection attempt that must fail (the Ok side has no Debug).
pub fn refused<T>(result: Result<T, tokio_postgres::Error>, what: &str) -> tokio_postgres::Error {
    match result {
        Ok(_) => panic!("expected the connection to be refused: {what}"),
        Err(e) => e,
    }
}

/// Extra configuration for [`Env::start_config`]; every piece is YAML without indent.
#[derive(Default, Clone, Copy)]
pub struct EnvConfig<'a> {
    /// Added to the target's section (e.g. `audit:` redaction).
    pub extra_target: &'a str,
    /// Added to the `audit:` section.
    pub extra_audit: &'a str,
    /// Added at the top level (e.g. `policy:`, `notifications:`).
    pub extra_top: &'a str,
    /// Replaces the `store:` section's body (default `sqlite: grants.db`).
    pub store: Option<&'a str>,
    /// The cluster the target lives on; `None` = the test binary's shared
    /// [`common::cluster`] (e.g. `Some(common::logging_cluster())` for a server log that
    /// records every statement).
    pub cluster: Option<&'static PgCluster>,
}

/// One test's jitgate + database.
pub struct Env {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// Target name = upstream database name.
    pub target: String,
    pub upstream_user: String,
    /// The cluster the target database lives on (see [`EnvConfig::cluster`]).
    pub cluster: &'static PgCluster,
}

/// `yaml` with every line indented by `by` spaces (and ending in a newline).
fn indent(yaml: &str, by: usize) -> String {
    yaml.lines().map(|l| format!("{:by$}{l}\n", "")).collect()
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).expect("write test file");
}

impl Env {
    /// Creates a database and role for `prefix`, writes a config and starts jitgate.
    pub async fn start(prefix: &str) -> Env {
        Env::start_with(prefix, "", "").await
    }

    /// Like [`Env::start`], with extra YAML (unindented, one key per line) added to the
    /// target's section (`extra_target`, e.g. `audit:` redaction rules) and to the
    /// `audit:` section (`extra_audit`, e.g. `max_sql_bytes: 100`).
    pub async fn start_with(prefix: &str, extra_target: &str, extra_audit: &str) -> Env {
        Env::start_config(
            prefix,
            EnvConfig {
                extra_target,
                extra_audit,
                ..EnvConfig::default()
            },
        )
        .await
    }

    /// The most general start: see [`EnvConfig`].
    pub async fn start_config(prefix: &str, cfg: EnvConfig<'_>) -> Env {
        let EnvConfig {
            extra_target,
            extra_audit,
            extra_top,
            store,
            cluster,
        } = cfg;
        let target = common::unique_name(prefix);
        let upstream_user = format!("{target}_rw");
        let upstream_password = format!("pw-{target}");
        {
            let (t, u, p) = (
                target.clone(),
                upstream_user.clone(),
                upstream_password.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let cluster = cluster.unwrap_or_else(common::cluster);
                cluster.create_role(&u, &p).expect("create role");
                cluster.create_database(&t, &u).expect("create database");
            })
            .await
            .expect("prepare database");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        write(&dir.path().join("role.password"), &upstream_password);
        write(&dir.path().join("admin.token"), ADMIN_TOKEN);
        let cluster = cluster.unwrap_or_else(common::cluster);
        let yaml = format!(
            "listen: 127.0.0.1:0\n\
             login_timeout: 10s\n\
             drain_timeout: 2s\n\
             identities:\n  {ALICE}:\n    scram_verifier: \"{alice}\"\n  {BOB}:\n    scram_verifier: \"{bob}\"\n  {CAROL}:\n    scram_verifier: \"{carol}\"\n\
             targets:\n  {target}:\n    host: 127.0.0.1\n    port: {port}\n    database: {target}\n    tls: {{ mode: disable }}\n    roles:\n      {ROLE}:\n        user: {upstream_user}\n        password_file: role.password\n{extra_target}\
             store:\n{store}\
             audit:\n  path: audit.jsonl\n{extra_audit}\
             admin:\n  listen: 127.0.0.1:0\n  token_file: admin.token\n{extra_top}",
            alice = ScramVerifier::from_password(ALICE_PASSWORD),
            bob = ScramVerifier::from_password(BOB_PASSWORD),
            carol = ScramVerifier::from_password(CAROL_PASSWORD),
            port = cluster.port(),
            extra_target = indent(extra_target, 4),
            extra_audit = indent(extra_audit, 2),
            store = indent(store.unwrap_or("sqlite: grants.db"), 2),
        );
        let config_path = dir.path().join("jitgate.yaml");
        write(&config_path, &yaml);
        let mut env = Env {
            server: None,
            dir,
            config_path,
            target,
            upstream_user,
            cluster,
        };
        env.restart().await;
        env
    }

    /// (Re)starts the server from the config file.
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("stop server");
        }
        // The stopped server released the audit log's lock when its writer closed the
        // file, but a child process another test of this binary forks at that moment
        // (psql, pg_ctl) shares the descriptor until it execs, and so holds the lock a
        // little longer: wait that out (only that error, and not for long).
        let mut tries = 0;
        let server = loop {
            let config = config::load(&self.config_path).expect("load config");
            match serve::start(config).await {
                Err(jitgate::Error::Audit(jitgate_audit::AuditError::InUse { .. }))
                    if tries < 100 =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other.expect("start server"),
            }
        };
        self.server = Some(server);
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    pub fn proxy_port(&self) -> u16 {
        self.server().proxy_addr.port()
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.server().admin_addr)
    }

    /// Issues a grant for `identity` on this env's target, lasting `for_`.
    pub async fn grant(&self, identity: &str, for_: Duration) -> Grant {
        self.server()
            .engine
            .issue(IssueRequest {
                identity: identity.into(),
                target: self.target.clone(),
                role: ROLE.into(),
                duration: SignedDuration::try_from(for_).expect("duration"),
                not_before: None,
                reason: "test".into(),
                issued_by: "tests".into(),
            })
            .await
            .expect("issue grant")
    }

    /// Revokes a grant through the admin API (as an administrator would: live sessions
    /// and parked connections go with it); panics unless it succeeds, returns the body.
    pub async fn revoke_via_api(&self, grant_id: uuid::Uuid, reason: &str) -> serde_json::Value {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/grants/{grant_id}/revoke", self.admin_url()))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "reason": reason }))
            .send()
            .await
            .expect("revoke request");
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.expect("revoke response")
    }

    /// tokio-postgres config for connecting through the proxy.
    pub fn client_config(&self, identity: &str, password: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.proxy_port())
            .user(identity)
            .password(password)
            .dbname(&self.target)
            .connect_timeout(Duration::from_secs(10));
        c
    }

    /// Connects as alice through the proxy; the connection task is spawned.
    pub async fn connect(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
        ),
        tokio_postgres::Error,
    > {
        let (client, connection) = self
            .client_config(ALICE, ALICE_PASSWORD)
            .connect(tokio_postgres::NoTls)
            .await?;
        Ok((client, tokio::spawn(connection)))
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// Every event in the audit log so far.
    pub fn audit_events(&self) -> Vec<Event> {
        jitgate_audit::read_events(&self.audit_path())
            .expect("open audit log")
            .map(|e| e.expect("audit line parses"))
            .collect()
    }

    /// Runs a PostgreSQL client program (psql, pgbench) against the proxy as alice, off
    /// the async workers (the proxy runs on the same runtime).
    pub async fn run_client(&self, program: &str, args: &[&str]) -> Output {
        self.run_client_as(program, ALICE, ALICE_PASSWORD, args)
            .await
    }

    /// Like [`Env::run_client`], as any identity and password.
    pub async fn run_client_as(
        &self,
        program: &str,
        identity: &str,
        password: &str,
        args: &[&str],
    ) -> Output {
        let mut command = std::process::Command::new(self.cluster.bin(program));
        command
            .args(args)
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.proxy_port().to_string())
            .env("PGUSER", identity)
            .env("PGPASSWORD", password)
            .env("PGDATABASE", &self.target)
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "10");
        tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("client program task")
            .expect("run client program")
    }

    /// Runs SQL on the target database as the cluster superuser (directly, not proxied).
    pub fn superuser_sql(&self, sql: &str) -> String {
        self.cluster.psql(&self.target, sql).expect("superuser sql")
    }

    /// Rewrites the config's target to `provisioning: ephemeral` with `admin` (its
    /// password written to `admin.password`) instead of the shared role's password;
    /// `extra_target` (YAML lines at the target's indent) and `extra_roles` (at the
    /// roles' indent) are added. Takes effect at the next start or `restart`.
    pub fn make_ephemeral(
        &self,
        admin: &str,
        password: &str,
        extra_target: &str,
        extra_roles: &str,
    ) {
        std::fs::write(self.dir.path().join("admin.password"), password).expect("admin.password");
        let yaml = std::fs::read_to_string(&self.config_path).expect("config");
        let eph = yaml
            .replace("        password_file: role.password\n", "")
            .replace(
                "    roles:\n",
                &format!(
                    "    provisioning: ephemeral\n{extra_target}    admin:\n      user: {admin}\n      password_file: admin.password\n    roles:\n{extra_roles}"
                ),
            );
        assert_ne!(
            yaml, eph,
            "the config's target has no shared role to replace"
        );
        std::fs::write(&self.config_path, eph).expect("config");
    }

    /// Whether a backend with this pid is still in pg_stat_activity (asked directly).
    pub fn backend_alive(&self, pid: i32) -> bool {
        self.superuser_sql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
        )) != "0"
    }

    /// Waits until `f` holds, polling; panics with `what` after `limit`.
    pub async fn eventually(&self, what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !f() {
            if start.elapsed() > limit {
                panic!("timed out after {limit:?} waiting for: {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("stop server");
        }
    }
}
