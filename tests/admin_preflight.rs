//! `jitgate check-config` logs in with each ephemeral target's admin credential and
//! checks, in the server's own catalogs, that it can create per-grant roles: CREATEROLE
//! (or superuser), each granted role existing and not a superuser, and on PostgreSQL 16+
//! ADMIN OPTION on each granted role. Every problem is one line naming target, role and
//! fix, with exit code 1; an unreachable server or a wrong password fails too, without
//! the password in the output. `jitgate serve` with the same problem still starts, and
//! warns in its log.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
mod harness;

use common::output_text as text;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use harness::{Env, EnvConfig};
use jitgate_testkit::{PgCluster, PgClusterOptions};

const ADMIN_PASSWORD: &str = "admin-preflight-secret-42";

fn check_config(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["check-config", "--config"])
        .arg(config)
        .current_dir(config.parent().unwrap())
        .output()
        .unwrap()
}

/// Lines of stderr that report a problem of `target` (one per problem).
fn problem_lines(out: &Output, target: &str) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with(&format!("target \"{target}\": ")))
        .map(str::to_owned)
        .collect()
}

fn server_version(env: &Env) -> i32 {
    env.superuser_sql("SHOW server_version_num")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_proves_the_admin_can_provision_or_names_each_fix() {
    let mut env = Env::start("preflight").await;
    // This test starts servers of its own on the config.
    env.server.take().unwrap().stop().await.unwrap();
    let t = env.target.clone();
    let admin = format!("{t}_admin");
    let rw = env.upstream_user.clone();
    let (missing, su) = (format!("{t}_missing"), format!("{t}_su"));
    env.cluster
        .create_role_with(&admin, ADMIN_PASSWORD, "NOCREATEROLE")
        .unwrap();
    env.superuser_sql(&format!("CREATE ROLE {su} SUPERUSER NOLOGIN"));
    env.make_ephemeral(
        &admin,
        ADMIN_PASSWORD,
        "",
        &format!("      ghost:\n        user: {missing}\n      root:\n        user: {su}\n"),
    );
    let version = server_version(&env);

    // Without CREATEROLE, with a missing and a superuser granted role: one line each.
    let out = check_config(&env.config_path);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let lines = problem_lines(&out, &t);
    assert_eq!(lines.len(), 3, "{}", text(&out));
    let one = |needle: &str| one_of(&lines, needle);
    let l = one("neither CREATEROLE nor SUPERUSER");
    assert!(
        l.contains(&format!("admin role \"{admin}\""))
            && l.contains(&format!("fix: ALTER ROLE \"{admin}\" CREATEROLE")),
        "{l}"
    );
    let l = one(&format!(
        "role \"{missing}\" (targets.{t}.roles.ghost) does not exist"
    ));
    assert!(
        l.contains(&format!("CREATE ROLE \"{missing}\" NOLOGIN")),
        "{l}"
    );
    let l = one(&format!(
        "role \"{su}\" (targets.{t}.roles.root) is a superuser"
    ));
    assert!(l.contains("fix:"), "{l}");
    // The summary still came first, and the check says what failing means.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("is valid"),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error: 3 problem(s)"),
        "{}",
        text(&out)
    );

    // serve only warns: it starts serving and says in its log what is wrong.
    let config = env.config_path.clone();
    let warning = tokio::task::spawn_blocking(move || serve_warning(&config, "neither CREATEROLE"))
        .await
        .unwrap();
    assert!(
        warning.contains("WARN")
            && warning.contains(&format!("fix: ALTER ROLE \"{admin}\" CREATEROLE"))
            && warning.contains("jitgate starts anyway"),
        "{warning}"
    );

    // Fixed as the lines say: CREATEROLE (and ADMIN OPTION, which 16+ needs), the
    // missing role created, the superuser one dropped from the config.
    env.superuser_sql(&format!(
        "ALTER ROLE {admin} CREATEROLE; CREATE ROLE {missing} NOLOGIN"
    ));
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(
        &env.config_path,
        yaml.replace(&format!("      root:\n        user: {su}\n"), ""),
    )
    .unwrap();
    let out = check_config(&env.config_path);
    if version >= 160_000 {
        // CREATEROLE alone is not enough from 16 on: each granted role needs ADMIN.
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let l = one_of(
            &problem_lines(&out, &t),
            &format!("cannot grant role \"{rw}\""),
        );
        assert!(
            l.contains(&format!("GRANT \"{rw}\" TO \"{admin}\" WITH ADMIN OPTION")),
            "{l}"
        );
        env.superuser_sql(&format!(
            "GRANT {rw} TO {admin} WITH ADMIN OPTION; GRANT {missing} TO {admin} WITH ADMIN OPTION"
        ));
    }
    let out = check_config(&env.config_path);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "target \"{t}\": admin role \"{admin}\" can create per-grant roles (PostgreSQL {}.",
            version / 10_000
        )),
        "{stdout}"
    );

    // A wrong password: one line with the server's refusal, never the password.
    std::fs::write(env.dir.path().join("admin.password"), "wrong-password-xyz").unwrap();
    let out = check_config(&env.config_path);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let l = one_of(
        &problem_lines(&out, &t),
        &format!("cannot log in as admin role \"{admin}\""),
    );
    assert!(l.contains("password authentication failed"), "{l}");
    assert!(!text(&out).contains("wrong-password-xyz"), "{}", text(&out));

    // An unreachable server: a failure with the connection error, never the password.
    std::fs::write(env.dir.path().join("admin.password"), ADMIN_PASSWORD).unwrap();
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(
        &env.config_path,
        yaml.replace(
            &format!("    port: {}\n", env.cluster.port()),
            &format!("    port: {closed_port}\n"),
        ),
    )
    .unwrap();
    let out = check_config(&env.config_path);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let l = one_of(
        &problem_lines(&out, &t),
        &format!("at 127.0.0.1:{closed_port}"),
    );
    assert!(
        l.contains("cannot log in") && l.contains("could not connect"),
        "{l}"
    );
    assert!(!text(&out).contains(ADMIN_PASSWORD), "{}", text(&out));
    env.stop().await;
}

/// A cluster whose pg_hba.conf asks members of `pf_cleartext` for a cleartext password.
fn cleartext_cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let opts = PgClusterOptions {
            fast: true,
            hba: vec!["host all +pf_cleartext 127.0.0.1/32 password".into()],
            ..PgClusterOptions::default()
        };
        let cluster = PgCluster::start(opts).expect("start the cleartext test cluster");
        cluster
            .psql("postgres", "CREATE ROLE pf_cleartext NOLOGIN")
            .expect("create the hba group");
        cluster
    })
}

/// The check logs in as the provisioner does: a server asking the admin role for a
/// method the target does not allow gets nothing, and the check fails saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_holds_the_admin_login_to_the_targets_auth_methods() {
    let cluster = tokio::task::spawn_blocking(cleartext_cluster)
        .await
        .unwrap();
    let mut env = Env::start_config(
        "preflight_pw",
        EnvConfig {
            cluster: Some(cluster),
            ..EnvConfig::default()
        },
    )
    .await;
    env.server.take().unwrap().stop().await.unwrap();
    let t = env.target.clone();
    let admin = format!("{t}_admin");
    cluster
        .create_role_with(&admin, ADMIN_PASSWORD, "CREATEROLE")
        .unwrap();
    env.superuser_sql(&format!("GRANT pf_cleartext TO {admin}"));
    env.make_ephemeral(&admin, ADMIN_PASSWORD, "", "");

    let out = check_config(&env.config_path);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let l = one_of(
        &problem_lines(&out, &t),
        &format!("cannot log in as admin role \"{admin}\""),
    );
    assert!(
        l.contains("password (cleartext)") && l.contains(&format!("targets.{t}.auth_methods")),
        "{l}"
    );
    assert!(!text(&out).contains(ADMIN_PASSWORD), "{}", text(&out));

    // Allowed for this target, the same login works and the check passes.
    let yaml = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(
        &env.config_path,
        yaml.replace(
            "    provisioning: ephemeral\n",
            "    provisioning: ephemeral\n    auth_methods: [scram-sha-256, password]\n",
        ),
    )
    .unwrap();
    let out = check_config(&env.config_path);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("can create per-grant roles"),
        "{}",
        text(&out)
    );
    env.stop().await;
}

/// Runs `jitgate serve` on `config` until its log has said both that it is serving and a
/// line containing `needle`; returns that line. Panics after a generous bound.
fn serve_warning(config: &Path, needle: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["serve", "--config"])
        .arg(config)
        .current_dir(config.parent().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut serving, mut found, mut seen) = (false, None, Vec::new());
    while !(serving && found.is_some()) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                serving |= line.contains("jitgate is serving");
                if line.contains(needle) {
                    found = Some(line.clone());
                }
                seen.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                panic!("serve did not both start and warn about {needle:?}: {seen:#?}");
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    found.unwrap()
}

fn one_of(lines: &[String], needle: &str) -> String {
    let found: Vec<_> = lines.iter().filter(|l| l.contains(needle)).collect();
    assert_eq!(found.len(), 1, "{needle:?} in one line of {lines:?}");
    found[0].clone()
}
