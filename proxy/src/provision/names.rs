//! The names and secrets of a per-grant role, computed alike on every replica: the role
//! name from identity and grant, the marker comment the sweeper recognises, the password
//! derived from the target's admin password, and SQL quoting of all of them.
//!
//! The password is `HMAC-SHA-256(admin password, target, grant id)`: every replica that
//! can provision a role (it holds the admin credential) computes the same password for
//! the same grant, so replicas share it without storing or sending it anywhere, and no
//! one without the admin credential — which can change any of these roles anyway — can
//! compute it. Only its SCRAM verifier, with a fresh salt, is sent to the server.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::settings::Secret;

/// Every per-grant role name starts with this.
pub const PREFIX: &str = "jit_";

/// The start of the comment that marks a role as a per-grant role of jitgate's; the grant
/// id follows it.
pub const MARKER: &str = "jitgate ephemeral role of grant ";

/// Bytes of the identity kept in a role name: `jit_` (4) + identity (≤ 26) + `_` + the
/// grant id as 32 hex digits = at most 63 bytes, PostgreSQL's identifier limit.
const IDENTITY_BYTES: usize = 26;

/// The role of `identity` under grant `grant_id`: `jit_<identity>_<grant id hex>`.
/// Identity names may hold `.`, `-` and capitals; they become `_` and lower case so the
/// name needs no quoting in a DBA's hands (it is quoted in jitgate's SQL regardless).
/// The grant id keeps names unique whatever two identities map to.
pub fn role_name(identity: &str, grant_id: Uuid) -> String {
    let mut name = String::with_capacity(63);
    name.push_str(PREFIX);
    name.extend(
        identity
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9') => c,
                _ => '_',
            })
            .take(IDENTITY_BYTES),
    );
    name.push('_');
    name.push_str(&grant_id.simple().to_string());
    name
}

/// The grant a role belongs to, from its name and marker comment; `None` for any role
/// jitgate did not make (both must agree, so neither alone can mark a role for removal)
/// and for roles another deployment made: the marker names the admin role that created
/// it, and only roles of `admin` are this deployment's (replicas share the admin role;
/// a second jitgate with its own admin role on the same server never touches them).
pub fn grant_of(name: &str, comment: &str, admin: &str) -> Option<Uuid> {
    let rest = comment.strip_prefix(MARKER)?;
    let (id, rest) = rest.split_once(' ')?;
    let id: Uuid = id.parse().ok()?;
    let owner = rest.strip_prefix("by ")?.split(" (identity ").next()?;
    let suffix = format!("_{}", id.simple());
    (owner == admin && name.starts_with(PREFIX) && name.ends_with(&suffix)).then_some(id)
}

/// The marker comment of the role of `grant_id` held by `identity`, created by `admin`.
pub fn marker(grant_id: Uuid, admin: &str, identity: &str) -> String {
    format!("{MARKER}{grant_id} by {admin} (identity {identity})")
}

/// The password of the role of `grant_id` on `target`, derived from the target's admin
/// password (see the module doc). 256 bits, base64url: nothing SASLprep would change.
pub fn password(admin_password: &Secret, target: &str, grant_id: Uuid) -> Secret {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(admin_password.expose().as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for part in [
        b"jitgate ephemeral password v1".as_slice(),
        target.as_bytes(),
        grant_id.as_bytes(),
    ] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    Secret::new(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// PBKDF2 rounds of a per-grant role's SCRAM verifier. Stretching protects a password a
/// person chose against guessing from a stolen verifier; [`password`] is 256 random bits,
/// which no number of rounds makes harder or easier to guess. Each round is paid twice
/// on a grant's first login: jitgate derives the keys, and PostgreSQL's `CREATE ROLE …
/// PASSWORD` derives them again to check the password is not empty (4096 rounds cost
/// ~15 ms of the server's time per first login on the benchmark machine; BENCHMARKS.md,
/// "Ephemeral users: one round trip, one PBKDF2 round").
pub const VERIFIER_ITERATIONS: u32 = 1;

/// `name` as a quoted SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as a SQL string literal, valid whatever `standard_conforming_strings` says
/// (an `E''` literal with quotes and backslashes escaped).
pub fn literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn names_fit_postgres_and_map_unsafe_characters() {
        let id = Uuid::now_v7();
        let name = role_name("Alice.Smith-2", id);
        assert!(name.starts_with("jit_alice_smith_2_"), "{name}");
        let long = role_name(&"x".repeat(63), id);
        assert_eq!(long.len(), 63);
        assert_eq!(grant_of(&long, &marker(id, "adm", "x"), "adm"), Some(id));
    }

    #[test]
    fn a_role_is_ours_only_when_name_and_marker_agree() {
        let id = Uuid::now_v7();
        let name = role_name("alice", id);
        assert_eq!(
            grant_of(&name, &marker(id, "adm", "alice"), "adm"),
            Some(id)
        );
        assert_eq!(grant_of("app_rw", &marker(id, "adm", "alice"), "adm"), None);
        assert_eq!(grant_of(&name, "some other comment", "adm"), None);
        // Another deployment's role (another admin role made it) is not ours.
        assert_eq!(
            grant_of(&name, &marker(id, "other_adm", "alice"), "adm"),
            None
        );
        assert_eq!(grant_of(&name, &marker(id, "adm", "alice"), "adm_x"), None);
        assert_eq!(
            grant_of(
                &role_name("alice", Uuid::now_v7()),
                &marker(id, "adm", "alice"),
                "adm"
            ),
            None
        );
    }

    #[test]
    fn passwords_differ_by_grant_and_target_and_repeat_otherwise() {
        let admin = Secret::new("admin secret");
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(password(&admin, "db", a), password(&admin, "db", a));
        assert_ne!(password(&admin, "db", a), password(&admin, "db", b));
        assert_ne!(password(&admin, "db", a), password(&admin, "db2", a));
        assert_ne!(
            password(&admin, "db", a),
            password(&Secret::new("other"), "db", a)
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's a \\ test"), "E'it\\'s a \\\\ test'");
    }
}
