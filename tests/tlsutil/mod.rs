//! TLS test support: throwaway certificate authorities and leaf certificates made with
//! rcgen at test time, a jitgate environment whose config has TLS on the client side
//! and/or towards the target, SSL switched on once on the test binary's shared cluster,
//! psql runs with a hard time limit, and a few raw-wire helpers for the startup phase.
//!
//! Nothing here sleeps to synchronise: waits poll a condition and give up after a
//! generous bound, killing any child process they started.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use jitgate::config;
use jitgate::serve::{self, Server};
use jitgate_audit::Event;
use jitgate_policy::{Grant, IssueRequest, SignedDuration};
use jitgate_proxy::auth::ScramVerifier;
use jitgate_proxy::registry::SessionInfo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::common;
use super::harness::{ADMIN_TOKEN, ALICE, ALICE_PASSWORD, ROLE};

/// Bound for anything that should take a second or two on an idle machine.
pub const LIMIT: Duration = Duration::from_secs(30);
/// How often bounded waits look at their condition again.
const POLL: Duration = Duration::from_millis(20);

/// A certificate authority that exists only for one test run.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A leaf certificate and its private key, both PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    /// A self-signed CA whose subject CN is `name` (distinct names keep CAs apart).
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `sans` (DNS names or IP addresses) signed by this CA.
    pub fn leaf(&self, sans: &[&str]) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "jitgate test server");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// Where SSL on the shared cluster comes from: its certificate names `localhost` and
/// `127.0.0.1` and is signed by this CA.
pub struct UpstreamSsl {
    pub ca_pem: String,
}

/// Switches SSL on in the test binary's shared cluster (once; later calls return the
/// same CA). Plain connections keep working: pg_hba has `host` lines, not `hostnossl`.
pub async fn upstream_ssl() -> &'static UpstreamSsl {
    static SSL: OnceLock<UpstreamSsl> = OnceLock::new();
    tokio::task::spawn_blocking(|| SSL.get_or_init(enable_upstream_ssl))
        .await
        .expect("enabling SSL on the test cluster")
}

/// Blocking: writes the server certificate into the data dir, reloads, and proves with
/// a direct `sslmode=verify-full` psql connection that the cluster now serves it.
fn enable_upstream_ssl() -> UpstreamSsl {
    let cluster = common::cluster();
    let ca = Ca::new("jitgate upstream test CA");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]);
    let data = cluster.data_dir();
    // The server runs as the data dir's owner (`postgres` when the tests run as root).
    let owner = std::fs::metadata(data).unwrap();
    for (name, contents, mode) in [
        ("jitgate_server.crt", &leaf.cert_pem, 0o644),
        ("jitgate_server.key", &leaf.key_pem, 0o600),
    ] {
        let path = data.join(name);
        std::fs::write(&path, contents).unwrap();
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    cluster
        .psql(
            "postgres",
            "ALTER SYSTEM SET ssl_cert_file = 'jitgate_server.crt';\n\
             ALTER SYSTEM SET ssl_key_file = 'jitgate_server.key';\n\
             ALTER SYSTEM SET ssl = on;\n\
             SELECT pg_reload_conf();\n",
        )
        .unwrap();
    let start = Instant::now();
    loop {
        if cluster.psql("postgres", "SHOW ssl").unwrap() == "on" {
            break;
        }
        assert!(
            start.elapsed() < LIMIT,
            "the cluster did not turn ssl on; log: {}",
            log_tail(&cluster.log_path())
        );
        std::thread::sleep(POLL);
    }
    // SHOW ssl = on even when loading the certificate failed: prove TLS really works,
    // verified against our CA, without jitgate in the way.
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let mut direct = psql_base();
    direct
        .args([
            "-c",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ])
        .env("PGHOST", "localhost")
        .env("PGHOSTADDR", "127.0.0.1")
        .env("PGPORT", cluster.port().to_string())
        .env("PGUSER", cluster.superuser())
        .env("PGDATABASE", "postgres")
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &ca_path);
    let out = output_within(direct, LIMIT);
    assert!(
        out.status.success() && stdout(&out) == "t",
        "direct TLS connection to the cluster failed: {}\nlog: {}",
        describe(&out),
        log_tail(&cluster.log_path())
    );
    UpstreamSsl {
        ca_pem: ca.pem().to_owned(),
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// One test's jitgate, with its own database, upstream role, grant store and audit log.
pub struct TlsEnv {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    /// Target name = upstream database name.
    pub target: String,
    pub upstream_user: String,
    /// Kept so tests can prove it never reaches a client.
    pub upstream_password: String,
}

/// What goes into one environment's config.
pub struct EnvSpec<'a> {
    /// Prefix of the target/database name.
    pub prefix: &'a str,
    /// Client-facing certificate (`tls:`), if any.
    pub client_tls: Option<&'a Leaf>,
    /// The target's `tls:` value as a YAML flow mapping, e.g. `{ mode: disable }`.
    pub upstream_tls: &'a str,
    /// Extra files (name, contents) written next to the config, e.g. CA certificates.
    pub files: &'a [(&'a str, &'a str)],
    /// Where the target points; `None` = the shared cluster.
    pub upstream_port: Option<u16>,
    /// `tls.required` (with `client_tls`).
    pub tls_required: bool,
    /// The admin API's certificate (`admin.tls`, with `ca.pem` as its `ca_file`), if any.
    pub admin_tls: Option<&'a Leaf>,
    /// The `store:` value as YAML; `None` = a SQLite file.
    pub store: Option<&'a str>,
}

impl TlsEnv {
    /// Creates the database and role, writes the config and starts jitgate.
    pub async fn start(spec: EnvSpec<'_>) -> TlsEnv {
        Self::try_start(spec)
            .await
            .unwrap_or_else(|(e, _)| panic!("start server: {e}"))
    }

    /// [`TlsEnv::start`], returning the error of a server that would not start (and its
    /// directory, to look at).
    pub async fn try_start(
        spec: EnvSpec<'_>,
    ) -> Result<TlsEnv, (jitgate::error::Error, tempfile::TempDir)> {
        let target = common::unique_name(spec.prefix);
        let upstream_user = format!("{target}_rw");
        let upstream_password = format!("upstream-pw-{target}");
        {
            let (t, u, p) = (
                target.clone(),
                upstream_user.clone(),
                upstream_password.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let cluster = common::cluster();
                cluster.create_role(&u, &p).unwrap();
                cluster.create_database(&t, &u).unwrap();
            })
            .await
            .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, contents: &str| {
            std::fs::write(dir.path().join(name), contents).unwrap();
        };
        put("role.password", &upstream_password);
        put("admin.token", ADMIN_TOKEN);
        for (name, contents) in spec.files {
            put(name, contents);
        }
        let client_tls = match spec.client_tls {
            Some(leaf) => {
                put("proxy.crt", &leaf.cert_pem);
                put("proxy.key", &leaf.key_pem);
                if spec.tls_required {
                    "tls:\n  cert_file: proxy.crt\n  key_file: proxy.key\n  required: true\n"
                } else {
                    "tls:\n  cert_file: proxy.crt\n  key_file: proxy.key\n"
                }
            }
            None => "",
        };
        let admin_tls = match spec.admin_tls {
            Some(leaf) => {
                put("admin.crt", &leaf.cert_pem);
                put("admin.key", &leaf.key_pem);
                "  tls: { cert_file: admin.crt, key_file: admin.key, ca_file: ca.pem }\n"
            }
            None => "",
        };
        let store = spec.store.unwrap_or("{ sqlite: grants.db }");
        let yaml = format!(
            "listen: 127.0.0.1:0\n\
             login_timeout: 10s\n\
             drain_timeout: 2s\n\
             {client_tls}\
             identities:\n  {ALICE}:\n    scram_verifier: \"{alice}\"\n\
             targets:\n  {target}:\n    host: 127.0.0.1\n    port: {port}\n    database: {target}\n    tls: {upstream_tls}\n    roles:\n      {ROLE}:\n        user: {upstream_user}\n        password_file: role.password\n\
             store: {store}\n\
             audit:\n  path: audit.jsonl\n\
             admin:\n  listen: 127.0.0.1:0\n  token_file: admin.token\n{admin_tls}",
            alice = ScramVerifier::from_password(ALICE_PASSWORD),
            port = spec.upstream_port.unwrap_or_else(|| common::cluster().port()),
            upstream_tls = spec.upstream_tls,
        );
        let config_path = dir.path().join("jitgate.yaml");
        put("jitgate.yaml", &yaml);
        let config = config::load(&config_path).expect("load config");
        let server = match serve::start(config).await {
            Ok(server) => server,
            Err(e) => return Err((e, dir)),
        };
        Ok(TlsEnv {
            server: Some(server),
            dir,
            target,
            upstream_user,
            upstream_password,
        })
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    pub fn proxy_port(&self) -> u16 {
        self.server().proxy_addr.port()
    }

    /// A file in this env's directory (the config's relative paths resolve here).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues alice a grant on this env's target for `for_`.
    pub async fn grant(&self, for_: Duration) -> Grant {
        self.server()
            .engine
            .issue(IssueRequest {
                identity: ALICE.into(),
                target: self.target.clone(),
                role: ROLE.into(),
                duration: SignedDuration::try_from(for_).unwrap(),
                not_before: None,
                reason: "tls test".into(),
                issued_by: "tests".into(),
            })
            .await
            .unwrap()
    }

    /// Connects as alice with tokio-postgres (plain on the client side), bounded by
    /// [`LIMIT`]; the connection task is spawned.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.proxy_port())
            .user(ALICE)
            .password(ALICE_PASSWORD)
            .dbname(&self.target)
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) =
            tokio::time::timeout(LIMIT, config.connect(tokio_postgres::NoTls))
                .await
                .expect("the connection attempt must not hang")?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Every audit event so far.
    pub fn audit_events(&self) -> Vec<Event> {
        jitgate_audit::read_events(&self.path("audit.jsonl"))
            .unwrap()
            .map(|e| e.unwrap())
            .collect()
    }

    /// A psql command connecting to the proxy as alice (no SSL settings yet).
    pub fn psql(&self) -> Command {
        let mut cmd = psql_base();
        cmd.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.proxy_port().to_string())
            .env("PGUSER", ALICE)
            .env("PGPASSWORD", ALICE_PASSWORD)
            .env("PGDATABASE", &self.target);
        cmd
    }

    /// Waits until the registry lists a session whose id is not in `seen`, and returns it.
    pub async fn new_session(&self, seen: &[uuid::Uuid]) -> SessionInfo {
        let start = Instant::now();
        loop {
            let listed = self.server().registry.list();
            if let Some(s) = listed.into_iter().find(|s| !seen.contains(&s.session_id)) {
                return s;
            }
            assert!(start.elapsed() < LIMIT, "no new session was registered");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the registry lists no session (ended sessions deregister promptly).
    pub async fn no_sessions(&self) {
        let start = Instant::now();
        while !self.server().registry.is_empty() {
            assert!(
                start.elapsed() < LIMIT,
                "sessions still listed: {:?}",
                self.server().registry.list()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
    }
}

/// psql with no ambient configuration: no psqlrc, unaligned tuples-only output, errors
/// stop it, GSS encryption off (so the first packet is the SSLRequest or the startup).
pub fn psql_base() -> Command {
    let mut cmd = Command::new(common::cluster().bin("psql"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGGSSENCMODE", "disable")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    cmd
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn describe(out: &Output) -> String {
    format!(
        "{}; stdout: {:?}; stderr: {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running child that is killed if dropped while still running.
pub struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Running {
    /// Starts `cmd` with piped stdin/stdout/stderr.
    pub fn spawn(mut cmd: Command) -> Running {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let stdin = child.stdin.take();
        Running { child, stdin }
    }

    /// Writes `input` to its stdin, closes stdin and waits (blocking) up to `limit` for
    /// it to exit; kills it and panics after that.
    pub fn finish(mut self, input: &str, limit: Duration) -> Output {
        if let Some(mut stdin) = self.stdin.take() {
            use std::io::Write;
            // A child that already exited shows up in its status and stderr.
            let _ = stdin.write_all(input.as_bytes());
        }
        wait_within(&mut self.child, limit)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to completion (blocking), killing it and panicking after `limit`.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    wait_within(&mut child, limit)
}

/// [`output_within`] off the async workers (the proxy runs on the same runtime).
pub async fn run_within(cmd: Command, limit: Duration) -> Output {
    tokio::task::spawn_blocking(move || output_within(cmd, limit))
        .await
        .expect("client program task")
}

fn wait_within(child: &mut Child, limit: Duration) -> Output {
    // Drain the pipes in threads so a chatty child cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap_or_default();
            panic!(
                "child did not finish within {limit:?}; stderr: {:?}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(POLL);
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// SSLRequest: length 8, code 80877103.
/// <https://www.postgresql.org/docs/current/protocol-message-formats.html>
pub fn ssl_request() -> Vec<u8> {
    let mut out = 8i32.to_be_bytes().to_vec();
    out.extend_from_slice(&80877103i32.to_be_bytes());
    out
}

/// A protocol 3.0 StartupMessage with `user` and `database`.
pub fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = 196608i32.to_be_bytes().to_vec();
    for s in ["user", user, "database", database] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = i32::try_from(body.len() + 4)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(&body);
    out
}

/// One backend message split off the front of `bytes`: (type, body, rest).
pub fn split_message(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let len = usize::try_from(i32::from_be_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
    let body = rest.get(4..len)?;
    Some((tag, body, &rest[len..]))
}

/// The fields of an ErrorResponse body, as (field type, value).
pub fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut fields = Vec::new();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .expect("NUL-terminated field");
        fields.push((kind, String::from_utf8_lossy(&tail[..end]).into_owned()));
        rest = &tail[end + 1..];
    }
    fields
}

/// Reads until the peer closes (or `limit` passes, which fails the test).
pub async fn read_to_close(stream: &mut tokio::net::TcpStream, limit: Duration) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the proxy neither answered nor closed within {limit:?}; got {bytes:?}"
    );
    bytes
}

/// What a run under [`slow_consumer`] did.
#[derive(Debug)]
pub struct SlowRun {
    /// Bytes of stdout read.
    pub received: usize,
    /// Exit status, or `None` when it had to be killed at the limit.
    pub status: Option<std::process::ExitStatus>,
    pub stderr: String,
}

/// Runs `cmd` (blocking) while reading its stdout `chunk` bytes at a time with `pause`
/// between reads: a deliberately slow consumer, so everything upstream of it (psql's
/// socket, the proxy's writes) keeps backing up. Killed after `limit`, or when no output
/// arrives for `stall` (then it is stuck: it is not being read slowly, it is not fed).
pub fn slow_consumer(
    mut cmd: Command,
    chunk: usize,
    pause: Duration,
    stall: Duration,
    limit: Duration,
) -> SlowRun {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let received = Arc::new(AtomicUsize::new(0));
    let mut pipe = child.stdout.take().expect("stdout");
    let counter = Arc::clone(&received);
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; chunk];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            counter.fetch_add(n, Ordering::Relaxed);
            std::thread::sleep(pause);
        }
    });
    let mut err_pipe = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err_pipe.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let mut last_progress = Instant::now();
    let mut last_count = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break Some(status);
        }
        let now = received.load(Ordering::Relaxed);
        if now != last_count {
            last_count = now;
            last_progress = Instant::now();
        }
        if start.elapsed() > limit || last_progress.elapsed() > stall {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL);
    };
    let _ = reader.join();
    SlowRun {
        received: received.load(Ordering::Relaxed),
        status,
        stderr: err_reader.join().unwrap_or_default(),
    }
}
