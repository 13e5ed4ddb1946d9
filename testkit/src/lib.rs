//! jitgate-testkit: throwaway PostgreSQL clusters for `jitgate demo`, the integration tests
//! and the benchmarks.
//!
//! [`PgCluster::start`] runs `initdb` into a private directory, writes a `pg_hba.conf`
//! that trusts only the `postgres` superuser over loopback and makes every other role
//! authenticate with SCRAM-SHA-256 (so jitgate's upstream SCRAM client is exercised for
//! real), starts `postgres` on a loopback port and waits until it accepts connections.
//!
//! Postgres refuses to run as root. When we are root, the server binaries run as the
//! `postgres` OS user (via [`CommandExt::uid`], the same effect as `runuser -u postgres`
//! without a PAM session in between) and the data directory is owned by that user.
//!
//! Orphan safety: the tests keep one cluster per test binary in a never-dropped `static`,
//! so `Drop` cannot be relied on. Every server gets a tiny `sh` watchdog that blocks reading
//! a pipe whose write end only this process holds; when this process exits, however it
//! exits, the pipe closes and the watchdog shuts the server down (immediate mode) and
//! removes the temp dir. A clean [`PgCluster::stop`] tells the watchdog to stand down.
//!
//! The API is blocking; async callers use `tokio::task::spawn_blocking`.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Loopback only: the cluster's `trust` rule for the superuser must never face a network.
const HOST: &str = "127.0.0.1";
/// Superuser created by `initdb -U`; trusted over loopback for test/demo admin work.
const SUPERUSER: &str = "postgres";
/// Generous: `initdb` + start on a busy 2-core box takes a few seconds.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Fast shutdown rolls back open transactions and should finish well within this.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often to look at `postmaster.pid` or a child's exit status while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Fresh free ports tried when another process grabs ours between probe and bind.
const PORT_ATTEMPTS: usize = 5;
/// Lines of `postgres.log` quoted in start errors.
const LOG_TAIL_LINES: usize = 30;
/// `NAMEDATALEN - 1`: longer identifiers are silently truncated by the server.
const MAX_IDENT_BYTES: usize = 63;
/// Line 8 of `postmaster.pid` (`LOCK_FILE_LINE_PM_STATUS` in `src/include/utils/pidfile.h`).
const PIDFILE_STATUS_LINE: usize = 7;

/// Shell run as the watchdog: `$1` postmaster pid, `$2` data dir, `$3` dir to remove or "".
/// `read` returns when we write "done" (clean stop) or when our process dies (EOF).
const WATCHDOG_SCRIPT: &str = r#"
if read -r cmd && [ "$cmd" = done ]; then exit 0; fi
kill -s QUIT "$1" 2>/dev/null
n=0
while [ -e "$2/postmaster.pid" ] && kill -0 "$1" 2>/dev/null && [ "$n" -lt 200 ]; do
  sleep 0.05; n=$((n+1))
done
kill -s KILL "$1" 2>/dev/null
if [ -n "$3" ]; then rm -rf -- "$3"; fi
"#;

/// Errors from setting up, running or talking to a throwaway cluster.
#[derive(Debug, thiserror::Error)]
pub enum PgClusterError {
    /// No usable `postgres` binary; the text says where we looked.
    #[error("PostgreSQL server binaries not found: {0}")]
    BinariesNotFound(String),
    /// We are root but cannot drop to the `postgres` OS user.
    #[error("running as root, but cannot run the server as OS user `postgres`: {0}")]
    NoPostgresUser(String),
    /// A filesystem or process-spawn operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// A helper program (`initdb`, `id`, …) exited unsuccessfully.
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        /// Program name.
        program: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its stderr, trimmed.
        stderr: String,
    },
    /// The server did not come up; includes the tail of its log for diagnosis.
    #[error("postgres did not start: {reason}\n--- tail of {} ---\n{tail}", .log.display())]
    Start {
        /// Why we gave up.
        reason: String,
        /// Path of `postgres.log`.
        log: PathBuf,
        /// Last lines of that log.
        tail: String,
    },
    /// `psql` failed; `stderr` carries the server's error message.
    #[error("psql failed ({status}): {stderr}")]
    Psql {
        /// psql's exit status (3 = SQL error under `ON_ERROR_STOP`, 2 = connection).
        status: ExitStatus,
        /// psql's stderr, trimmed.
        stderr: String,
    },
    /// A role or database name that cannot be used as a SQL identifier.
    #[error("invalid SQL identifier {name:?}: {reason}")]
    InvalidIdentifier {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A value that cannot be written as a SQL string literal (it contains NUL).
    #[error("invalid SQL literal: contains a NUL byte")]
    InvalidLiteral,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> PgClusterError {
    let context = context.into();
    move |source| PgClusterError::Io { context, source }
}

/// How to start a cluster.
#[derive(Debug, Clone, Default)]
pub struct PgClusterOptions {
    /// Keep state in `<dir>/pgdata` (created if missing, reused if it already holds a
    /// cluster, never deleted) — for a demo that survives restarts. `None` = a fresh
    /// temp dir under /tmp that is deleted on stop/drop or by the watchdog.
    /// When running as root, user `postgres` must be able to traverse `dir`'s parents.
    pub dir: Option<PathBuf>,
    /// Listen port; `None` = pick a free one (and retry on a bind collision).
    pub port: Option<u16>,
    /// Trade durability for speed: `fsync`, `synchronous_commit` and `full_page_writes`
    /// off, `initdb --no-sync`. Right for tests and throwaway demos; leave it off for a
    /// persistent `dir` you care about (an OS crash could corrupt it).
    pub fast: bool,
    /// Extra server settings, passed as `-c name=value` after the built-in ones (so a
    /// name given here overrides them), e.g. `("log_statement", "all")`. Empty by
    /// default: the cluster runs with the built-in settings only.
    pub settings: Vec<(String, String)>,
    /// Extra `pg_hba.conf` lines, placed before the built-in ones (so they win), e.g.
    /// `host all +md5_users 127.0.0.1/32 md5` for a test of an upstream that asks for
    /// MD5. Empty by default.
    pub hba: Vec<String>,
}

/// OS identity the server binaries run as when we are root.
#[derive(Debug, Clone, Copy)]
struct OsUser {
    uid: u32,
    gid: u32,
}

/// A live postmaster plus the watchdog that kills it if we die.
#[derive(Debug)]
struct Server {
    child: Child,
    watchdog: Watchdog,
}

/// The orphan-safety watchdog; holding `arm` open keeps it waiting.
#[derive(Debug)]
struct Watchdog {
    child: Child,
    arm: Option<ChildStdin>,
}

impl Watchdog {
    /// Tell the watchdog we cleaned up ourselves, and reap it.
    fn disarm(mut self) {
        if let Some(mut arm) = self.arm.take() {
            // A failed write means the watchdog is already gone; nothing to undo.
            let _ = arm.write_all(b"done\n");
        }
        let _ = self.child.wait();
    }
}

/// A running throwaway PostgreSQL cluster on 127.0.0.1. Stopped on drop.
#[derive(Debug)]
pub struct PgCluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    run_as: Option<OsUser>,
    fast: bool,
    /// [`PgClusterOptions::settings`], applied on every launch.
    extra_settings: Vec<(String, String)>,
    /// [`PgClusterOptions::hba`], written on every start.
    extra_hba: Vec<String>,
    server: Option<Server>,
    /// Owned temp dir (when `options.dir` was `None`); removed on stop.
    temp: Option<tempfile::TempDir>,
}

/// Why one launch attempt failed; a port collision is worth retrying on a new port.
enum LaunchError {
    PortInUse(PgClusterError),
    Other(PgClusterError),
}

impl PgCluster {
    /// Create (or reuse, see [`PgClusterOptions::dir`]) a cluster, start it and wait until
    /// it accepts connections.
    pub fn start(opts: PgClusterOptions) -> Result<PgCluster, PgClusterError> {
        let bin_dir = find_bin_dir()?;
        let run_as = postgres_user_if_root()?;
        let (temp, base) = match &opts.dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
                let base = fs::canonicalize(dir)
                    .map_err(io_err(format!("resolving {}", dir.display())))?;
                (None, base)
            }
            None => {
                let temp = make_temp_dir(run_as.is_some())?;
                let base = temp.path().to_path_buf();
                (Some(temp), base)
            }
        };
        let mut cluster = PgCluster {
            bin_dir,
            data_dir: base.join("pgdata"),
            port: 0,
            run_as,
            fast: opts.fast,
            extra_settings: opts.settings.clone(),
            extra_hba: opts.hba.clone(),
            server: None,
            temp,
        };
        cluster.prepare_data_dir()?;
        if !cluster.data_dir.join("PG_VERSION").exists() {
            cluster.initdb()?;
        }
        cluster.write_hba()?;
        cluster.launch(opts.port)?;
        Ok(cluster)
    }

    /// Address the server listens on.
    pub fn host(&self) -> &str {
        HOST
    }

    /// Port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Superuser role name (no password; trusted from loopback only).
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The cluster's data directory (`<dir or temp>/pgdata`); `postgres.log` lives in it.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Server log: every start appends here, and start errors quote its tail.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("postgres.log")
    }

    /// Directory holding the server binaries (and usually `psql`/`pgbench`).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Path of a PostgreSQL client program (e.g. "pgbench"): from [`Self::bin_dir`] if
    /// present there, else the bare name for a `PATH` lookup.
    pub fn bin(&self, name: &str) -> PathBuf {
        let path = self.bin_dir.join(name);
        if path.is_file() {
            path
        } else {
            PathBuf::from(name)
        }
    }

    /// Process id of the postmaster while it runs, so tests can check it is gone.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|s| s.child.id())
    }

    /// libpq URL for the superuser, e.g. `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn admin_url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@{HOST}:{}/{}",
            self.port,
            percent_encode(database)
        )
    }

    /// libpq URL for a password role, e.g. one made by [`Self::create_role`].
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{}:{}@{HOST}:{}/{}",
            percent_encode(user),
            percent_encode(password),
            self.port,
            percent_encode(database)
        )
    }

    /// Run SQL as the superuser via `psql -X -q -A -t -v ON_ERROR_STOP=1` and return its
    /// stdout trimmed (rows one per line, columns separated by `|`). The SQL is fed on
    /// stdin, so it may hold several statements (each its own transaction) and psql
    /// meta-commands; psql `:variables` are interpolated as usual.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, PgClusterError> {
        self.run_psql(database, sql, false)
    }

    /// `CREATE ROLE name LOGIN PASSWORD '…'` with a SCRAM-SHA-256 verifier.
    pub fn create_role(&self, name: &str, password: &str) -> Result<(), PgClusterError> {
        self.create_role_with(name, password, "")
    }

    /// Like [`Self::create_role`], appending raw role attributes such as `"CREATEDB"`
    /// (trusted SQL text from the caller, not quoted).
    pub fn create_role_with(
        &self,
        name: &str,
        password: &str,
        attributes: &str,
    ) -> Result<(), PgClusterError> {
        let sql = format!(
            "SET password_encryption = 'scram-sha-256';\n\
             CREATE ROLE {} LOGIN PASSWORD {} {attributes};\n",
            quote_ident(name)?,
            quote_literal(password)?
        );
        // Terse: psql must not echo the statement (and so the password) in error text.
        self.run_psql(SUPERUSER, &sql, true).map(|_| ())
    }

    /// `CREATE DATABASE name OWNER owner`.
    pub fn create_database(&self, name: &str, owner: &str) -> Result<(), PgClusterError> {
        let sql = format!(
            "CREATE DATABASE {} OWNER {};\n",
            quote_ident(name)?,
            quote_ident(owner)?
        );
        self.run_psql(SUPERUSER, &sql, false).map(|_| ())
    }

    /// Stop the server (fast shutdown, escalating if it hangs), wait for it, and delete
    /// the temp dir if we own it. Idempotent; also done by `Drop`.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            self.shutdown(server);
        }
        if let Some(temp) = self.temp.take() {
            let path = temp.path().to_path_buf();
            if let Err(e) = temp.close() {
                tracing::warn!(dir = %path.display(), error = %e, "could not remove cluster dir");
            }
        }
    }

    fn shutdown(&self, mut server: Server) {
        let pid = server.child.id();
        signal(pid, "INT"); // fast shutdown
        if wait_timeout(&mut server.child, STOP_TIMEOUT).is_none() {
            tracing::warn!(pid, "postgres ignored fast shutdown; using immediate");
            signal(pid, "QUIT"); // immediate shutdown
            if wait_timeout(&mut server.child, Duration::from_secs(5)).is_none() {
                let _ = server.child.kill();
                let _ = server.child.wait();
            }
        }
        server.watchdog.disarm();
    }

    /// Create the data dir (0700, owned by the server's OS user) and prove that user can
    /// reach it — a clear error beats initdb's "Permission denied" on some parent.
    fn prepare_data_dir(&self) -> Result<(), PgClusterError> {
        let data = &self.data_dir;
        if !data.exists() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(data)
                .map_err(io_err(format!("creating {}", data.display())))?;
            if let Some(user) = self.run_as {
                std::os::unix::fs::chown(data, Some(user.uid), Some(user.gid))
                    .map_err(io_err(format!("chown postgres {}", data.display())))?;
            }
        }
        if self.run_as.is_some() {
            let status = self
                .server_command("/bin/sh")
                .args(["-c", r#"test -w "$1" && test -x "$1""#, "sh"])
                .arg(data)
                .stdin(Stdio::null())
                .status()
                .map_err(io_err("probing data dir access as postgres"))?;
            if !status.success() {
                return Err(PgClusterError::NoPostgresUser(format!(
                    "user postgres cannot write {} (it and every parent must be traversable)",
                    data.display()
                )));
            }
        }
        Ok(())
    }

    fn initdb(&self) -> Result<(), PgClusterError> {
        let mut cmd = self.server_command(self.bin_dir.join("initdb"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C"])
            .args(["-A", "scram-sha-256", "--auth-local=trust"]);
        if self.fast {
            cmd.arg("--no-sync");
        }
        run_checked("initdb", &mut cmd).map(|_| ())
    }

    /// Superuser: trust from loopback (admin access for tests/demo only). Everyone else:
    /// SCRAM over loopback TCP. No other address and no socket is accepted.
    fn write_hba(&self) -> Result<(), PgClusterError> {
        let mut extra: String = self.extra_hba.iter().map(|l| format!("{l}\n")).collect();
        extra.push_str(
            "host    all      postgres 127.0.0.1/32  trust\n\
                   host    all      postgres ::1/128       trust\n\
                   host    all      all      127.0.0.1/32  scram-sha-256\n\
                   host    all      all      ::1/128       scram-sha-256\n",
        );
        let hba = format!(
            "# Written by jitgate pgcluster; rewritten on every start.\n\
             # TYPE DATABASE USER     ADDRESS       METHOD\n{extra}"
        );
        let path = self.data_dir.join("pg_hba.conf");
        // initdb created it owned by the server user; truncating keeps owner and mode.
        fs::write(&path, hba).map_err(io_err(format!("writing {}", path.display())))
    }

    fn launch(&mut self, fixed_port: Option<u16>) -> Result<(), PgClusterError> {
        let attempts = if fixed_port.is_some() {
            1
        } else {
            PORT_ATTEMPTS
        };
        let mut last = None;
        for _ in 0..attempts {
            let port = match fixed_port {
                Some(port) => port,
                None => free_port()?,
            };
            self.port = port;
            match self.launch_on() {
                Ok(server) => {
                    self.server = Some(server);
                    return Ok(());
                }
                Err(LaunchError::PortInUse(e)) => last = Some(e),
                Err(LaunchError::Other(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| PgClusterError::Start {
            reason: "no port attempt was made".into(),
            log: self.log_path(),
            tail: String::new(),
        }))
    }

    fn launch_on(&self) -> Result<Server, LaunchError> {
        let log_path = self.log_path();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|e| {
                LaunchError::Other(io_err(format!("opening {}", log_path.display()))(e))
            })?;
        let log_start = log.seek(SeekFrom::End(0)).unwrap_or(0);
        let (log_out, log_err) = match (log.try_clone(), log.try_clone()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                return Err(LaunchError::Other(io_err("duplicating log fd")(e)))
            }
        };
        let mut cmd = self.server_command(self.bin_dir.join("postgres"));
        cmd.arg("-D").arg(&self.data_dir);
        for setting in self.settings(self.port) {
            cmd.arg("-c").arg(setting);
        }
        // Own process group: a terminal ^C goes to jitgate/the tests, which stop us in order.
        cmd.stdin(Stdio::null())
            .stdout(log_out)
            .stderr(log_err)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| LaunchError::Other(io_err("spawning postgres")(e)))?;
        let watchdog = match self.spawn_watchdog(child.id()) {
            Ok(w) => w,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LaunchError::Other(e));
            }
        };
        let mut server = Server { child, watchdog };
        match self.wait_ready(&mut server) {
            Ok(()) => Ok(server),
            Err(reason) => {
                let exited = matches!(server.child.try_wait(), Ok(Some(_)));
                if !exited {
                    self.shutdown(server);
                } else {
                    server.watchdog.disarm();
                }
                let new_log = read_from(&log_path, log_start);
                let err = PgClusterError::Start {
                    reason,
                    log: log_path.clone(),
                    tail: tail_lines(&new_log, LOG_TAIL_LINES),
                };
                if exited && new_log.contains("Address already in use") {
                    Err(LaunchError::PortInUse(err))
                } else {
                    Err(LaunchError::Other(err))
                }
            }
        }
    }

    /// Server settings as `-c` values, so a reused persistent dir always gets this run's.
    fn settings(&self, port: u16) -> Vec<String> {
        let mut settings = vec![
            format!("listen_addresses={HOST}"),
            format!("port={port}"),
            "unix_socket_directories=".to_string(),
            "max_connections=300".to_string(),
            "shared_buffers=64MB".to_string(),
            "logging_collector=off".to_string(),
            "log_destination=stderr".to_string(),
            "lc_messages=C".to_string(),
        ];
        if self.fast {
            settings.extend(
                [
                    "fsync=off",
                    "synchronous_commit=off",
                    "full_page_writes=off",
                ]
                .map(String::from),
            );
        }
        settings.extend(
            self.extra_settings
                .iter()
                .map(|(name, value)| format!("{name}={value}")),
        );
        settings
    }

    /// Wait until `postmaster.pid` names our child and says "ready" (what `pg_ctl -w`
    /// checks), then prove a real TCP login on `self.port` works. Err carries the reason.
    fn wait_ready(&self, server: &mut Server) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid = server.child.id();
        let pidfile = self.data_dir.join("postmaster.pid");
        loop {
            match server.child.try_wait() {
                Ok(Some(status)) => return Err(format!("postgres exited early ({status})")),
                Ok(None) => {}
                Err(e) => return Err(format!("could not poll postgres: {e}")),
            }
            if pidfile_ready(&pidfile, pid) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready after {START_TIMEOUT:?}"));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        match self.psql(SUPERUSER, "select 1") {
            Ok(out) if out == "1" => Ok(()),
            Ok(out) => Err(format!("unexpected probe output {out:?}")),
            Err(e) => Err(format!("login probe failed: {e}")),
        }
    }

    fn spawn_watchdog(&self, pid: u32) -> Result<Watchdog, PgClusterError> {
        let remove = self
            .temp
            .as_ref()
            .map(|t| t.path().to_path_buf())
            .unwrap_or_default();
        let mut child = Command::new("/bin/sh")
            .args(["-c", WATCHDOG_SCRIPT, "jitgate-pg-watchdog"])
            .arg(pid.to_string())
            .arg(&self.data_dir)
            .arg(remove)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(io_err("spawning watchdog"))?;
        let arm = child.stdin.take();
        Ok(Watchdog { child, arm })
    }

    fn run_psql(&self, database: &str, sql: &str, terse: bool) -> Result<String, PgClusterError> {
        let mut cmd = Command::new(self.bin("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
        if terse {
            cmd.args(["-v", "VERBOSITY=terse"]);
        }
        cmd.arg("-d")
            .arg(format!(
                "{}?sslmode=disable&connect_timeout=10",
                self.admin_url(database)
            ))
            .args(["-f", "-"])
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(io_err("spawning psql"))?;
        let stdin = child.stdin.take();
        // Feed stdin from a thread so a large result cannot deadlock against our write.
        let output = std::thread::scope(|scope| {
            if let Some(mut stdin) = stdin {
                scope.spawn(move || {
                    // psql exiting early (e.g. cannot connect) shows up in its stderr.
                    let _ = stdin.write_all(sql.as_bytes());
                });
            }
            child.wait_with_output()
        })
        .map_err(io_err("waiting for psql"))?;
        if !output.status.success() {
            return Err(PgClusterError::Psql {
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// A command for a server-side binary, run as the `postgres` OS user when we are root.
    fn server_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir("/").env_remove("PGDATA");
        if let Some(user) = self.run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Locate the server binaries: `$PG_BIN`, else `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout).
pub fn find_bin_dir() -> Result<PathBuf, PgClusterError> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("postgres").is_file() {
            return Ok(dir);
        }
        return Err(PgClusterError::BinariesNotFound(format!(
            "PG_BIN={} has no `postgres`",
            dir.display()
        )));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && dir.join("postgres").is_file() {
            return Ok(dir);
        }
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(version) = name
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
            else {
                continue;
            };
            let bin = entry.path().join("bin");
            let newer = match &best {
                Some((v, _)) => version > *v,
                None => true,
            };
            if newer && bin.join("postgres").is_file() {
                best = Some((version, bin));
            }
        }
    }
    best.map(|(_, dir)| dir).ok_or_else(|| {
        PgClusterError::BinariesNotFound(
            "set PG_BIN, put pg_config on PATH, or install postgresql-15 \
             (looked in /usr/lib/postgresql/*/bin)"
                .into(),
        )
    })
}

/// `Some(postgres uid/gid)` when we run as root, since Postgres refuses root.
fn postgres_user_if_root() -> Result<Option<OsUser>, PgClusterError> {
    let euid = id_number(&["-u"])?;
    if euid != 0 {
        return Ok(None);
    }
    let lookup = |flag: &str| {
        id_number(&[flag, SUPERUSER]).map_err(|e| PgClusterError::NoPostgresUser(e.to_string()))
    };
    Ok(Some(OsUser {
        uid: lookup("-u")?,
        gid: lookup("-g")?,
    }))
}

fn id_number(args: &[&str]) -> Result<u32, PgClusterError> {
    let out = run_checked("id", Command::new("id").args(args))?;
    out.trim().parse().map_err(|_| PgClusterError::Io {
        context: format!("parsing `id {}`", args.join(" ")),
        source: io::Error::new(io::ErrorKind::InvalidData, format!("got {out:?}")),
    })
}

/// Run to completion; Ok(stdout) on success, else an error carrying stderr.
fn run_checked(program: &str, cmd: &mut Command) -> Result<String, PgClusterError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {program}")))?;
    if !out.status.success() {
        return Err(PgClusterError::Command {
            program: program.into(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A temp dir other users can traverse (0755), so the `postgres` user reaches `pgdata`.
fn make_temp_dir(as_root: bool) -> Result<tempfile::TempDir, PgClusterError> {
    // root's TMPDIR may sit under /root, which postgres cannot traverse.
    let parent = if as_root {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix("jitgate-pg-")
        .tempdir_in(&parent)
        .map_err(io_err(format!("creating temp dir in {}", parent.display())))?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod temp dir"))?;
    Ok(dir)
}

/// Ask the OS for a free loopback port. Racy by nature; `launch` retries on collision.
fn free_port() -> Result<u16, PgClusterError> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("probing a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("probing a free port"))?
        .port();
    Ok(port)
}

fn pidfile_ready(pidfile: &Path, pid: u32) -> bool {
    let Ok(text) = fs::read_to_string(pidfile) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    lines.first().map(|l| l.trim()) == Some(pid.to_string().as_str())
        && lines.get(PIDFILE_STATUS_LINE).map(|l| l.trim()) == Some("ready")
}

/// Send a signal by name via the shell's `kill` (no libc, no procps needed).
fn signal(pid: u32, name: &str) {
    let _ = Command::new("/bin/sh")
        .args(["-c", r#"kill -s "$1" "$2" 2>/dev/null"#, "sh", name])
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status();
}

/// Wait for a child with a deadline, polling its exit status.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
            _ => return None,
        }
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Double-quoted SQL identifier; rejects names the server would truncate or refuse.
fn quote_ident(name: &str) -> Result<String, PgClusterError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.contains('\0') {
        Some("contains a NUL byte")
    } else if name.len() > MAX_IDENT_BYTES {
        Some("longer than 63 bytes")
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(PgClusterError::InvalidIdentifier {
            name: name.to_string(),
            reason,
        });
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// Single-quoted SQL literal. Doubling `'` is complete because the cluster runs with
/// `standard_conforming_strings = on` (the default since 9.1): backslashes are literal.
fn quote_literal(value: &str) -> Result<String, PgClusterError> {
    if value.contains('\0') {
        return Err(PgClusterError::InvalidLiteral);
    }
    Ok(format!("'{}'", value.replace('\'', "''")))
}

/// Everything but RFC 3986 unreserved characters is percent-encoded in URL components.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_quotes_and_rejects_bad_names() {
        assert_eq!(quote_ident(r#"a"b"#).unwrap(), r#""a""b""#);
        assert_eq!(quote_literal(r"it's \x").unwrap(), r"'it''s \x'");
        assert!(matches!(
            quote_literal("a\0"),
            Err(PgClusterError::InvalidLiteral)
        ));
        assert!(quote_ident("").is_err());
        assert!(quote_ident(&"x".repeat(64)).is_err());
        assert!(quote_ident(&"x".repeat(63)).is_ok());
    }

    #[test]
    fn percent_encoding_keeps_unreserved_only() {
        assert_eq!(percent_encode("ab-C_9.~"), "ab-C_9.~");
        assert_eq!(percent_encode("p@ss:w/rd é"), "p%40ss%3Aw%2Frd%20%C3%A9");
    }

    #[test]
    fn pidfile_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postmaster.pid");
        fs::write(&path, "42\n/d\n1\n5433\n\n127.0.0.1\n  0 0\nstarting\n").unwrap();
        assert!(!pidfile_ready(&path, 42));
        fs::write(&path, "42\n/d\n1\n5433\n\n127.0.0.1\n  0 0\nready   \n").unwrap();
        assert!(pidfile_ready(&path, 42));
        assert!(!pidfile_ready(&path, 43));
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
    }
}
