//! A grant's first login with ephemeral users (the target: at most one round trip
//! added): N identities, each
//! with its own grant, log in once through jitgate with `provisioning: ephemeral` (Pe:
//! the first session of each grant creates its per-grant role) and once through jitgate
//! with the shared role (P), interleaved login by login; then each logs in a second time
//! on both (Pe's role exists by then). Each login runs `SELECT 1` and ends.
//!
//! Measured: connect latency (TCP connect to ReadyForQuery, minus the client's own
//! PBKDF2), the `SELECT 1` round trip, jitgate's CPU per login, and — from the server's
//! log, not from jitgate — every statement Pe's admin role sent on its provisioning
//! connection while the first logins ran and while the second ones ran. The claim
//! checked: provisioning adds at most one round trip to a first login.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use jitgate::api::AdminClient;

use crate::jitgate as jg;
use crate::procs;
use crate::serverlog::{self, Tally};
use crate::stats;
use crate::wire::{self, Login};

/// The name `--only` matches to select this measurement.
pub const NAME: &str = "first-login ephemeral";

/// The application_name of jitgate's kept provisioning connection (proxy/src/provision).
const PROVISIONING_APP: &str = "jitgate: provisioning";
/// The application_name of its sweeper's connections.
const SWEEP_APP: &str = "jitgate: sweeping per-grant roles";

/// A jitgate to log in through.
pub struct Proxy<'a> {
    pub label: &'static str,
    pub admin: &'a AdminClient,
    pub addr: SocketAddr,
    pub pid: u32,
}

/// What one phase (first or second logins) measured on one proxy.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub label: &'static str,
    /// "first" or "second".
    pub login: &'static str,
    /// Connect latency per login, µs (client PBKDF2 left out).
    pub connect_us: Vec<u64>,
    /// `SELECT 1` round trip per login, µs.
    pub query_us: Vec<u64>,
    /// The proxy's CPU (user + system) over the phase divided by logins, µs.
    pub cpu_us: Option<f64>,
}

impl Phase {
    /// `(p50, p99, max)` of connect latency, ms.
    pub fn connect_ms(&self) -> Option<(f64, f64, f64)> {
        percentiles(&self.connect_us)
    }

    /// `(p50, p99, max)` of the `SELECT 1` round trip, ms.
    pub fn query_ms(&self) -> Option<(f64, f64, f64)> {
        percentiles(&self.query_us)
    }
}

fn percentiles(us: &[u64]) -> Option<(f64, f64, f64)> {
    let mut v = us.to_vec();
    let ms = |x: u64| x as f64 / 1000.0;
    Some((
        ms(stats::percentile(&mut v, 50.0)?),
        ms(stats::percentile(&mut v, 99.0)?),
        ms(stats::percentile(&mut v, 100.0)?),
    ))
}

/// Everything the measurement found.
#[derive(Debug, Default)]
pub struct FirstLogins {
    /// Identities (= grants per proxy).
    pub n: usize,
    /// P first, Pe first, P second, Pe second.
    pub phases: Vec<Phase>,
    /// Pe's provisioning connection during the first logins / the second logins.
    pub admin_first: Tally,
    pub admin_second: Tally,
    /// Statements of Pe's sweeper during both phases (not on any login's path).
    pub sweep_queries: usize,
    /// Per-grant roles of these identities on the server afterwards (pg_roles).
    pub roles_on_server: i64,
}

impl FirstLogins {
    /// The phase of `label` and `login`.
    pub fn phase(&self, label: &str, login: &str) -> Option<&Phase> {
        self.phases
            .iter()
            .find(|p| p.label == label && p.login == login)
    }
}

/// Runs it: `identities` (name, password) are in both proxies' configs and hold no
/// grant yet; `pg_log` is the cluster's log, `admin_role` Pe's admin role (its
/// statements are logged: `log_min_duration_statement = 0`), `pg_admin` a superuser
/// conninfo.
pub async fn run(
    shared: &Proxy<'_>,
    ephemeral: &Proxy<'_>,
    identities: &[(String, String)],
    pg_log: &Path,
    admin_role: &str,
    pg_admin: &str,
) -> Result<FirstLogins> {
    const DAY_MS: i64 = 24 * 3600 * 1000;
    let n = identities.len();
    eprintln!("  issuing {n} grants on each of P and Pe…");
    for proxy in [shared, ephemeral] {
        stream::iter(identities)
            .map(|(name, _)| jg::grant(proxy.admin, name, None, DAY_MS))
            .buffered(8)
            .try_collect::<Vec<_>>()
            .await
            .with_context(|| format!("issuing the first-login grants on {}", proxy.label))?;
    }
    let tck = procs::clock_ticks() as f64;
    let mut result = FirstLogins {
        n,
        ..FirstLogins::default()
    };
    let mut sweep_queries = 0;
    for login in ["first", "second"] {
        eprintln!("  {login} logins: {n} on P and {n} on Pe, interleaved…");
        let log_start = serverlog::end_of(pg_log)?;
        let mut phases = [shared, ephemeral].map(|p| Phase {
            label: p.label,
            login,
            ..Phase::default()
        });
        let cpu_before = [shared, ephemeral].map(|p| procs::cpu_ticks(p.pid));
        for (i, (name, password)) in identities.iter().enumerate() {
            // Alternate which proxy goes first, so neither always follows the other.
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                let proxy = [shared, ephemeral][k];
                let (connect, query) = one_login(proxy.addr, name, password)
                    .await
                    .with_context(|| format!("{login} login of {name} through {}", proxy.label))?;
                phases[k].connect_us.push(connect);
                phases[k].query_us.push(query);
            }
        }
        for (k, p) in [shared, ephemeral].into_iter().enumerate() {
            if let (Some(b), Some(a)) = (cpu_before[k], procs::cpu_ticks(p.pid)) {
                phases[k].cpu_us = Some(a.saturating_sub(b) as f64 / tck * 1e6 / n.max(1) as f64);
            }
        }
        let (text, _) = serverlog::read_from(pg_log, log_start)?;
        let tally = serverlog::tally(&text, admin_role, PROVISIONING_APP);
        sweep_queries += serverlog::tally(&text, admin_role, SWEEP_APP).queries.len();
        if login == "first" {
            result.admin_first = tally;
        } else {
            result.admin_second = tally;
        }
        result.phases.extend(phases);
    }
    result.sweep_queries = sweep_queries;
    result.roles_on_server = roles_on_server(pg_admin, identities).await?;
    Ok(result)
}

/// One login: `(connect µs without the client's PBKDF2, SELECT 1 µs)`.
async fn one_login(addr: SocketAddr, user: &str, password: &str) -> Result<(u64, u64)> {
    let login = Login {
        addr,
        user: user.to_owned(),
        password: password.to_owned(),
        database: jg::TARGET.to_owned(),
        application_name: "bench-first-login".into(),
    };
    let started = Instant::now();
    let (mut session, client_work) = wire::login_timed(&login).await?;
    let connect = started.elapsed().saturating_sub(client_work);
    let started = Instant::now();
    session.simple_query("SELECT 1").await?;
    let query = started.elapsed();
    session.terminate().await?;
    Ok((connect.as_micros() as u64, query.as_micros() as u64))
}

/// How many per-grant roles of `identities` the server has (`jit_<identity>_…`).
async fn roles_on_server(pg_admin: &str, identities: &[(String, String)]) -> Result<i64> {
    let (client, connection) = tokio_postgres::connect(pg_admin, tokio_postgres::NoTls)
        .await
        .context("connecting to Postgres to count the per-grant roles")?;
    let task = tokio::spawn(connection);
    let prefixes: Vec<String> = identities
        .iter()
        .map(|(name, _)| format!("jit_{name}_"))
        .collect();
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE left(rolname, length(rolname) - 32) = ANY($1)",
            &[&prefixes],
        )
        .await
        .context("counting the per-grant roles")?;
    task.abort();
    Ok(row.get(0))
}
