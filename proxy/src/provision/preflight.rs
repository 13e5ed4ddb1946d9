//! Can a target's admin credential provision? Asked by `jitgate check-config` (a failure
//! fails the check) and at `jitgate serve` startup (a failure is a warning: a database
//! that is down must not keep jitgate from starting).
//!
//! The check logs in exactly as the provisioner does ([`super::admin::connect`]: the
//! target's TLS, `auth_methods` and SCRAM iteration cap), then reads the catalogs:
//!
//! - the admin role has CREATEROLE (or is a superuser), or it cannot create roles;
//! - each upstream role the target's grants name (`targets.<t>.roles.*.user`) exists and
//!   is not a superuser (jitgate never makes a per-grant role a superuser's member);
//! - on PostgreSQL 16 and later the admin holds ADMIN OPTION on each of them
//!   (`pg_has_role(…, 'USAGE WITH ADMIN OPTION')`), which `CREATE ROLE … IN ROLE` needs
//!   there; up to 15 CREATEROLE is enough for any non-superuser role.
//!
//! Each problem is one line naming the target, the role and the statement that fixes it.
//! Nothing is changed on the server, and no message contains a password.

use std::collections::BTreeMap;
use std::fmt;

use futures_util::future::join_all;
use tokio_postgres::Client;

use super::admin;
use super::names::ident;
use crate::settings::{EphemeralSettings, Provisioning, TargetSettings};

/// The first server version (`server_version_num`) on which granting a role needs ADMIN
/// OPTION on it rather than CREATEROLE.
const ADMIN_OPTION_FROM: i32 = 160_000;

/// What the check of one target found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    /// The target's name.
    pub target: String,
    /// The admin role's name.
    pub admin: String,
    /// `server_version_num`, when the server was reached.
    pub server_version: Option<i32>,
    /// One line per problem; empty: the admin role can provision every granted role.
    pub problems: Vec<String>,
}

impl Preflight {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for Preflight {
    /// The success line, or the problems one per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok() {
            let version = self
                .server_version
                .map(|v| format!(" (PostgreSQL {}.{})", v / 10_000, v % 10_000))
                .unwrap_or_default();
            return write!(
                f,
                "target \"{}\": admin role \"{}\" can create per-grant roles{version}",
                self.target, self.admin
            );
        }
        let mut first = true;
        for p in &self.problems {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Checks every target with `provisioning: ephemeral`, all at once (an unreachable one
/// costs its connect timeout once, not per target); reports in name order.
pub async fn check_all<'a>(
    targets: impl IntoIterator<Item = &'a TargetSettings>,
) -> Vec<Preflight> {
    let mut sorted: Vec<&TargetSettings> = targets.into_iter().collect();
    sorted.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    join_all(
        sorted
            .into_iter()
            .filter_map(|target| match &target.provisioning {
                Provisioning::Ephemeral(eph) => Some(check(target, eph)),
                Provisioning::Shared => None,
            }),
    )
    .await
}

/// Checks one target's admin credential (see the module doc).
pub async fn check(target: &TargetSettings, eph: &EphemeralSettings) -> Preflight {
    let mut report = Preflight {
        target: target.name.clone(),
        admin: eph.admin.user.clone(),
        server_version: None,
        problems: Vec::new(),
    };
    let client = match admin::connect(target, &eph.admin, "jitgate check").await {
        Ok(client) => client,
        Err(e) => {
            report.problems.push(format!(
                "target \"{}\": cannot log in as admin role \"{}\" at {}:{} database \"{}\": \
                 {e}; fix the server address, targets.{}.admin's credential, or the \
                 server's pg_hba.conf",
                target.name, eph.admin.user, target.host, target.port, target.database, target.name
            ));
            return report;
        }
    };
    if let Err(e) = inspect(&client, target, &mut report).await {
        report.problems.push(format!(
            "target \"{}\": could not read the catalogs as admin role \"{}\": {e}",
            target.name, eph.admin.user
        ));
    }
    report
}

/// The catalog checks, on an open admin connection.
async fn inspect(
    client: &Client,
    target: &TargetSettings,
    report: &mut Preflight,
) -> Result<(), tokio_postgres::Error> {
    let me = client
        .query_one(
            "SELECT pg_catalog.current_setting('server_version_num')::int, r.rolsuper, \
             r.rolcreaterole FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER",
            &[],
        )
        .await?;
    let version: i32 = me.get(0);
    let (superuser, createrole): (bool, bool) = (me.get(1), me.get(2));
    report.server_version = Some(version);
    let admin = report.admin.clone();
    let t = &target.name;
    if !superuser && !createrole {
        report.problems.push(format!(
            "target \"{t}\": admin role \"{admin}\" has neither CREATEROLE nor SUPERUSER, so it \
             cannot create per-grant roles; fix: ALTER ROLE {} CREATEROLE",
            ident(&admin)
        ));
    }
    // Upstream role → the grant role names (as grants spell them) that use it.
    let mut granted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, creds) in &target.roles {
        granted.entry(creds.user.as_str()).or_default().push(name);
    }
    for (role, names) in &mut granted {
        names.sort_unstable();
        let used_by = format!("targets.{t}.roles.{}", names.join("/"));
        let row = client
            .query_opt(
                "SELECT r.rolsuper, pg_catalog.pg_has_role(CURRENT_USER, r.oid, \
                 'USAGE WITH ADMIN OPTION') FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
                &[role],
            )
            .await?;
        let Some(row) = row else {
            report.problems.push(format!(
                "target \"{t}\": role \"{role}\" ({used_by}) does not exist on the server, so \
                 no per-grant role can be made its member; fix: CREATE ROLE {} NOLOGIN (with \
                 the privileges grants should give), or correct {used_by}.user",
                ident(role)
            ));
            continue;
        };
        let (role_super, admin_option): (bool, bool) = (row.get(0), row.get(1));
        if role_super {
            report.problems.push(format!(
                "target \"{t}\": role \"{role}\" ({used_by}) is a superuser; jitgate does not \
                 make per-grant roles members of a superuser role; fix: grant a role without \
                 SUPERUSER (ALTER ROLE {} NOSUPERUSER, or correct {used_by}.user)",
                ident(role)
            ));
        } else if version >= ADMIN_OPTION_FROM && !superuser && !admin_option {
            report.problems.push(format!(
                "target \"{t}\": admin role \"{admin}\" cannot grant role \"{role}\" \
                 ({used_by}): PostgreSQL 16 and later need ADMIN OPTION on it; fix: GRANT {} \
                 TO {} WITH ADMIN OPTION, INHERIT FALSE, SET FALSE",
                ident(role),
                ident(&admin)
            ));
        }
    }
    Ok(())
}
