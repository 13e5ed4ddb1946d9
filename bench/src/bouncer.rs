//! PgBouncer (label `B`): found on the machine or installed from Debian's package, run in
//! session mode with a pool larger than any client count of the matrix, SCRAM for clients
//! (the role's own verifier, copied from `pg_authid`) and TLS offered to clients.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Result};

use crate::procs::{self, OsUser, Proc};
use crate::tls::CertFiles;

/// What to run PgBouncer against.
pub struct BouncerSpec<'a> {
    pub dir: &'a Path,
    pub pg_port: u16,
    pub database: &'a str,
    pub user: &'a str,
    /// `SCRAM-SHA-256$…` from `pg_authid.rolpassword`.
    pub verifier: &'a str,
    pub certs: &'a CertFiles,
    pub os_user: Option<OsUser>,
}

/// A running PgBouncer.
pub struct Bouncer {
    pub proc: Proc,
    pub port: u16,
    pub version: String,
}

/// The pgbouncer binary, if installed (Debian puts it in /usr/sbin).
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join("pgbouncer"))
        .find(|p| p.is_file())
}

/// Finds PgBouncer, installing the Debian package when we are root. `Err` explains how
/// to install it by hand.
pub fn find_or_install() -> Result<PathBuf> {
    if let Some(path) = find() {
        return Ok(path);
    }
    if !procs::is_root() {
        bail!(
            "PgBouncer is not installed and we are not root; install it with \
             `sudo apt-get install -y pgbouncer` and run again"
        );
    }
    eprintln!("jitgate-bench: installing PgBouncer (apt-get install -y pgbouncer)…");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "pgbouncer"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !install() {
        let _ = Command::new("apt-get")
            .arg("update")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        if !install() {
            bail!("`apt-get install -y pgbouncer` failed; install PgBouncer by hand");
        }
    }
    find().ok_or_else(|| anyhow::anyhow!("pgbouncer installed but not found on PATH"))
}

/// `pgbouncer --version`, first line.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Writes the config and starts PgBouncer; waits until it listens.
pub fn start(bin: &Path, spec: &BouncerSpec<'_>) -> Result<Bouncer> {
    let dir = spec.dir;
    fs::create_dir_all(dir)?;
    let port = procs::free_port()?;
    // PgBouncer runs as the server user and reads its own copies of the TLS files.
    let cert = dir.join("bench.crt");
    let key = dir.join("bench.key");
    fs::copy(&spec.certs.cert, &cert)?;
    fs::copy(&spec.certs.key, &key)?;
    let userlist = dir.join("userlist.txt");
    fs::write(
        &userlist,
        format!("\"{}\" \"{}\"\n", spec.user, spec.verifier),
    )?;
    let ini = dir.join("pgbouncer.ini");
    fs::write(
        &ini,
        format!(
            "[databases]\n\
             {db} = host=127.0.0.1 port={pg_port} dbname={db}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = scram-sha-256\n\
             auth_file = {userlist}\n\
             pool_mode = session\n\
             max_client_conn = 4000\n\
             default_pool_size = 200\n\
             logfile = {log}\n\
             pidfile = {pid}\n\
             client_tls_sslmode = allow\n\
             client_tls_cert_file = {cert}\n\
             client_tls_key_file = {key}\n\
             ignore_startup_parameters = extra_float_digits\n",
            db = spec.database,
            pg_port = spec.pg_port,
            userlist = userlist.display(),
            log = dir.join("pgbouncer.log").display(),
            pid = dir.join("pgbouncer.pid").display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )?;
    procs::chown(dir, spec.os_user)?;
    for f in [&cert, &key, &userlist, &ini] {
        procs::chown(f, spec.os_user)?;
    }
    let mut cmd = procs::command_as(bin, spec.os_user);
    cmd.arg(&ini).current_dir(dir);
    let out = dir.join("stderr.log");
    let mut proc = Proc::spawn("pgbouncer", cmd, &out)?;
    if let Err(e) = proc.wait_listening(procs::loopback(port), &dir.join("pgbouncer.log")) {
        bail!("{e}\n{}", procs::tail(&out, 10));
    }
    Ok(Bouncer {
        proc,
        port,
        version: version(bin),
    })
}
