//! `jitgate-bench`: one command that measures jitgate against PostgreSQL direct, a null
//! relay and PgBouncer, side by side, and writes BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release -p jitgate-bench -- [--quick] [--out BENCHMARKS.md]
//! ```
//!
//! # Layout
//! - `cluster`: the throwaway PostgreSQL (durable, max_connections 1200, SSL on).
//! - `bouncer`: PgBouncer — found, or installed from Debian's package when root.
//! - `jitgate`: configs for P (`jitgate serve`) and P0 (`p0-proxy`), grants.
//! - `tls`: one self-signed certificate for every target's TLS.
//! - `pgbench`: running pgbench, parsing its summary and `-l` logs.
//! - `matrix`: cells × targets × rotated rounds, CPU per transaction.
//! - `idle`: RSS per idle session. `enforce`: deadline → socket closed / backend gone.
//! - `firstlogin`: a grant's first login with ephemeral users against the shared role,
//!   with the provisioning statements counted in the server's log (`serverlog`).
//! - `wire`: raw SCRAM logins that keep the socket.
//! - `report`: the markdown. `machine`: versions and hardware. `stats`, `procs`: helpers.
//! - `kept`: the hand-written block of the existing report, carried into the new one.
//!
//! What it runs is described in the report's Method section and in the README.

mod bouncer;
mod cluster;
mod enforce;
mod firstlogin;
mod idle;
mod jitgate;
mod kept;
mod machine;
mod matrix;
mod pgbench;
mod procs;
mod report;
mod serverlog;
mod stats;
mod tls;
mod wire;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use rand::distributions::{Alphanumeric, DistString};

use crate::cluster::Cluster;
use crate::jitgate::Identity;
use crate::matrix::Target;
use crate::pgbench::Conn;
use crate::procs::Proc;

/// pgbench scale factor: 1 000 000 accounts, ~160 MB.
const SCALE: u32 = 10;
/// The upstream role and database every target logs in as.
const ROLE: &str = "bench";
const DATABASE: &str = "bench";
/// The admin role of the ephemeral target Pe (CREATEROLE, ADMIN on `ROLE`).
const EPHEMERAL_ADMIN: &str = "bench_admin";

/// Measures jitgate against PostgreSQL direct (D), a null relay (R), PgBouncer (B) and
/// jitgate with audit off (P0), and writes BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "jitgate-bench")]
struct Args {
    /// One round of 3 s runs over fewer cells and 200 enforcement sessions: proves the
    /// harness works end to end in a few minutes. Not a measurement to quote.
    #[arg(long)]
    quick: bool,
    /// Where to write the report [default: BENCHMARKS.md at the repository root].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Rounds of the matrix [default: 3, or 1 with --quick].
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per pgbench run [default: 10, or 3 with --quick].
    #[arg(long)]
    seconds: Option<u32>,
    /// Sessions in the enforcement measurement [default: 1000, or 200 with --quick].
    #[arg(long)]
    sessions: Option<usize>,
    /// Identities (each with its own grant) in the first-login measurement with
    /// ephemeral users [default: 200, or 50 with --quick; 0 skips it].
    #[arg(long)]
    first_logins: Option<usize>,
    /// Do not run `cargo build` for the jitgate and helper binaries first.
    #[arg(long)]
    no_build: bool,
    /// A line to add to the report's notes (e.g. "other builds ran during this run").
    #[arg(long)]
    note: Vec<String>,
    /// Keep the work directory (logs, configs, audit log) instead of removing it.
    #[arg(long)]
    keep: bool,
    /// Run only the cells whose name contains this text (repeatable; e.g. `--only "-C"`
    /// for the connection storms, `--only "c16"`, `--only first-login` for the first
    /// logins with ephemeral users). For focused checks, not for reports.
    #[arg(long, value_name = "TEXT")]
    only: Vec<String>,
    /// Skip the memory-per-idle-session measurement.
    #[arg(long)]
    skip_memory: bool,
    /// Also run jitgate (audit on) with this `runtime:` section (YAML, e.g.
    /// `"{ session_threads: 2 }"`) as target `Pv`, side by side with P (the defaults):
    /// how runtime choices are measured.
    #[arg(long, value_name = "YAML")]
    runtime_variant: Option<String>,
    /// Also run this jitgate binary (audit on; e.g. one built from the previous main) as
    /// target `Pv`, side by side with P: how a change's cost is measured. Combines with
    /// `--runtime-variant`.
    #[arg(long, value_name = "BINARY")]
    variant_bin: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tokio::select! {
        r = bench(args) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; stopped everything this run started"),
    }
}

fn random_password() -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
}

/// Builds the binaries the runner starts (quick when they are up to date).
fn build(repo: &Path) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("jitgate-bench: cargo build --release (jitgate, null-relay, p0-proxy)…");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "jitgate", "--bin", "jitgate"])
        .args(["-p", "jitgate-bench", "--bins"])
        .current_dir(repo)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(())
}

fn bin(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing; build it with `cargo build --release --workspace`",
            path.display()
        );
    }
    Ok(path)
}

async fn bench(args: Args) -> Result<()> {
    let started = Instant::now();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the bench crate lives inside the repository")?
        .to_path_buf();
    if !args.no_build {
        build(&repo)?;
    }
    let exe_dir = std::env::current_exe()?
        .parent()
        .context("locating target/release")?
        .to_path_buf();
    let jitgate_bin = bin(&exe_dir, "jitgate")?;
    let relay_bin = bin(&exe_dir, "null-relay")?;
    let p0_bin = bin(&exe_dir, "p0-proxy")?;

    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let seconds = args
        .seconds
        .unwrap_or(if args.quick { 3 } else { 10 })
        .max(1);
    let n_enforce = args.sessions.unwrap_or(if args.quick { 200 } else { 1000 });
    let selected =
        |name: &str| args.only.is_empty() || args.only.iter().any(|o| name.contains(o.as_str()));
    let n_first = if selected(firstlogin::NAME) {
        args.first_logins
            .unwrap_or(if args.quick { 50 } else { 200 })
    } else {
        0
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| repo.join("BENCHMARKS.md"));
    let load_before = machine::load_average();

    let work = tempfile::Builder::new()
        .prefix("jitgate-bench-")
        .tempdir_in("/tmp")?;
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755))?;
    let dir = work.path().to_path_buf();
    eprintln!("jitgate-bench: work dir {}", dir.display());
    let os_user = procs::server_user()?;
    let certs = tls::make(&dir)?;

    eprintln!("jitgate-bench: starting PostgreSQL…");
    let cluster = {
        let (d, c) = (dir.clone(), certs.clone());
        tokio::task::spawn_blocking(move || Cluster::start(&d, &c, os_user)).await??
    };
    let password = random_password();
    cluster.psql(
        "postgres",
        &format!("SET password_encryption = 'scram-sha-256'; CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'"),
    )?;
    cluster.psql(
        "postgres",
        &format!("CREATE DATABASE {DATABASE} OWNER {ROLE}"),
    )?;
    // Pe's admin role; every statement it completes is logged (counted by `firstlogin`).
    let ephemeral_password = random_password();
    cluster.psql(
        "postgres",
        &format!(
            "SET password_encryption = 'scram-sha-256'; \
             CREATE ROLE {EPHEMERAL_ADMIN} LOGIN CREATEROLE PASSWORD '{ephemeral_password}'; \
             GRANT {ROLE} TO {EPHEMERAL_ADMIN} WITH ADMIN OPTION; \
             ALTER ROLE {EPHEMERAL_ADMIN} SET log_min_duration_statement = 0"
        ),
    )?;
    let role_verifier = cluster.psql(
        "postgres",
        &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{ROLE}'"),
    )?;
    let base_conn = Conn {
        port: cluster.port(),
        user: ROLE.into(),
        password: password.clone(),
        dbname: DATABASE.into(),
    };
    eprintln!("jitgate-bench: pgbench -i -s {SCALE}…");
    pgbench::init(&base_conn, SCALE).await?;
    let large_script = dir.join("large.sql");
    std::fs::write(
        &large_script,
        format!(
            "\\set aid random(1, {} - 99)\n\
             SELECT aid, bid, abalance, filler FROM pgbench_accounts WHERE aid BETWEEN :aid AND :aid + 99;\n",
            100_000 * SCALE
        ),
    )?;

    eprintln!(
        "jitgate-bench: making {} SCRAM verifiers…",
        n_enforce + n_first + 1
    );
    let enforce_password = random_password();
    let (identities, enforce_ids, first_ids) = {
        let (pw, epw) = (password.clone(), enforce_password.clone());
        tokio::task::spawn_blocking(move || {
            let mut ids = vec![Identity::new(ROLE, &pw)];
            let mut names = Vec::new();
            for i in 0..n_enforce {
                let name = format!("e{i:04}");
                ids.push(Identity::new(&name, &epw));
                names.push((name, epw.clone()));
            }
            let mut first = Vec::new();
            for i in 0..n_first {
                let name = format!("f{i:04}");
                ids.push(Identity::new(&name, &epw));
                first.push((name, epw.clone()));
            }
            (ids, names, first)
        })
        .await?
    };

    let mut notes: Vec<String> = args.note.clone();
    if load_before > 0.5 {
        notes.push(format!(
            "The machine was busy when the run started (1-minute load average {load_before:.2} \
             on {} CPUs): other work competed for CPU during this run, so absolute numbers are \
             depressed and noisier; the ratios are still side by side.",
            std::thread::available_parallelism().map_or(0, usize::from)
        ));
    }

    eprintln!("jitgate-bench: starting the null relay, PgBouncer, jitgate (P) and jitgate audit-off (P0)…");
    let relay_port = procs::free_port()?;
    let mut relay_cmd = Command::new(&relay_bin);
    relay_cmd
        .arg(procs::loopback(relay_port).to_string())
        .arg(procs::loopback(cluster.port()).to_string());
    let relay_log = dir.join("null-relay.log");
    let mut relay = Proc::spawn("R", relay_cmd, &relay_log)?;
    relay.wait_listening(procs::loopback(relay_port), &relay_log)?;

    let mut pgbouncer_version = "not run".to_owned();
    let bouncer = match bouncer::find_or_install() {
        Ok(bin) => {
            let spec = bouncer::BouncerSpec {
                dir: &dir.join("pgbouncer"),
                pg_port: cluster.port(),
                database: DATABASE,
                user: ROLE,
                verifier: &role_verifier,
                certs: &certs,
                os_user,
            };
            let b = bouncer::start(&bin, &spec)?;
            pgbouncer_version = b.version.clone();
            Some(b)
        }
        Err(e) => {
            eprintln!("jitgate-bench: {e:#}\njitgate-bench: skipping the PgBouncer (B) column");
            notes.push(format!("PgBouncer was not measured: {e:#}"));
            None
        }
    };

    let spec = jitgate::JitgateSpec {
        pg_port: cluster.port(),
        database: DATABASE,
        upstream_user: ROLE,
        upstream_password: &password,
        identities: &identities,
        certs: &certs,
        ephemeral: None,
    };
    let mut p = jitgate::start("P", &jitgate_bin, &dir.join("p"), &spec, None).await?;
    let mut p0 = jitgate::start("P0", &p0_bin, &dir.join("p0"), &spec, None).await?;
    const DAY_MS: i64 = 24 * 3600 * 1000;
    jitgate::grant(&p.admin, ROLE, None, DAY_MS).await?;
    jitgate::grant(&p0.admin, ROLE, None, DAY_MS).await?;
    let mut pv = if args.runtime_variant.is_some() || args.variant_bin.is_some() {
        let runtime = args.runtime_variant.as_deref();
        let bin = args.variant_bin.as_deref().unwrap_or(&jitgate_bin);
        let pv = jitgate::start("Pv", bin, &dir.join("pv"), &spec, runtime).await?;
        jitgate::grant(&pv.admin, ROLE, None, DAY_MS).await?;
        if let Some(runtime) = runtime {
            notes.push(format!(
                "`Pv` is jitgate (audit on) with `runtime: {runtime}`; P has the default \
                 runtime settings."
            ));
        }
        if let Some(bin) = &args.variant_bin {
            notes.push(format!(
                "`Pv` is the jitgate binary `{}` (audit on), side by side with P.",
                bin.display()
            ));
        }
        Some(pv)
    } else {
        None
    };

    let mut targets = vec![
        Target {
            label: "D",
            port: cluster.port(),
            pid: None,
            only: None,
        },
        Target {
            label: "R",
            port: relay_port,
            pid: Some(relay.pid()),
            only: None,
        },
    ];
    if let Some(b) = &bouncer {
        targets.push(Target {
            label: "B",
            port: b.port,
            pid: Some(b.proc.pid()),
            only: None,
        });
    }
    targets.push(Target {
        label: "P",
        port: p.port,
        pid: Some(p.proc.pid()),
        only: None,
    });
    targets.push(Target {
        label: "P0",
        port: p0.port,
        pid: Some(p0.proc.pid()),
        only: None,
    });
    if let Some(pv) = &pv {
        targets.push(Target {
            label: "Pv",
            port: pv.port,
            pid: Some(pv.proc.pid()),
            only: None,
        });
    }
    let mut cells = matrix::cells(args.quick, &large_script);
    if !args.only.is_empty() {
        cells.retain(|c| selected(&c.name));
        notes.push(format!(
            "Only the cells matching {:?} were run (`--only`).",
            args.only
        ));
    }
    // Pe: jitgate with ephemeral users, for the connection storms and the first logins.
    let mut pe = if n_first > 0 || cells.iter().any(|c| c.kind == matrix::Kind::Storm) {
        let pe_spec = jitgate::JitgateSpec {
            ephemeral: Some(jitgate::Ephemeral {
                admin_user: EPHEMERAL_ADMIN,
                admin_password: &ephemeral_password,
            }),
            ..spec
        };
        let pe = jitgate::start("Pe", &jitgate_bin, &dir.join("pe"), &pe_spec, None).await?;
        jitgate::grant(&pe.admin, ROLE, None, DAY_MS).await?;
        targets.push(Target {
            label: "Pe",
            port: pe.port,
            pid: Some(pe.proc.pid()),
            only: Some(matrix::Kind::Storm),
        });
        Some(pe)
    } else {
        None
    };
    let labels: Vec<&'static str> = targets.iter().map(|t| t.label).collect();
    let runs: usize = rounds
        * cells
            .iter()
            .map(|c| targets.iter().filter(|t| t.runs(c)).count())
            .sum::<usize>();
    // Measured: a run takes its duration plus ~0.3 s; setup, memory and warm-up ~2 min;
    // enforcement its lead time (10 s + 15 ms per session) plus ~15 s.
    // First logins: ~30 ms per login on a busy box, four logins per identity.
    let estimate_min = (runs as f64 * (f64::from(seconds) + 0.3)
        + 120.0
        + 25.0
        + n_enforce as f64 * 0.015
        + n_first as f64 * 0.12)
        / 60.0;
    eprintln!(
        "jitgate-bench: {} cells × up to {} targets × {rounds} round(s) × {seconds} s = {runs} runs; \
         about {estimate_min:.0} min in all",
        cells.len(),
        targets.len()
    );

    let rss = if args.skip_memory {
        Vec::new()
    } else {
        eprintln!("jitgate-bench: memory per idle session (0/100/500 sessions)…");
        let (rss, rss_notes) = idle::measure_proxies(&targets, ROLE, &password, DATABASE).await;
        notes.extend(rss_notes);
        rss
    };

    let logs = dir.join("pgbench");
    std::fs::create_dir_all(&logs)?;
    eprintln!("jitgate-bench: warm-up…");
    let warm = matrix::Cell {
        name: "warm-up".into(),
        kind: matrix::Kind::SelectOnly,
        workload: pgbench::Workload {
            script: pgbench::Script::SelectOnly,
            mode: "prepared",
            clients: 16,
            threads: 2,
            connect_each: false,
            tls: false,
        },
    };
    let _ = matrix::run(
        &targets,
        std::slice::from_ref(&warm),
        1,
        if args.quick { 1 } else { 3 },
        &base_conn,
        &logs,
    )
    .await;

    eprintln!("jitgate-bench: the matrix…");
    let results = matrix::run(&targets, &cells, rounds, seconds, &base_conn, &logs).await;

    // Enforcement before the first logins: their 400 upstream connections stay parked
    // (`upstream_reuse`, 60 s idle) and, with 1,000 more, would pass the cluster's
    // `max_connections`.
    let enforcement = if n_enforce > 0 {
        eprintln!("jitgate-bench: enforcement with {n_enforce} sessions…");
        match enforce::run(
            &p.admin,
            procs::loopback(p.port),
            &enforce_ids,
            &cluster.admin_conninfo(),
        )
        .await
        {
            Ok(e) => Some(e),
            Err(e) => {
                eprintln!("  enforcement failed: {e:#}");
                notes.push(format!("The enforcement measurement failed: {e:#}"));
                None
            }
        }
    } else {
        None
    };

    let first_logins = match &pe {
        Some(pe) if n_first > 0 => {
            eprintln!("jitgate-bench: first logins with ephemeral users ({n_first} identities)…");
            let shared = firstlogin::Proxy {
                label: "P",
                admin: &p.admin,
                addr: procs::loopback(p.port),
                pid: p.proc.pid(),
            };
            let ephemeral = firstlogin::Proxy {
                label: "Pe",
                admin: &pe.admin,
                addr: procs::loopback(pe.port),
                pid: pe.proc.pid(),
            };
            match firstlogin::run(
                &shared,
                &ephemeral,
                &first_ids,
                cluster.log_path(),
                EPHEMERAL_ADMIN,
                &cluster.admin_conninfo(),
            )
            .await
            {
                Ok(f) => Some(f),
                Err(e) => {
                    eprintln!("  first-login measurement failed: {e:#}");
                    notes.push(format!("The first-login measurement failed: {e:#}"));
                    None
                }
            }
        }
        _ => None,
    };

    let mut procs = vec![&mut relay, &mut p.proc, &mut p0.proc];
    if let Some(pv) = &mut pv {
        procs.push(&mut pv.proc);
    }
    if let Some(pe) = &mut pe {
        procs.push(&mut pe.proc);
    }
    for proc in procs {
        if !proc.alive() {
            notes.push(format!(
                "{} was no longer running at the end of the run.",
                proc.name
            ));
        }
    }

    let machine = machine::collect(&repo, cluster.version(), pgbouncer_version);
    let kept = kept::from_file(&out);
    let report = report::Report {
        machine: &machine,
        quick: args.quick,
        rounds,
        seconds,
        labels: &labels,
        cells: &cells,
        results: &results,
        rss: &rss,
        enforcement: enforcement.as_ref(),
        first_logins: first_logins.as_ref(),
        notes: &notes,
        kept: kept.as_deref(),
        load_before,
        load_after: machine::load_average(),
        elapsed_min: started.elapsed().as_secs_f64() / 60.0,
    };
    let text = report.markdown();
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("{text}");
    eprintln!("jitgate-bench: wrote {}", out.display());

    drop((p, p0, pv, pe, bouncer, relay, cluster));
    if args.keep {
        let kept = work.keep();
        eprintln!("jitgate-bench: kept {}", kept.display());
    }
    Ok(())
}
