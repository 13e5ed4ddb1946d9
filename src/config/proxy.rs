//! `identities:` and `targets:` → the proxy's identities and upstream targets (with
//! each target's audit content rules), and the policy engine's catalog of what grants
//! may name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use jitgate_audit::{ContentRules, Redaction};
use jitgate_policy::Catalog;
use jitgate_proxy::auth::ScramVerifier;
use jitgate_proxy::settings::{
    EphemeralSettings, Provisioning, ReuseSettings, RoleChanges, RoleCredentials, Secret,
    TargetAuditSettings, TargetSettings,
};

use super::ctx::Ctx;
use super::raw::{
    ProvisioningMode, RawIdentity, RawRedact, RawRoleChanges, RawTarget, RawTargetAudit,
    RawUpstreamReuse,
};
use super::tls;
use crate::error::ConfigError;

/// Postgres's default port.
const DEFAULT_PORT: u16 = 5432;

const VERIFIER_HELP: &str = "not a SCRAM-SHA-256 verifier (expected \
     SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>; make one with jitgate hash-password)";

/// `identities:` → identity name → verifier.
pub(crate) fn identities(
    ctx: &Ctx,
    raw: &BTreeMap<String, RawIdentity>,
) -> Result<HashMap<String, ScramVerifier>, ConfigError> {
    let mut out = HashMap::with_capacity(raw.len());
    for (name, identity) in raw {
        let field = format!("identities.{name}");
        ctx.name(&field, "identity", name)?;
        let (text, text_field) = match (&identity.scram_verifier, &identity.scram_verifier_file) {
            (Some(v), None) => (v.clone(), format!("{field}.scram_verifier")),
            (None, Some(path)) => {
                let file_field = format!("{field}.scram_verifier_file");
                (ctx.read_file(&file_field, path)?, file_field)
            }
            (Some(_), Some(_)) => {
                return Err(ctx.err(
                    field,
                    "set either scram_verifier or scram_verifier_file, not both",
                ))
            }
            (None, None) => {
                return Err(ctx.err(
                    field,
                    "missing scram_verifier (or scram_verifier_file); make one with \
                     jitgate hash-password",
                ))
            }
        };
        // The parser's own message is not shown: it could quote part of the verifier.
        let verifier =
            ScramVerifier::parse(text.trim()).map_err(|_| ctx.err(text_field, VERIFIER_HELP))?;
        out.insert(name.clone(), verifier);
    }
    Ok(out)
}

/// `targets:` → target name → upstream settings (credentials resolved); SQL longer than
/// `max_sql_bytes` (`audit.max_sql_bytes`) and parameter values longer than
/// `max_param_bytes` (`audit.max_param_bytes`) are recorded truncated on every target.
pub(crate) fn targets(
    ctx: &Ctx,
    raw: &BTreeMap<String, RawTarget>,
    max_sql_bytes: usize,
    max_param_bytes: usize,
) -> Result<HashMap<String, TargetSettings>, ConfigError> {
    let mut out = HashMap::with_capacity(raw.len());
    for (name, target) in raw {
        let field = format!("targets.{name}");
        ctx.name(&field, "target", name)?;
        if target.host.trim().is_empty() {
            return Err(ctx.err(format!("{field}.host"), "must not be empty"));
        }
        let port = target.port.unwrap_or(DEFAULT_PORT);
        if port == 0 {
            return Err(ctx.err(format!("{field}.port"), "must be between 1 and 65535"));
        }
        let database = target.database.clone().unwrap_or_else(|| name.clone());
        if database.is_empty() {
            return Err(ctx.err(format!("{field}.database"), "must not be empty"));
        }
        let upstream_tls = tls::upstream(ctx, &format!("{field}.tls"), &target.tls, &target.host)?;
        if target.roles.is_empty() {
            return Err(ctx.err(
                format!("{field}.roles"),
                "must define at least one role (grants name one of them)",
            ));
        }
        let provisioning = provisioning(ctx, &field, target)?;
        let ephemeral = matches!(provisioning, Provisioning::Ephemeral(_));
        let mut roles = HashMap::with_capacity(target.roles.len());
        for (role_name, role) in &target.roles {
            let role_field = format!("{field}.roles.{role_name}");
            ctx.name(&role_field, "role", role_name)?;
            if role.user.is_empty() {
                return Err(ctx.err(format!("{role_field}.user"), "must not be empty"));
            }
            let password = if !ephemeral {
                ctx.one_secret(
                    &role_field,
                    "password",
                    role.password_env.as_deref(),
                    role.password_file.as_deref(),
                )?
            } else if role.password_env.is_some() || role.password_file.is_some() {
                return Err(ctx.err(
                    role_field,
                    "has a password, but with provisioning: ephemeral sessions log in as a \
                     per-grant role that is a member of this role, never as the role itself: \
                     remove password_env/password_file (and consider ALTER ROLE … NOLOGIN)",
                ));
            } else {
                Secret::default()
            };
            roles.insert(
                role_name.clone(),
                RoleCredentials {
                    user: role.user.clone(),
                    password,
                },
            );
        }
        out.insert(
            name.clone(),
            TargetSettings {
                name: name.clone(),
                host: target.host.clone(),
                port,
                database,
                tls: upstream_tls,
                audit: target_audit(ctx, &field, target, max_sql_bytes, max_param_bytes)?,
                roles,
                auth_methods: super::limits::auth_methods(ctx, &field, target)?,
                max_scram_iterations: super::limits::max_scram_iterations(ctx, &field, target)?,
                role_changes: match target.guard.role_changes {
                    RawRoleChanges::Refuse => RoleChanges::Refuse,
                    RawRoleChanges::Allow => RoleChanges::Allow,
                },
                provisioning,
            },
        );
    }
    Ok(out)
}

/// `targets.<name>.provisioning` and `.admin` → how sessions log in upstream.
fn provisioning(ctx: &Ctx, field: &str, target: &RawTarget) -> Result<Provisioning, ConfigError> {
    let mode = target.provisioning.unwrap_or(ProvisioningMode::Shared);
    match (mode, &target.admin) {
        (ProvisioningMode::Shared, None) => Ok(Provisioning::Shared),
        (ProvisioningMode::Shared, Some(_)) => Err(ctx.err(
            format!("{field}.admin"),
            "is used only with provisioning: ephemeral (per-grant roles); set that, or \
             remove admin",
        )),
        (ProvisioningMode::Ephemeral, None) => Err(ctx.err(
            format!("{field}.admin"),
            "missing: provisioning: ephemeral needs an admin role that may create roles \
             (user, password_env or password_file; a role with CREATEROLE that is granted \
             each of this target's roles WITH ADMIN OPTION)",
        )),
        (ProvisioningMode::Ephemeral, Some(admin)) => {
            let admin_field = format!("{field}.admin");
            if admin.user.is_empty() {
                return Err(ctx.err(format!("{admin_field}.user"), "must not be empty"));
            }
            let password = ctx.one_secret(
                &admin_field,
                "password",
                admin.password_env.as_deref(),
                admin.password_file.as_deref(),
            )?;
            if password.expose().len() < 16 {
                return Err(ctx.err(
                    admin_field,
                    "the admin password keys the passwords of per-grant roles: use at least \
                     16 characters (a random one: openssl rand -base64 24)",
                ));
            }
            Ok(Provisioning::Ephemeral(EphemeralSettings {
                admin: RoleCredentials {
                    user: admin.user.clone(),
                    password,
                },
            }))
        }
    }
}

/// `targets.<name>.audit:` → the content rules of each role (target rules plus role rules).
fn target_audit(
    ctx: &Ctx,
    field: &str,
    target: &RawTarget,
    max_sql_bytes: usize,
    max_param_bytes: usize,
) -> Result<TargetAuditSettings, ConfigError> {
    let empty = RawTargetAudit::default();
    let raw = target.audit.as_ref().unwrap_or(&empty);
    let field = format!("{field}.audit");
    let base = match &raw.redact {
        Some(r) => redaction(ctx, &format!("{field}.redact"), r)?,
        None => Redaction::none(),
    };
    let mut roles = HashMap::with_capacity(raw.roles.len());
    for (role, role_audit) in &raw.roles {
        let role_field = format!("{field}.roles.{role}");
        if !target.roles.contains_key(role) {
            return Err(ctx.err(
                role_field,
                format!("no role {role:?} is defined in this target's roles"),
            ));
        }
        let own = redaction(ctx, &format!("{role_field}.redact"), &role_audit.redact)?;
        let merged = base
            .union(&own)
            .map_err(|e| ctx.err(format!("{role_field}.redact"), e.to_string()))?;
        roles.insert(
            role.clone(),
            Arc::new(ContentRules {
                max_sql_bytes,
                max_param_bytes,
                redaction: merged,
            }),
        );
    }
    Ok(TargetAuditSettings {
        default: Arc::new(ContentRules {
            max_sql_bytes,
            max_param_bytes,
            redaction: base,
        }),
        roles,
    })
}

/// `…redact:` → compiled rules; a bad regex is reported with its field.
fn redaction(ctx: &Ctx, field: &str, raw: &RawRedact) -> Result<Redaction, ConfigError> {
    for (i, pattern) in raw.params_matching.iter().enumerate() {
        if pattern.is_empty() {
            return Err(ctx.err(
                format!("{field}.params_matching[{i}]"),
                "an empty pattern would match every value (use all_params: true)",
            ));
        }
    }
    for (i, pattern) in raw.params_matching.iter().enumerate() {
        Redaction::new(false, std::slice::from_ref(pattern))
            .map_err(|e| ctx.err(format!("{field}.params_matching[{i}]"), e.to_string()))?;
    }
    Redaction::new(raw.all_params, &raw.params_matching)
        .map_err(|e| ctx.err(format!("{field}.params_matching"), e.to_string()))
}

/// The names grants may refer to, from the resolved identities and targets.
pub(crate) fn catalog(
    identities: &HashMap<String, ScramVerifier>,
    targets: &HashMap<String, TargetSettings>,
) -> Catalog {
    Catalog {
        identities: identities.keys().cloned().collect::<BTreeSet<_>>(),
        targets: targets
            .iter()
            .map(|(name, t)| (name.clone(), t.roles.keys().cloned().collect()))
            .collect(),
    }
}

/// `upstream_reuse:` with its defaults (on; 60 s idle, 10 min life, 32 per grant).
pub(crate) fn upstream_reuse(
    ctx: &Ctx,
    raw: Option<&RawUpstreamReuse>,
) -> Result<ReuseSettings, ConfigError> {
    let mut reuse = ReuseSettings::default();
    let Some(raw) = raw else {
        return Ok(reuse);
    };
    if let Some(enabled) = raw.enabled {
        reuse.enabled = enabled;
    }
    if let Some(v) = &raw.idle_timeout {
        reuse.idle_timeout = ctx.duration("upstream_reuse.idle_timeout", &v.0)?;
    }
    if let Some(v) = &raw.max_lifetime {
        reuse.max_lifetime = ctx.duration("upstream_reuse.max_lifetime", &v.0)?;
    }
    if let Some(n) = raw.max_idle_per_grant {
        if n > 10_000 {
            return Err(ctx.err(
                "upstream_reuse.max_idle_per_grant",
                format!("{n} is out of range (0..=10000; 0 parks nothing, the default is 32)"),
            ));
        }
        reuse.max_idle_per_grant = n;
    }
    Ok(reuse)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::*;

    fn target(yaml: &str) -> RawTarget {
        let base = "host: db\ntls: { mode: disable }\nroles:\n  ro: { user: u, password_env: X }\n  rw: { user: w, password_env: Y }\n";
        serde_yaml::from_str(&format!("{base}{yaml}")).unwrap()
    }

    fn audit(yaml: &str) -> Result<TargetAuditSettings, ConfigError> {
        let ctx = Ctx::new(Path::new("/etc/jitgate.yaml"));
        target_audit(&ctx, "targets.prod", &target(yaml), 1000, 500)
    }

    #[test]
    fn no_audit_section_means_no_redaction() {
        let a = audit("").unwrap();
        let rules = a.rules_for("ro");
        assert_eq!(rules.max_sql_bytes, 1000);
        assert_eq!(rules.max_param_bytes, 500);
        assert!(rules.redaction.is_empty());
    }

    #[test]
    fn role_rules_add_to_the_target_rules() {
        let a = audit(
            "audit:\n  redact:\n    params_matching: ['^4[0-9]{15}$']\n  roles:\n    rw:\n      redact: { all_params: true }\n",
        )
        .unwrap();
        let ro = a.rules_for("ro");
        assert!(ro.redaction.hides(Some(b"4111111111111111")));
        assert!(!ro.redaction.hides(Some(b"hello")));
        let rw = a.rules_for("rw");
        assert!(rw.redaction.all_params());
        assert_eq!(rw.redaction.patterns(), ["^4[0-9]{15}$"]);
    }

    #[test]
    fn mistakes_name_their_field() {
        let err = audit("audit:\n  redact:\n    params_matching: ['ok', '(unclosed']\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("targets.prod.audit.redact.params_matching[1]")
                && err.contains("(unclosed"),
            "{err}"
        );
        let err = audit("audit:\n  roles:\n    admin:\n      redact: { all_params: true }\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("targets.prod.audit.roles.admin") && err.contains("no role"),
            "{err}"
        );
        let err = audit("audit:\n  redact:\n    params_matching: ['']\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("params_matching[0]"), "{err}");
        let typo = serde_yaml::from_str::<RawTarget>(
            "host: db\ntls: { mode: disable }\nroles: {}\naudit:\n  redact:\n    all_param: true\n",
        );
        assert!(typo.unwrap_err().to_string().contains("all_param"));
    }

    fn reuse(yaml: &str) -> Result<ReuseSettings, ConfigError> {
        let ctx = Ctx::new(Path::new("/etc/jitgate.yaml"));
        let raw: RawUpstreamReuse = serde_yaml::from_str(yaml).unwrap();
        upstream_reuse(&ctx, Some(&raw))
    }

    #[test]
    fn upstream_reuse_defaults_overrides_and_mistakes() {
        let ctx = Ctx::new(Path::new("/etc/jitgate.yaml"));
        assert_eq!(
            upstream_reuse(&ctx, None).unwrap(),
            ReuseSettings::default()
        );
        assert!(ReuseSettings::default().enabled);
        let r =
            reuse("enabled: false\nidle_timeout: 5s\nmax_lifetime: 1h\nmax_idle_per_grant: 0\n")
                .unwrap();
        assert!(!r.enabled);
        assert_eq!(r.idle_timeout, std::time::Duration::from_secs(5));
        assert_eq!(r.max_lifetime, std::time::Duration::from_secs(3600));
        assert_eq!(r.max_idle_per_grant, 0);
        let err = reuse("idle_timeout: soon\n").unwrap_err().to_string();
        assert!(err.contains("upstream_reuse.idle_timeout"), "{err}");
        let err = reuse("max_idle_per_grant: 1000000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream_reuse.max_idle_per_grant"), "{err}");
        let typo = serde_yaml::from_str::<RawUpstreamReuse>("enable: true\n");
        assert!(typo.unwrap_err().to_string().contains("enable"));
    }
}
