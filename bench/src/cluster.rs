//! The benchmark's PostgreSQL: a throwaway cluster with durable settings, room for the
//! enforcement run's 1 000 sessions, and SSL on (for the TLS connection storm).
//!
//! `jitgate_testkit` is tuned for tests (max_connections 300, fast mode), so the
//! benchmark starts its own postmaster with the same layout rules: `initdb` as the
//! `postgres` OS user when we are root, loopback only, the superuser trusted over
//! loopback for admin work, every other role SCRAM-SHA-256.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::procs::{self, OsUser, Proc};
use crate::tls::CertFiles;

/// Server settings (besides port and paths). Durable (fsync, synchronous_commit and
/// full_page_writes at their defaults); shared_buffers holds the whole `-s 10` data set.
const SETTINGS: &[&str] = &[
    "listen_addresses=127.0.0.1",
    "unix_socket_directories=",
    "max_connections=1200",
    "shared_buffers=256MB",
    "max_wal_size=2GB",
    "logging_collector=off",
    "lc_messages=C",
    "ssl=on",
    // Who ran a logged statement (the first-login measurement counts the statements of
    // jitgate's provisioning connection by its application_name). Changes only the
    // prefix of lines the server writes anyway: nothing more is logged by default.
    "log_line_prefix=%m [%p] %q%u@%a: ",
];

/// A running cluster; shut down (fast) when dropped.
pub struct Cluster {
    bin: PathBuf,
    port: u16,
    proc: Option<Proc>,
    data: PathBuf,
    log: PathBuf,
}

impl Cluster {
    /// `initdb` into `dir/pgdata`, start it and wait until it takes logins.
    pub fn start(dir: &Path, certs: &CertFiles, user: Option<OsUser>) -> Result<Cluster> {
        let bin = jitgate_testkit::find_bin_dir()?;
        let data = dir.join("pgdata");
        fs::create_dir_all(&data)?;
        procs::chown(&data, user)?;
        let status = procs::command_as(bin.join("initdb"), user)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C"])
            .args(["-A", "scram-sha-256", "--auth-local=trust"])
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("running initdb")?;
        if !status.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&status.stderr));
        }
        fs::write(
            data.join("pg_hba.conf"),
            "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )?;
        // The server refuses a key others can read; give it private copies.
        let key = data.join("bench.key");
        let cert = data.join("bench.crt");
        fs::copy(&certs.key, &key)?;
        fs::copy(&certs.cert, &cert)?;
        for f in [&key, &cert] {
            procs::chown(f, user)?;
            fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        }
        let port = procs::free_port()?;
        let log = dir.join("postgres.log");
        let mut cmd = procs::command_as(bin.join("postgres"), user);
        cmd.arg("-D").arg(&data).current_dir("/");
        cmd.arg("-c").arg(format!("port={port}"));
        cmd.arg("-c")
            .arg(format!("ssl_cert_file={}", cert.display()));
        cmd.arg("-c").arg(format!("ssl_key_file={}", key.display()));
        for s in SETTINGS {
            cmd.arg("-c").arg(s);
        }
        let proc = Proc::spawn("postgres", cmd, &log)?;
        let cluster = Cluster {
            bin,
            port,
            proc: Some(proc),
            data,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if cluster.psql("postgres", "select 1").is_ok() {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                bail!(
                    "postgres did not start; its log:\n{}",
                    procs::tail(&cluster.log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log (its stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Superuser connection string for tokio-postgres (trusted over loopback).
    pub fn admin_conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
            self.port
        )
    }

    /// Runs SQL as the superuser; returns unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "5")
            .env_remove("PGOPTIONS")
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!(
                "psql failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `postgres --version`.
    pub fn version(&self) -> String {
        Command::new(self.bin.join("postgres"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|_| "unknown".into())
    }

    /// Fast shutdown (SIGINT), then kill if it takes too long.
    pub fn stop(&mut self) {
        let Some(proc) = self.proc.take() else {
            return;
        };
        let pid = proc.pid().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.data.join("postmaster.pid").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(proc);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
