//! `jitgate demo`: a throwaway PostgreSQL, a config, a running proxy, a grant, and a
//! psql line to paste — the whole product in one command.
//!
//! Everything lives in a state directory (a temp dir removed at exit, or `--dir`, kept
//! and reused): `jitgate.yaml`, `secrets/` (the upstream admin role's password, admin
//! token, the two identities' passwords, the audit signing key pair), `grants.db`,
//! `audit.jsonl` with its signed `audit.checkpoints.jsonl`, and the cluster's `pgdata/`.
//! The signing key makes the demo's log show what `jitgate audit verify` catches: edits,
//! deletions, reordering and a cut tail.
//!
//! Two identities: `alice` (a DBA who asks for access; she gets a ready grant so the psql
//! line works at once) and `bob` (in group `dbas`, who approves). The policy has one rule,
//! `demo-write`: alice may request `readwrite` on `demo` for up to 2h with a reason, and
//! one approval from `dbas` is needed; break-glass for 15 minutes, reviewed by `dbas`.
//!
//! The target uses per-grant roles (`provisioning: ephemeral`): each grant's sessions
//! log in as a role of its own (`jit_alice_<grant id>`, member of `demo_rw`), which is
//! what `pg_stat_activity` shows, and which is dropped when the grant ends.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jitgate_audit::{Event, EventBody};
use jitgate_policy::{IssueRequest, SignedDuration};
use jitgate_proxy::auth::ScramVerifier;
use rand::distributions::{Alphanumeric, DistString};

use crate::config;
use crate::error::Error;
use crate::serve;
use jitgate_testkit::{PgCluster, PgClusterOptions};

/// What `jitgate demo` was asked for on the command line.
#[derive(Debug, Clone)]
pub struct DemoArgs {
    /// Where the demo proxy listens.
    pub listen: SocketAddr,
    /// How long the demo grant lasts.
    pub grant_for: Duration,
    /// Directory for the demo's files (default: a temporary one, removed at exit).
    pub dir: Option<PathBuf>,
}

/// The demo's names, used in the config and the printed tour.
pub const IDENTITY: &str = "alice";
/// The demo's approver.
pub const APPROVER: &str = "bob";
/// The demo's approval rule.
pub const RULE: &str = "demo-write";
pub const TARGET: &str = "demo";
pub const ROLE: &str = "readwrite";
const UPSTREAM_USER: &str = "demo_rw";
/// The audit signing key in `secrets/` (made by [`signing_key`]).
const SIGNING_KEY: &str = "audit-signing.key";
/// The role that creates and drops the per-grant roles.
const ADMIN_USER: &str = "jitgate_admin";
const DATABASE: &str = "demo";

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

fn random_secret() -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
}

/// Reads a secret kept from an earlier run in the same `--dir`, or makes and stores one.
fn secret_file(path: &Path) -> Result<String, Error> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim().to_owned();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let value = random_secret();
    write_private(path, &value)?;
    Ok(value)
}

fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .map_err(io(format!("writing {}", path.display())))?;
    file.write_all(contents.as_bytes())
        .map_err(io(format!("writing {}", path.display())))
}

fn free_port() -> Result<u16, Error> {
    let listener = StdListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io("finding a free port"))?
        .port();
    Ok(port)
}

/// Makes the audit signing key pair in `secrets` unless an earlier run in the same
/// `--dir` did; returns whether it is new.
fn signing_key(secrets: &Path) -> Result<bool, Error> {
    if secrets.join(SIGNING_KEY).exists() {
        return Ok(false);
    }
    jitgate_audit::write_key_pair(secrets)?;
    Ok(true)
}

/// Creates the granted role (NOLOGIN: sessions log in as per-grant roles that are its
/// members), the admin role that creates those (CREATEROLE, and ADMIN on the granted
/// role, as PostgreSQL 16+ requires), and the database, if they are not there yet.
fn prepare_database(cluster: &PgCluster, admin_password: &str) -> Result<(), Error> {
    let exists = |role: &str| -> Result<bool, Error> {
        let sql = format!("SELECT 1 FROM pg_roles WHERE rolname = '{role}'");
        Ok(!cluster.psql("postgres", &sql)?.is_empty())
    };
    if exists(UPSTREAM_USER)? {
        cluster.psql("postgres", &format!("ALTER ROLE {UPSTREAM_USER} NOLOGIN"))?;
    } else {
        cluster.psql("postgres", &format!("CREATE ROLE {UPSTREAM_USER} NOLOGIN"))?;
    }
    if exists(ADMIN_USER)? {
        // Keep the role's password in step with the secret file.
        cluster.psql(
            "postgres",
            &format!(
                "SET password_encryption = 'scram-sha-256'; ALTER ROLE {ADMIN_USER} PASSWORD '{}'",
                admin_password.replace('\'', "''")
            ),
        )?;
    } else {
        cluster.create_role_with(ADMIN_USER, admin_password, "CREATEROLE")?;
    }
    cluster.psql(
        "postgres",
        &format!("GRANT {UPSTREAM_USER} TO {ADMIN_USER} WITH ADMIN OPTION"),
    )?;
    let db = cluster.psql(
        "postgres",
        &format!("SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"),
    )?;
    if db.is_empty() {
        cluster.create_database(DATABASE, UPSTREAM_USER)?;
    }
    Ok(())
}

/// The demo's config file text.
fn config_yaml(
    args: &DemoArgs,
    cluster: &PgCluster,
    verifiers: (&str, &str),
    admin_port: u16,
) -> String {
    let (verifier, approver_verifier) = verifiers;
    format!(
        "# Written by `jitgate demo`. See examples/ for a commented configuration.\n\
         listen: {listen}\n\
         login_timeout: 30s\n\
         drain_timeout: 5s\n\
         identities:\n  {IDENTITY}:\n    scram_verifier: \"{verifier}\"\n  {APPROVER}:\n    scram_verifier: \"{approver_verifier}\"\n\
         targets:\n  {TARGET}:\n    host: 127.0.0.1\n    port: {pg_port}\n    database: {DATABASE}\n    tls: {{ mode: disable }}\n    provisioning: ephemeral\n    admin:\n      user: {ADMIN_USER}\n      password_file: secrets/{ADMIN_USER}.password\n    roles:\n      {ROLE}:\n        user: {UPSTREAM_USER}\n\
         store:\n  sqlite: grants.db\n\
         audit:\n  path: audit.jsonl\n  durability: write\n  signing_key_file: secrets/{SIGNING_KEY}\n\
         admin:\n  listen: 127.0.0.1:{admin_port}\n  token_file: secrets/admin.token\n\
         policy:\n  groups:\n    dbas: [{APPROVER}]\n  rules:\n    - name: {RULE}\n      requesters: {{ identities: [{IDENTITY}] }}\n      targets: [{TARGET}]\n      roles: [{ROLE}]\n      max_duration: 2h\n      reason: required\n      approvals: {{ count: 1, from: [dbas] }}\n      pending_timeout: 30m\n      break_glass: {{ max_duration: 15m, review_by: [dbas] }}\n\
         notifications:\n  expiring_soon: 2m\n",
        listen = args.listen,
        pg_port = cluster.port(),
    )
}

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> Result<(), Error> {
    let temp;
    let state_dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
            std::fs::canonicalize(dir).map_err(io(format!("resolving {}", dir.display())))?
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("jitgate-demo-")
                .tempdir()
                .map_err(io("creating the demo's temp dir"))?;
            temp.path().to_path_buf()
        }
    };
    let secrets = state_dir.join("secrets");
    std::fs::create_dir_all(&secrets).map_err(io("creating the secrets dir"))?;
    let admin_password = secret_file(&secrets.join(format!("{ADMIN_USER}.password")))?;
    let identity_password = secret_file(&secrets.join(format!("{IDENTITY}.password")))?;
    let approver_password = secret_file(&secrets.join(format!("{APPROVER}.password")))?;
    secret_file(&secrets.join("admin.token"))?;
    let new_key = signing_key(&secrets)?;

    eprintln!("jitgate demo: starting a throwaway PostgreSQL…");
    let pg_dir = args.dir.as_ref().map(|_| state_dir.clone());
    let mut cluster = tokio::task::spawn_blocking(move || {
        // A throwaway cluster trades durability for speed; one kept in --dir does not.
        let fast = pg_dir.is_none();
        PgCluster::start(PgClusterOptions {
            dir: pg_dir,
            port: None,
            fast,
            ..PgClusterOptions::default()
        })
    })
    .await
    .map_err(|e| Error::Io {
        context: "starting PostgreSQL".into(),
        source: std::io::Error::other(e.to_string()),
    })??;
    prepare_database(&cluster, &admin_password)?;

    let verifier = ScramVerifier::from_password(&identity_password).to_string();
    let approver_verifier = ScramVerifier::from_password(&approver_password).to_string();
    let config_path = state_dir.join("jitgate.yaml");
    let yaml = config_yaml(
        &args,
        &cluster,
        (&verifier, &approver_verifier),
        free_port()?,
    );
    write_private(&config_path, &yaml)?;
    let mut config = config::load(&config_path)?;
    let audit_path = config.audit.path.clone();
    if new_key && std::fs::metadata(&audit_path).is_ok_and(|m| m.len() > 0) {
        // A --dir from a jitgate that did not sign checkpoints yet: its log has none, which
        // the writer refuses unless acknowledged. Say so in the log and go on.
        config.audit.acknowledge_cut = Some(jitgate_audit::CutAcknowledgement {
            reason: "jitgate demo: checkpoint signing enabled for an existing demo log".into(),
            by: "jitgate demo".into(),
        });
    }

    let server = serve::start(config).await?;
    let grant = server
        .engine
        .issue(IssueRequest {
            identity: IDENTITY.into(),
            target: TARGET.into(),
            role: ROLE.into(),
            duration: SignedDuration::try_from(args.grant_for).unwrap_or(SignedDuration::ZERO),
            not_before: None,
            reason: "jitgate demo".into(),
            issued_by: "jitgate demo".into(),
        })
        .await;
    let grant = match grant {
        Ok(g) => g,
        Err(e) => {
            let _ = server.stop().await;
            return Err(e.into());
        }
    };
    let issued = Event::new(EventBody::GrantIssued {
        not_before: grant.not_before,
        expires_at: grant.expires_at,
        reason: grant.reason.clone(),
        issued_by: grant.issued_by.clone(),
    })
    .with_identity(IDENTITY)
    .with_target(TARGET)
    .with_role(ROLE)
    .with_grant(grant.id);
    server.audit.write(issued).await?;

    // Listen for Ctrl-C/SIGTERM before the tour is printed: whoever reads it may stop the
    // demo at once, and a signal before the listener exists would kill it uncleanly.
    let stop = stop_signal();
    let tour = tour(
        &server,
        &cluster,
        &config_path,
        &audit_path,
        (&identity_password, &approver_password),
        &grant,
    );
    {
        // The demo keeps running (its PostgreSQL must be stopped cleanly) even when
        // nobody reads its stdout any more: a closed pipe is not a reason to exit.
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{tour}").and_then(|()| out.flush());
    }

    stop.await;
    eprintln!("\njitgate demo: stopping…");
    let stopped = server.stop().await;
    let cluster_stop = tokio::task::spawn_blocking(move || cluster.stop()).await;
    if cluster_stop.is_err() {
        eprintln!("jitgate demo: PostgreSQL did not stop cleanly");
    }
    if args.dir.is_some() {
        eprintln!("jitgate demo: state kept in {}", state_dir.display());
    }
    stopped
}

/// Resolves at SIGINT or SIGTERM; both are listened for from the moment it returns.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            match (interrupt, terminate) {
                (Some(mut i), Some(mut t)) => {
                    tokio::select! {
                        _ = i.recv() => {}
                        _ = t.recv() => {}
                    }
                }
                _ => serve::shutdown_signal().await,
            }
        }
    }
    #[cfg(not(unix))]
    serve::shutdown_signal()
}

fn tour(
    server: &serve::Server,
    cluster: &PgCluster,
    config_path: &Path,
    audit_path: &Path,
    passwords: (&str, &str),
    grant: &jitgate_policy::Grant,
) -> String {
    let (password, approver_password) = passwords;
    let cfg = config_path.display();
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
        .unwrap_or_else(|| "jitgate".into());
    let jg = format!("{exe} --config {cfg}");
    let proxy = server.proxy_addr;
    let mut s = String::new();
    let _ = writeln!(s, "jitgate demo is running. Connect through the proxy:\n");
    let _ = writeln!(
        s,
        "psql \"postgresql://{IDENTITY}:{password}@{}:{}/{TARGET}?sslmode=disable\"\n",
        proxy.ip(),
        proxy.port()
    );
    let _ = writeln!(
        s,
        "upstream: {}  (the throwaway database, as its superuser — pg_stat_activity shows alice's session as jit_alice_<grant id>, a role that lives only as long as the grant)",
        cluster.admin_url(DATABASE)
    );
    let _ = writeln!(
        s,
        "grant:    {} for {IDENTITY} on {TARGET} as {ROLE}, expires at {}",
        grant.id, grant.expires_at
    );
    let _ = writeln!(s, "audit:    {}", audit_path.display());
    let _ = writeln!(s, "config:   {cfg}\n");
    let _ = writeln!(s, "Try next (in another terminal):");
    let _ = writeln!(
        s,
        "  {jg} grants                      # grants and time left"
    );
    let _ = writeln!(s, "  {jg} sessions                    # live sessions");
    let _ = writeln!(
        s,
        "  {jg} audit tail -f               # every query, as it runs"
    );
    let _ = writeln!(
        s,
        "  {jg} revoke {}   # drops the psql session at once",
        grant.id
    );
    let _ = writeln!(
        s,
        "  {jg} grant --identity {IDENTITY} --target {TARGET} --role {ROLE} --for 2m --reason \"try expiry\""
    );
    let _ = writeln!(
        s,
        "  {jg} audit replay --session <session_id from audit tail>"
    );
    let _ = writeln!(
        s,
        "  {jg} audit verify                # hash chain + signed checkpoints: edits, deletions, a cut tail"
    );
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let server_url = format!("http://{}", server.admin_addr);
    let as_alice = format!(
        "JITGATE_CREDENTIALS={}/alice.credentials {exe}",
        dir.display()
    );
    let as_bob = format!(
        "JITGATE_CREDENTIALS={}/bob.credentials {exe}",
        dir.display()
    );
    let _ = writeln!(
        s,
        "\nThe request/approval workflow ({IDENTITY} asks, {APPROVER} approves; rule {RULE}):"
    );
    let _ = writeln!(
        s,
        "  echo '{password}' | {as_alice} login --server {server_url} --identity {IDENTITY}"
    );
    let _ = writeln!(
        s,
        "  echo '{approver_password}' | {as_bob} login --server {server_url} --identity {APPROVER}"
    );
    let _ = writeln!(
        s,
        "  {as_alice} request --target {TARGET} --role {ROLE} --for 30m --reason \"INC-1 fix a row\""
    );
    let _ = writeln!(
        s,
        "  {as_bob} requests --pending           # what waits for bob"
    );
    let _ = writeln!(s, "  {as_bob} approve <request id> --comment \"ok\"");
    let _ = writeln!(
        s,
        "  {as_alice} extend <grant id> --for 15m --reason \"need more time\"   # bob approves again; psql keeps running"
    );
    let _ = writeln!(
        s,
        "  {jg} policy explain --identity {IDENTITY} --target {TARGET} --role {ROLE}"
    );
    let _ = writeln!(s, "\nCtrl-C stops the proxy and PostgreSQL.");
    s
}
