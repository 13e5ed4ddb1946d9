//! `identities:` and `targets:` → the proxy's identities and upstream targets, and the
//! policy engine's catalog of what grants may name.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jitgate_policy::Catalog;
use jitgate_proxy::auth::ScramVerifier;
use jitgate_proxy::settings::{RoleCredentials, TargetSettings};

use super::ctx::Ctx;
use super::raw::{RawIdentity, RawTarget};
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

/// `targets:` → target name → upstream settings (credentials resolved).
pub(crate) fn targets(
    ctx: &Ctx,
    raw: &BTreeMap<String, RawTarget>,
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
        let mut roles = HashMap::with_capacity(target.roles.len());
        for (role_name, role) in &target.roles {
            let role_field = format!("{field}.roles.{role_name}");
            ctx.name(&role_field, "role", role_name)?;
            if role.user.is_empty() {
                return Err(ctx.err(format!("{role_field}.user"), "must not be empty"));
            }
            let password = ctx.one_secret(
                &role_field,
                "password",
                role.password_env.as_deref(),
                role.password_file.as_deref(),
            )?;
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
                roles,
            },
        );
    }
    Ok(out)
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
