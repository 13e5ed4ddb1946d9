//! A throwaway self-signed certificate (ECDSA P-256, for `localhost` and `127.0.0.1`)
//! shared by Postgres, PgBouncer and jitgate in the TLS connection storm, so every target
//! does the same handshake.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Result;

/// Where the PEM files are.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes `bench.crt` and `bench.key` (0600) into `dir`.
pub fn make(dir: &Path) -> Result<CertFiles> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names)?;
    let files = CertFiles {
        cert: dir.join("bench.crt"),
        key: dir.join("bench.key"),
    };
    fs::write(&files.cert, certified.cert.pem())?;
    fs::write(&files.key, certified.signing_key.serialize_pem())?;
    fs::set_permissions(&files.key, fs::Permissions::from_mode(0o600))?;
    Ok(files)
}
