//! SCRAM-SHA-256 verifiers in Postgres's `SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`
//! format (the `rolpassword` format of `pg_authid`), plus deterministic mock verifiers
//! that make unknown identities indistinguishable from wrong passwords.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

use super::keys::{self, Key};
use crate::error::AuthError;

const PREFIX: &str = "SCRAM-SHA-256$";

/// What a stored SCRAM-SHA-256 secret holds: enough to verify a client's proof and to
/// prove ourselves to the client, but not the password.
///
/// `Debug` shows iterations and salt length only: the keys are credential material.
#[derive(Clone)]
pub struct ScramVerifier {
    /// PBKDF2 iteration count sent to the client; clients refuse very large values
    /// (libpq-compatible drivers cap it, e.g. rust-postgres at 100 000).
    pub iterations: u32,
    /// The salt sent to the client.
    pub salt: Vec<u8>,
    /// H(ClientKey): checks the client's proof.
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key"): signs our final message.
    pub server_key: [u8; 32],
}

impl ScramVerifier {
    /// Iteration count for new verifiers; Postgres's default (`scram_iterations`).
    pub const DEFAULT_ITERATIONS: u32 = 4096;
    /// Salt length for new verifiers; Postgres's default.
    pub const DEFAULT_SALT_LEN: usize = 16;

    /// Parses `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
    ///
    /// Errors never echo the input, which is credential material.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let shape = AuthError::InvalidVerifier(
            "expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>",
        );
        let rest = s.strip_prefix(PREFIX).ok_or(shape.clone())?;
        let (params, keys) = rest.split_once('$').ok_or(shape.clone())?;
        let (iterations, salt) = params.split_once(':').ok_or(shape.clone())?;
        let (stored, server) = keys.split_once(':').ok_or(shape)?;

        let iterations = match iterations.parse::<u32>() {
            Ok(n) if n > 0 && !iterations.starts_with('+') => n,
            _ => {
                return Err(AuthError::InvalidVerifier(
                    "iteration count is not a positive integer",
                ))
            }
        };
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| AuthError::InvalidVerifier("salt is not valid base64"))?;
        if salt.is_empty() {
            return Err(AuthError::InvalidVerifier("salt is empty"));
        }
        let stored_key = decode_key(stored).ok_or(AuthError::InvalidVerifier(
            "StoredKey is not 32 bytes of base64",
        ))?;
        let server_key = decode_key(server).ok_or(AuthError::InvalidVerifier(
            "ServerKey is not 32 bytes of base64",
        ))?;
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// A new verifier for `password`, with a random 16-byte salt and 4096 iterations —
    /// what Postgres stores for `ALTER ROLE … PASSWORD`.
    pub fn from_password(password: &str) -> Self {
        let mut salt = [0u8; Self::DEFAULT_SALT_LEN];
        rand::thread_rng().fill_bytes(&mut salt);
        Self::from_password_with_salt(password.as_bytes(), &salt, Self::DEFAULT_ITERATIONS)
    }

    /// A verifier from a known salt and iteration count; deterministic, for tests and for
    /// reproducing a verifier computed elsewhere. The password is SASLprep-normalized the
    /// way Postgres does it.
    pub fn from_password_with_salt(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let normalized = keys::normalize_password(password);
        let salted = keys::salted_password(&normalized, salt, iterations);
        let (stored_key, server_key) = keys::stored_and_server_key(&salted);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key,
            server_key,
        }
    }

    /// A stand-in verifier for an identity that does not exist (or has no usable secret).
    ///
    /// Salt and keys are HMACs of the identity under a server-side `secret`, so the same
    /// identity always gets the same salt (a client probing twice sees no difference from
    /// a real user) and the salt reveals nothing. No one knows a password for it: the
    /// StoredKey is not the hash of any known ClientKey, so the exchange runs in full and
    /// ends in the same `AuthFailed` as a wrong password. Uses the default iteration
    /// count; if real verifiers use another, override `iterations` to match.
    pub fn mock(identity: &str, secret: &[u8; 32]) -> Self {
        let derive = |label: &[u8]| keys::hmac(secret, &[label, b"\0", identity.as_bytes()]);
        let salt_source = derive(b"jitgate mock salt");
        ScramVerifier {
            iterations: Self::DEFAULT_ITERATIONS,
            salt: salt_source
                .get(..Self::DEFAULT_SALT_LEN)
                .unwrap_or(&salt_source)
                .to_vec(),
            stored_key: derive(b"jitgate mock stored key"),
            server_key: derive(b"jitgate mock server key"),
        }
    }
}

/// Decodes a base64 key that must be exactly 32 bytes.
fn decode_key(b64: &str) -> Option<Key> {
    STANDARD.decode(b64).ok()?.try_into().ok()
}

impl FromStr for ScramVerifier {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ScramVerifier::parse(s)
    }
}

/// Formats in the same `SCRAM-SHA-256$…` format [`ScramVerifier::parse`] reads.
impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn parses_postgres_protocol_output_and_round_trips() {
        let s = postgres_protocol::password::scram_sha_256(b"pw");
        let v = ScramVerifier::parse(&s).unwrap();
        assert_eq!(v.iterations, 4096);
        assert_eq!(v.salt.len(), 16);
        assert_eq!(v.to_string(), s);
        assert_eq!(s.parse::<ScramVerifier>().unwrap().to_string(), s);
    }

    #[test]
    fn from_password_agrees_with_postgres_protocol() {
        // Same password and salt as an independently computed verifier: same keys.
        let reference = ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(
            "pässword\u{a0}".as_bytes(),
        ))
        .unwrap();
        let ours = ScramVerifier::from_password_with_salt(
            "pässword\u{a0}".as_bytes(),
            &reference.salt,
            reference.iterations,
        );
        assert_eq!(ours.to_string(), reference.to_string());

        let random = ScramVerifier::from_password("foobar");
        assert_eq!(random.salt.len(), 16);
        assert_eq!(random.iterations, 4096);
        assert_ne!(random.salt, ScramVerifier::from_password("foobar").salt);
    }

    #[test]
    fn rejects_malformed_verifiers_without_echoing_them() {
        let good = ScramVerifier::from_password("x").to_string();
        let (head, keys) = good.rsplit_once('$').unwrap();
        let (stored, server) = keys.split_once(':').unwrap();
        let short_key = STANDARD.encode([0u8; 31]);
        let bad = [
            String::new(),
            "md5abcdef".to_string(),
            good.replace("SCRAM-SHA-256$", "SCRAM-SHA-1$"),
            format!("{head}${stored}"),
            format!("{head}${stored}:{short_key}"),
            format!("{head}${short_key}:{server}"),
            format!("{head}${stored}:!!!"),
            good.replacen("4096", "0", 1),
            good.replacen("4096", "-1", 1),
            good.replacen("4096", "+5", 1),
            good.replacen("4096", "99999999999", 1),
            good.replacen("4096:", "4096", 1),
            format!("SCRAM-SHA-256$4096:${stored}:{server}"),
            format!("SCRAM-SHA-256$4096:%%%${stored}:{server}"),
        ];
        for s in bad {
            let err = ScramVerifier::parse(&s).expect_err(&s);
            assert!(matches!(err, AuthError::InvalidVerifier(_)), "{s}: {err:?}");
            assert!(!err.to_string().contains(stored));
        }
    }

    #[test]
    fn mock_is_deterministic_per_identity_and_secret() {
        let secret = [9u8; 32];
        let a = ScramVerifier::mock("alice", &secret);
        assert_eq!(
            a.to_string(),
            ScramVerifier::mock("alice", &secret).to_string()
        );
        let b = ScramVerifier::mock("bob", &secret);
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
        let other_secret = ScramVerifier::mock("alice", &[8u8; 32]);
        assert_ne!(a.salt, other_secret.salt);
        // shaped exactly like a real verifier
        assert_eq!(a.salt.len(), ScramVerifier::DEFAULT_SALT_LEN);
        assert_eq!(a.iterations, ScramVerifier::DEFAULT_ITERATIONS);
        assert!(ScramVerifier::parse(&a.to_string()).is_ok());
    }

    #[test]
    fn debug_hides_keys() {
        let v = ScramVerifier::from_password("secret");
        let dbg = format!("{v:?}");
        assert!(dbg.contains("iterations: 4096"));
        assert!(!dbg.contains(&STANDARD.encode(v.stored_key)));
        assert!(!dbg.contains("stored_key"));
    }
}
