//! `jitgate login` tokens: short-lived, signed, stateless.
//!
//! Format: `jg1.<payload>.<mac>` — `payload` is base64url (no padding) of
//! `{"sub": identity, "iat": unix s, "exp": unix s}`, `mac` is base64url of
//! HMAC-SHA256(key, "jg1." + payload). Stateless so every replica configured with the same
//! `admin.session_key` accepts the tokens of the others. The key never leaves the server;
//! a token holds no secret beyond itself.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const PREFIX: &str = "jg1.";

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
}

/// Signs and checks tokens with one key.
#[derive(Clone)]
pub struct TokenKeys {
    key: Vec<u8>,
    /// How long new tokens last.
    pub ttl: std::time::Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A verified token's holder and end.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenClaims {
    pub identity: String,
    pub expires_at: Timestamp,
}

impl TokenKeys {
    /// Keys from configured key material.
    pub fn new(key: &[u8], ttl: std::time::Duration) -> Self {
        TokenKeys {
            key: key.to_vec(),
            ttl,
        }
    }

    /// A random key (tokens end with the process and work on this replica only).
    pub fn random(ttl: std::time::Duration) -> Self {
        let mut key = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        TokenKeys { key, ttl }
    }

    fn mac(&self, signed: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(signed);
        mac
    }

    /// A token for `identity`, valid from `now` for `ttl`.
    pub fn issue(&self, identity: &str, now: Timestamp) -> (String, Timestamp) {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let exp = now.as_second().saturating_add(ttl);
        let claims = Claims {
            sub: identity.to_owned(),
            iat: now.as_second(),
            exp,
        };
        // Serializing a struct of a string and two integers cannot fail.
        let json = serde_json::to_vec(&claims).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let signed = format!("{PREFIX}{payload}");
        let mac = URL_SAFE_NO_PAD.encode(self.mac(signed.as_bytes()).finalize().into_bytes());
        let expires_at = Timestamp::from_second(exp).unwrap_or(Timestamp::MAX);
        (format!("{signed}.{mac}"), expires_at)
    }

    /// The holder of `token` if its signature is ours and it has not expired at `now`.
    pub fn verify(&self, token: &str, now: Timestamp) -> Option<TokenClaims> {
        let rest = token.strip_prefix(PREFIX)?;
        let (payload, mac) = rest.split_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let signed = &token[..PREFIX.len() + payload.len()];
        // Constant-time comparison.
        self.mac(signed.as_bytes()).verify_slice(&mac).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        if now.as_second() >= claims.exp {
            return None;
        }
        Some(TokenClaims {
            identity: claims.sub,
            expires_at: Timestamp::from_second(claims.exp).ok()?,
        })
    }
}

/// Whether `s` looks like a login token (as opposed to an admin token).
pub fn is_login_token(s: &str) -> bool {
    s.starts_with(PREFIX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn round_trip_expiry_and_tampering() {
        let keys = TokenKeys::new(b"0123456789abcdef0123", std::time::Duration::from_secs(60));
        let now = t("2030-01-01T00:00:00Z");
        let (token, exp) = keys.issue("alice", now);
        assert_eq!(exp, t("2030-01-01T00:01:00Z"));
        let claims = keys.verify(&token, now).unwrap();
        assert_eq!(claims.identity, "alice");
        assert!(
            keys.verify(&token, t("2030-01-01T00:01:00Z")).is_none(),
            "expired"
        );
        // Another key rejects it.
        let other = TokenKeys::new(b"another-key-of-some-length", keys.ttl);
        assert!(other.verify(&token, now).is_none());
        // A payload swapped for another identity's is rejected.
        let (bob, _) = keys.issue("bob", now);
        let alice_mac = token.rsplit_once('.').unwrap().1;
        let bob_payload = bob.rsplit_once('.').unwrap().0;
        assert!(keys
            .verify(&format!("{bob_payload}.{alice_mac}"), now)
            .is_none());
        assert!(keys.verify("jg1.garbage", now).is_none());
        assert!(keys.verify("", now).is_none());
    }
}
