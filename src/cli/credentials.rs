//! Where `jitgate login` keeps its token, and the API client the workflow commands use.
//!
//! The file (JSON: server URL, identity, token, expiry) lives at `$JITGATE_CREDENTIALS`,
//! else `$XDG_CONFIG_HOME/jitgate/credentials.json`, else
//! `~/.config/jitgate/credentials.json`; it is written `0600` in a `0700` directory, since
//! the token lets its holder act as the identity until it expires.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use jiff::Timestamp;
use jitgate::api::AdminClient;
use jitgate_proxy::settings::Secret;
use serde::{Deserialize, Serialize};

/// What `jitgate login` stored.
#[derive(Serialize, Deserialize)]
pub struct Credentials {
    /// Base URL of the jitgate API, e.g. `http://127.0.0.1:6433`.
    pub server: String,
    pub identity: String,
    pub token: String,
    pub expires_at: Timestamp,
    /// The CA file given to `jitgate login --ca-file` for an https API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// The credentials file's path.
pub fn path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("JITGATE_CREDENTIALS").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|p| !p.is_empty())
                .ok_or_else(|| anyhow!("neither JITGATE_CREDENTIALS nor HOME is set"))?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(base.join("jitgate").join("credentials.json"))
}

/// Stores `creds` (0600).
pub fn save(creds: &Credentials) -> Result<PathBuf> {
    let path = path()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let json = serde_json::to_vec_pretty(creds)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    std::io::Write::write_all(&mut file, &json)?;
    Ok(path)
}

/// The stored credentials, refusing expired ones with what to do.
pub fn load() -> Result<Credentials> {
    let path = path()?;
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("not logged in: run `jitgate login` first")
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let creds: Credentials = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a jitgate credentials file", path.display()))?;
    if creds.expires_at <= Timestamp::now() {
        bail!(
            "your login as {} expired at {}: run `jitgate login` again",
            creds.identity,
            creds.expires_at
        );
    }
    Ok(creds)
}

/// Removes the stored credentials; whether there were any.
pub fn remove() -> Result<bool> {
    let path = path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// A client acting as the logged-in identity.
pub fn client() -> Result<(AdminClient, Credentials)> {
    let creds = load()?;
    let client = AdminClient::with_ca(
        creds.server.clone(),
        Secret::new(creds.token.clone()),
        creds.ca_file.as_deref(),
    )?;
    Ok((client, creds))
}
