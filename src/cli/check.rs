//! `jitgate check-config`: load the whole config (every secret must resolve) and summarise
//! it, so an operator sees what `serve` would run with — never any secret. For each
//! target with `provisioning: ephemeral` it then logs in with the admin credential and
//! checks that it can create per-grant roles (`jitgate_proxy::provision::preflight`);
//! any problem, an unreachable server included, fails the check.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Result};
use jitgate::config::{self, Config, StoreSettings};
use jitgate_audit::Durability;
use jitgate_proxy::provision::preflight;
use jitgate_proxy::settings::{Provisioning, UpstreamTls};

/// `jitgate check-config`.
pub async fn run(config_path: &Path) -> Result<()> {
    let config = config::load(config_path)?;
    jitgate::out!("{}", summary(&config));
    let reports = preflight::check_all(config.proxy.targets.values()).await;
    let mut problems = 0;
    for report in &reports {
        if report.ok() {
            jitgate::outln!("{report}");
        } else {
            problems += report.problems.len();
            eprintln!("{report}");
        }
    }
    if problems > 0 {
        bail!(
            "{problems} problem(s) with the admin credential of ephemeral targets (see above); \
             jitgate would start, but logins to these targets would fail"
        );
    }
    Ok(())
}

/// The human-readable summary printed on success.
pub fn summary(config: &Config) -> String {
    let p = &config.proxy;
    let mut out = String::new();
    let _ = writeln!(out, "config {} is valid", config.path.display());
    let _ = writeln!(
        out,
        "listen:     {} (client TLS: {})",
        p.listen,
        match (p.tls.is_some(), p.tls_required) {
            (true, true) => "required",
            (true, false) => "on",
            (false, _) => "off",
        }
    );
    let mut identities: Vec<&str> = p.identities.keys().map(String::as_str).collect();
    identities.sort_unstable();
    let _ = writeln!(out, "identities: {}", identities.join(", "));
    let _ = writeln!(out, "targets:");
    let mut targets: Vec<_> = p.targets.values().collect();
    targets.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    for t in targets {
        let tls = match &t.tls {
            UpstreamTls::Disable => "tls disabled".to_owned(),
            UpstreamTls::VerifyFull { server_name, .. } => format!("tls verify-full {server_name}"),
        };
        let _ = writeln!(
            out,
            "  {}: {}:{} database {} ({tls})",
            t.name, t.host, t.port, t.database
        );
        if let Provisioning::Ephemeral(eph) = &t.provisioning {
            let _ = writeln!(
                out,
                "    provisioning ephemeral: per-grant roles, created and dropped by {}",
                eph.admin.user
            );
        }
        let mut roles: Vec<_> = t.roles.iter().collect();
        roles.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (name, creds) in roles {
            let _ = writeln!(out, "    role {name} → user {}", creds.user);
        }
    }
    match &config.store.backend {
        StoreSettings::Sqlite(path) => {
            let _ = writeln!(out, "store:      sqlite {}", path.display());
        }
        StoreSettings::Postgres { pool_size, tls, .. } => {
            let tls = match tls {
                jitgate_policy::StoreTls::Disable => "no TLS",
                jitgate_policy::StoreTls::VerifyFull(_) => "TLS verify-full",
            };
            let _ = writeln!(
                out,
                "store:      postgres (shared by replicas; pool of {pool_size}; {tls})"
            );
        }
    }
    let rules = &config.rules;
    if rules.is_empty() {
        let _ = writeln!(
            out,
            "policy:     no approval rules (only administrators issue grants)"
        );
    } else {
        let _ = writeln!(
            out,
            "policy:     {} rule(s): {}",
            rules.len(),
            rules.names().join(", ")
        );
    }
    let hooks: Vec<&str> = config
        .notifications
        .webhooks
        .iter()
        .map(|w| w.name.as_str())
        .collect();
    let _ = writeln!(
        out,
        "webhooks:   {}",
        if hooks.is_empty() {
            "none".to_owned()
        } else {
            hooks.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "audit:      {} (durability: {})",
        config.audit.path.display(),
        match config.audit.durability {
            Durability::Write => "write",
            Durability::Fsync => "fsync",
        }
    );
    let scheme = if config.admin_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let _ = writeln!(out, "admin:      {scheme}://{}", config.admin.listen);
    let _ = writeln!(
        out,
        "limits:     login timeout {}, drain timeout {}, max message {} bytes",
        humantime::format_duration(p.login_timeout),
        humantime::format_duration(p.drain_timeout),
        p.max_message_len
    );
    out
}
