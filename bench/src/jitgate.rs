//! jitgate as the benchmark runs it: `P` is the real `jitgate serve` binary (audit on,
//! default durability), `P0` the `p0-proxy` binary (audit off) on an identical config.
//! Both are separate processes, like PgBouncer and the relay. `Pe` is `jitgate serve`
//! with `provisioning: ephemeral` (a per-grant upstream role made at a grant's first
//! login by the admin role in [`Ephemeral`]).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use jitgate::api::{AdminClient, IssueBody};
use jitgate_proxy::auth::ScramVerifier;
use jitgate_proxy::settings::Secret;

use crate::procs::{self, Proc};
use crate::tls::CertFiles;

/// The target name clients put in `dbname`, and the role grants name.
pub const TARGET: &str = "bench";
pub const ROLE: &str = "rw";

/// One identity in the config.
pub struct Identity {
    pub name: String,
    pub verifier: String,
}

impl Identity {
    /// A fresh verifier (random salt, 4096 iterations, like Postgres's default).
    pub fn new(name: &str, password: &str) -> Identity {
        Identity {
            name: name.to_owned(),
            verifier: ScramVerifier::from_password(password).to_string(),
        }
    }
}

/// What a jitgate config needs from the rest of the run.
pub struct JitgateSpec<'a> {
    pub pg_port: u16,
    pub database: &'a str,
    pub upstream_user: &'a str,
    pub upstream_password: &'a str,
    pub identities: &'a [Identity],
    pub certs: &'a CertFiles,
    /// `Some`: the target uses `provisioning: ephemeral` with this admin role, and
    /// sessions log in as per-grant roles that are members of `upstream_user`.
    pub ephemeral: Option<Ephemeral<'a>>,
}

/// The admin role (CREATEROLE, ADMIN on the granted role) of an ephemeral target.
#[derive(Clone, Copy)]
pub struct Ephemeral<'a> {
    pub admin_user: &'a str,
    pub admin_password: &'a str,
}

/// A running jitgate process and the way to its admin API.
pub struct Jitgate {
    pub proc: Proc,
    pub port: u16,
    pub admin: AdminClient,
}

/// Writes `dir/jitgate.yaml` (+ secrets) and starts `program` (`jitgate` or `p0-proxy`)
/// with it; waits until both the proxy and the admin API answer. `runtime` is the
/// config's `runtime:` section as YAML (`None`: the defaults).
pub async fn start(
    label: &str,
    program: &Path,
    dir: &Path,
    spec: &JitgateSpec<'_>,
    runtime: Option<&str>,
) -> Result<Jitgate> {
    fs::create_dir_all(dir)?;
    let port = procs::free_port()?;
    let admin_port = procs::free_port()?;
    let token = format!("bench-admin-token-{}", rand::random::<u64>());
    fs::write(dir.join("admin.token"), &token)?;
    fs::write(dir.join("upstream.password"), spec.upstream_password)?;
    // The role's source: its password (shared), or the admin role that makes per-grant
    // roles (ephemeral).
    let role_source = match spec.ephemeral {
        None => {
            format!(
                "    roles:\n      {ROLE}: {{ user: {}, password_file: upstream.password }}\n",
                spec.upstream_user
            )
        }
        Some(e) => {
            fs::write(dir.join("admin.password"), e.admin_password)?;
            format!(
                "    provisioning: ephemeral\n    admin: {{ user: {}, password_file: admin.password }}\n    \
                 roles:\n      {ROLE}: {{ user: {} }}\n",
                e.admin_user, spec.upstream_user
            )
        }
    };
    let mut yaml = format!(
        "# Written by jitgate-bench ({label}).\n\
         listen: 127.0.0.1:{port}\n\
         tls: {{ cert_file: {cert}, key_file: {key} }}\n\
         login_timeout: 60s\n\
         drain_timeout: 1s\n\
         identities:\n",
        cert = spec.certs.cert.display(),
        key = spec.certs.key.display(),
    );
    for id in spec.identities {
        let _ = writeln!(
            yaml,
            "  {}: {{ scram_verifier: \"{}\" }}",
            id.name, id.verifier
        );
    }
    let _ = write!(
        yaml,
        "targets:\n  {TARGET}:\n    host: 127.0.0.1\n    port: {pg_port}\n    database: {db}\n    \
         tls: {{ mode: disable }}\n{role_source}\
         store: {{ sqlite: grants.db }}\n\
         audit: {{ path: audit.jsonl }}\n\
         admin: {{ listen: 127.0.0.1:{admin_port}, token_file: admin.token }}\n\
         # Every bench client comes from 127.0.0.1 (the enforcement run opens 1000 sessions).\n\
         client_limits: {{ max_connections: 100000, max_connections_per_ip: 100000 }}\n",
        pg_port = spec.pg_port,
        db = spec.database,
    );
    if let Some(runtime) = runtime {
        let _ = writeln!(yaml, "runtime: {runtime}");
    }
    let config = dir.join("jitgate.yaml");
    fs::write(&config, yaml)?;
    let mut cmd = Command::new(program);
    if program.file_name().is_some_and(|n| n == "jitgate") {
        cmd.arg("--config").arg(&config).arg("serve");
    } else {
        cmd.arg("--config").arg(&config);
    }
    cmd.current_dir(dir).env_remove("RUST_LOG");
    let log = dir.join("jitgate.log");
    let mut proc = Proc::spawn(label, cmd, &log)?;
    proc.wait_listening(procs::loopback(port), &log)?;
    proc.wait_listening(procs::loopback(admin_port), &log)?;
    let admin = AdminClient::new(format!("http://127.0.0.1:{admin_port}"), Secret::new(token))?;
    admin.health().await.context("admin API health")?;
    Ok(Jitgate { proc, port, admin })
}

/// Issues a grant starting at `not_before` (now if `None`) lasting `duration_ms`; returns
/// its `expires_at`.
pub async fn grant(
    admin: &AdminClient,
    identity: &str,
    not_before: Option<jiff::Timestamp>,
    duration_ms: i64,
) -> Result<jiff::Timestamp> {
    let view = admin
        .issue(&IssueBody {
            identity: identity.to_owned(),
            target: TARGET.to_owned(),
            role: ROLE.to_owned(),
            duration: format!("{duration_ms}ms"),
            reason: "jitgate-bench".to_owned(),
            not_before: not_before.map(|t| t.to_string()),
            issued_by: Some("jitgate-bench".to_owned()),
        })
        .await
        .with_context(|| format!("issuing a grant for {identity}"))?;
    Ok(view.grant.expires_at)
}
