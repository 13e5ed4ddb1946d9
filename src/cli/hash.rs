//! `jitgate hash-password`: a SCRAM-SHA-256 verifier for an identity's config entry.
//!
//! The password is never an argument (it would land in shell history and `ps`): it is read
//! from stdin when piped, or typed twice at a prompt.

use std::io::{BufRead, IsTerminal};

use anyhow::{anyhow, bail, Context, Result};
use jitgate::config;
use jitgate_proxy::auth::ScramVerifier;

use super::HashPasswordCmd;

/// `jitgate hash-password`.
pub fn run(cmd: HashPasswordCmd) -> Result<()> {
    if let Some(name) = &cmd.identity {
        // Same rule as the config, so the printed snippet loads.
        config::validate_name("identity", name).map_err(|e| anyhow!("--identity: {e}"))?;
    }
    let password = read_password()?;
    if password.is_empty() {
        bail!("the password is empty");
    }
    let verifier = ScramVerifier::from_password(&password).to_string();
    jitgate::outln!("{verifier}");
    if let Some(name) = cmd.identity {
        jitgate::outln!();
        jitgate::outln!("# add to the identities: section of the jitgate config");
        jitgate::outln!("identities:");
        jitgate::outln!("  {name}:");
        jitgate::outln!("    scram_verifier: \"{verifier}\"");
    }
    Ok(())
}

/// One password: the first line of stdin when it is not a terminal, else typed once at a
/// prompt (`jitgate login`).
pub(super) fn read_password_once() -> Result<Option<String>> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        return Ok(Some(line.trim_end_matches(['\n', '\r']).to_owned()));
    }
    Ok(None)
}

fn read_password() -> Result<String> {
    if let Some(piped) = read_password_once()? {
        return Ok(piped);
    }
    let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
    let second =
        rpassword::prompt_password("Password (again): ").context("cannot read the password")?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(first)
}
