//! Helpers shared by the integration tests: one throwaway PostgreSQL cluster per test
//! binary, and unique names so tests sharing it stay independent.
//!
//! Each test binary includes this with `mod common;` and uses only some of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use jitgate_testkit::{PgCluster, PgClusterOptions};

/// The test binary's shared cluster, started on first use with the fast (non-durable)
/// settings. It is never dropped; its watchdog stops it and removes its temp dir when the
/// test process exits. Blocking: from async tests call it before heavy use or via
/// `spawn_blocking` (a one-off block of a test runtime is harmless).
pub fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let opts = PgClusterOptions {
            fast: true,
            ..PgClusterOptions::default()
        };
        match PgCluster::start(opts) {
            Ok(cluster) => cluster,
            Err(e) => panic!("starting the test PostgreSQL cluster: {e}"),
        }
    })
}

/// A second shared cluster whose server log is a record of everything it executed:
/// `log_statement=all` (every simple Query, extended Execute and fastpath call is logged
/// with its text), parameters in full (`log_parameter_max_length=-1`), the backend pid in
/// every line prefix (`%m [%p] `), and connections and disconnections (so one backend's
/// lines can be told apart from those of an earlier process with the same pid, and the
/// end of its log is known). Started on first use, like [`cluster`]; only test binaries
/// that compare against the server log use it (its log grows with every statement).
pub fn logging_cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let settings = [
            ("log_statement", "all"),
            ("log_parameter_max_length", "-1"),
            ("log_line_prefix", "%m [%p] "),
            ("log_connections", "on"),
            ("log_disconnections", "on"),
        ];
        let opts = PgClusterOptions {
            fast: true,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..PgClusterOptions::default()
        };
        match PgCluster::start(opts) {
            Ok(cluster) => cluster,
            Err(e) => panic!("starting the logging test PostgreSQL cluster: {e}"),
        }
    })
}

/// A name no other test (in this or a concurrently running test binary) uses, safe as an
/// unquoted lowercase identifier: `<prefix>_<pid>_<counter>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}_{}_{n}", prefix.to_ascii_lowercase(), std::process::id())
}

/// A database on the shared cluster with an owner role of its own (for a PostgreSQL grant
/// store, say): `(database, owner, owner's password)`, names starting with `prefix`.
pub async fn owned_database(prefix: &str) -> (String, String, String) {
    let name = unique_name(prefix);
    let owner = format!("{name}_owner");
    let password = format!("pw-{name}");
    let (n, o, p) = (name.clone(), owner.clone(), password.clone());
    match tokio::task::spawn_blocking(move || {
        let cluster = cluster();
        cluster.create_role(&o, &p)?;
        cluster.create_database(&n, &o)
    })
    .await
    {
        Ok(Ok(())) => (name, owner, password),
        Ok(Err(e)) => panic!("creating database {name}: {e}"),
        Err(e) => panic!("creating database {name}: {e}"),
    }
}

/// [`owned_database`] for a PostgreSQL grant store, and the file in `dir` holding its URL
/// (`store.postgres.url_file`).
pub async fn store_database(dir: &std::path::Path, prefix: &str) -> (String, std::path::PathBuf) {
    let (name, owner, password) = owned_database(prefix).await;
    let path = dir.join("store.url");
    if let Err(e) = std::fs::write(&path, cluster().url(&owner, &password, &name)) {
        panic!("writing {}: {e}", path.display());
    }
    (name, path)
}

/// Runs the `jitgate` binary with `args` in `cwd` and waits for it.
pub fn jitgate_cli(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    match std::process::Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(args)
        .current_dir(cwd)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("running jitgate {args:?}: {e}"),
    }
}

/// A finished command's status, stdout and stderr, for an assertion's message.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
