//! The SCRAM-SHA-256 key derivations of RFC 5802 §3, in one place.
//!
//! ```text
//! SaltedPassword  = Hi(Normalize(password), salt, i)      (PBKDF2-HMAC-SHA-256)
//! ClientKey       = HMAC(SaltedPassword, "Client Key")
//! StoredKey       = H(ClientKey)
//! ServerKey       = HMAC(SaltedPassword, "Server Key")
//! ClientSignature = HMAC(StoredKey, AuthMessage)
//! ServerSignature = HMAC(ServerKey, AuthMessage)
//! ```

use hmac::digest::generic_array::GenericArray;
use hmac::digest::{CtOutput, KeyInit};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// A SHA-256-sized key or signature.
pub(crate) type Key = [u8; 32];

/// HMAC-SHA-256 keyed with a 32-byte key over the concatenation of `parts`.
pub(crate) fn hmac(key: &Key, parts: &[&[u8]]) -> Key {
    // HMAC zero-pads keys shorter than the hash block (RFC 2104 §2), so padding a 32-byte
    // key to SHA-256's 64-byte block ourselves gives the same MAC through the infallible
    // fixed-size constructor.
    let mut block = GenericArray::default();
    block[..key.len()].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// SHA-256.
pub(crate) fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

/// Postgres's password normalization: SASLprep (RFC 4013) when the password is valid
/// UTF-8 and allowed by it, the raw bytes otherwise — exactly what libpq and the server
/// do, so a verifier we compute matches what clients derive.
pub(crate) fn normalize_password(password: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(password).map(stringprep::saslprep) {
        Ok(Ok(prepared)) => prepared.into_owned().into_bytes(),
        _ => password.to_vec(),
    }
}

/// Hi(): PBKDF2-HMAC-SHA-256 of the (already normalized) password.
pub(crate) fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

/// (StoredKey, ServerKey) from a salted password.
pub(crate) fn stored_and_server_key(salted: &Key) -> (Key, Key) {
    let client_key = hmac(salted, &[b"Client Key"]);
    (sha256(&client_key), hmac(salted, &[b"Server Key"]))
}

/// Constant-time equality, so a failed proof check leaks nothing through timing.
pub(crate) fn ct_eq(a: &Key, b: &Key) -> bool {
    CtOutput::<Sha256>::new((*a).into()) == CtOutput::<Sha256>::new((*b).into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_variable_key_construction() {
        let key = [7u8; 32];
        let mut reference = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        reference.update(b"Client Key");
        let reference: Key = reference.finalize().into_bytes().into();
        assert_eq!(hmac(&key, &[b"Client ", b"Key"]), reference);
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(&[1; 32], &[1; 32]));
        let mut other = [1; 32];
        other[31] = 2;
        assert!(!ct_eq(&[1; 32], &other));
    }

    #[test]
    fn normalization_follows_saslprep() {
        // U+00A0 (no-break space) maps to a plain space; invalid UTF-8 passes unchanged.
        assert_eq!(normalize_password("a\u{a0}b".as_bytes()), b"a b");
        assert_eq!(normalize_password(b"\xffpw"), b"\xffpw");
        assert_eq!(normalize_password(b"plain"), b"plain");
    }
}
