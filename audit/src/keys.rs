//! Ed25519 key pairs for signing checkpoints.
//!
//! Keys are stored as PEM, the format OpenSSL uses (PKCS#8 `PRIVATE KEY`, SPKI `PUBLIC
//! KEY`), so `openssl genpkey -algorithm ed25519` works as well as `jitgate audit keygen`
//! and a security team can inspect a key with standard tools. The private key file is
//! created with mode 0600 and is never overwritten.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, Verifier};
use rand::RngCore;

use crate::error::AuditError;

/// File names `jitgate audit keygen` writes.
pub const PRIVATE_KEY_FILE: &str = "audit-signing.key";
/// See [`PRIVATE_KEY_FILE`].
pub const PUBLIC_KEY_FILE: &str = "audit-signing.pub";

/// The key jitgate signs checkpoints with. `Debug` shows only the public half.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

/// The key `jitgate audit verify` checks checkpoint signatures with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

fn key_err(path: Option<&Path>, reason: impl Into<String>) -> AuditError {
    AuditError::Key {
        path: path.map(Path::to_path_buf),
        reason: reason.into(),
    }
}

impl SigningKey {
    /// A new random key from the operating system's CSPRNG.
    pub fn generate() -> SigningKey {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        seed.fill(0);
        SigningKey(key)
    }

    /// Parses a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(pem: &str) -> Result<SigningKey, AuditError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim())
            .map(SigningKey)
            .map_err(|e| {
                key_err(
                    None,
                    format!("not an Ed25519 private key in PKCS#8 PEM form ({e})"),
                )
            })
    }

    /// Reads a PEM private key file. The message of an error names the file, never its
    /// contents.
    pub fn load(path: &Path) -> Result<SigningKey, AuditError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| key_err(Some(path), format!("cannot read it: {e}")))?;
        Self::from_pem(&text).map_err(|e| match e {
            AuditError::Key { reason, .. } => key_err(Some(path), reason),
            other => other,
        })
    }

    /// The PEM text of the private key: PKCS#8 v1 (the seed only), the form OpenSSL
    /// writes and reads.
    pub fn to_pem(&self) -> Result<String, AuditError> {
        let bytes = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.0.to_bytes(),
            public_key: None,
        };
        bytes
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| key_err(None, format!("cannot encode the private key: {e}")))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SigningKey")
            .field(&format_args!("public {}", self.public()))
            .finish()
    }
}

impl PublicKey {
    /// Parses an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str) -> Result<PublicKey, AuditError> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem.trim())
            .map(PublicKey)
            .map_err(|e| key_err(None, format!("not an Ed25519 public key in PEM form ({e})")))
    }

    /// Reads a PEM public key file.
    pub fn load(path: &Path) -> Result<PublicKey, AuditError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| key_err(Some(path), format!("cannot read it: {e}")))?;
        Self::from_pem(&text).map_err(|e| match e {
            AuditError::Key { reason, .. } => key_err(Some(path), reason),
            other => other,
        })
    }

    /// The PEM text of the public key.
    pub fn to_pem(&self) -> Result<String, AuditError> {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| key_err(None, format!("cannot encode the public key: {e}")))
    }

    /// The 32 raw key bytes as 64 hex digits: how checkpoints name the key that signed
    /// them.
    pub fn to_hex(&self) -> String {
        crate::hex::encode(self.0.as_bytes())
    }

    /// Parses [`PublicKey::to_hex`] output.
    pub fn from_hex(text: &str) -> Option<PublicKey> {
        crate::hex::decode::<32>(text)
            .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
            .map(PublicKey)
    }

    /// Whether `signature` is this key's (strict RFC 8032 verification) over `message`.
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &sig).is_ok() && self.0.verify(message, &sig).is_ok()
    }
}

impl fmt::Display for PublicKey {
    /// The hex form, as in checkpoints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// What [`write_key_pair`] made.
#[derive(Debug, Clone)]
pub struct KeyPairFiles {
    /// The private key (mode 0600): name it in `audit.signing_key_file`.
    pub private: PathBuf,
    /// The public key: give it to whoever verifies the log.
    pub public: PathBuf,
    /// The public key itself.
    pub key: PublicKey,
}

/// Generates a key pair into `dir` (created with 0700 if missing) as
/// [`PRIVATE_KEY_FILE`] (0600) and [`PUBLIC_KEY_FILE`] (0644). Refuses to overwrite
/// either file: replacing a signing key by accident would make older checkpoints
/// unverifiable with the new public key.
pub fn write_key_pair(dir: &Path) -> Result<KeyPairFiles, AuditError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AuditError::Io { path, source }
    };
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(io(dir))?;
    }
    let private = dir.join(PRIVATE_KEY_FILE);
    let public = dir.join(PUBLIC_KEY_FILE);
    for path in [&private, &public] {
        if path.exists() {
            return Err(key_err(
                Some(path),
                "already exists; not overwriting a key (move it away first)",
            ));
        }
    }
    let key = SigningKey::generate();
    write_new(&private, key.to_pem()?.as_bytes(), 0o600).map_err(io(&private))?;
    write_new(&public, key.public().to_pem()?.as_bytes(), 0o644).map_err(io(&public))?;
    Ok(KeyPairFiles {
        private,
        public,
        key: key.public(),
    })
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = opts.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_sign_verify() {
        let key = SigningKey::generate();
        let again = SigningKey::from_pem(&key.to_pem().unwrap()).unwrap();
        assert_eq!(again.public(), key.public());
        let public = PublicKey::from_pem(&key.public().to_pem().unwrap()).unwrap();
        assert_eq!(public, key.public());
        assert_eq!(PublicKey::from_hex(&public.to_hex()), Some(public));
        let sig = key.sign(b"message");
        assert!(public.verifies(b"message", &sig));
        assert!(!public.verifies(b"messagf", &sig));
        assert!(!SigningKey::generate().public().verifies(b"message", &sig));
        assert!(!format!("{key:?}").contains(&key.to_pem().unwrap()));
    }

    #[test]
    fn openssl_keys_are_accepted() {
        // RFC 8410 section 10.3 example private key; its public key is the one of 10.1.
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
                   -----END PRIVATE KEY-----\n";
        let key = SigningKey::from_pem(pem).unwrap();
        assert_eq!(
            key.public().to_hex(),
            "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"
        );
        let err =
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .unwrap_err();
        assert!(err.to_string().contains("PKCS#8"), "{err}");
    }

    #[test]
    fn keygen_writes_a_pair_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("keys");
        let made = write_key_pair(&out).unwrap();
        let key = SigningKey::load(&made.private).unwrap();
        assert_eq!(PublicKey::load(&made.public).unwrap(), key.public());
        assert_eq!(made.key, key.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&made.private), 0o600);
            assert_eq!(mode(&out), 0o700);
        }
        let err = write_key_pair(&out).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(
            SigningKey::load(&made.private).unwrap().public(),
            key.public()
        );
    }
}
