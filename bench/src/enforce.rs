//! Enforcement latency: many live sessions through jitgate, each under its own grant with
//! a staggered deadline; for each, how long after the deadline the client's socket was
//! closed and the upstream backend was gone from `pg_stat_activity`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::stream::{self, StreamExt};
use jiff::{SignedDuration, Timestamp};
use jitgate::api::AdminClient;

use crate::jitgate::{self as jg};
use crate::wire::{self, Login};

/// Deadlines are this far apart, so drops are spread out as in real life.
const STAGGER_MS: i64 = 10;
/// Time before the first deadline, beyond issuing and logging in every session.
const SETTLED_MS: i64 = 10_000;
/// Budget per session for issuing its grant and logging in (1 000 took ~5 s on a loaded
/// 2-core box; this leaves three times that).
const PER_SESSION_MS: i64 = 15;
/// How often `pg_stat_activity` is polled: the resolution of "backend gone".
pub const POLL: Duration = Duration::from_millis(5);
/// Give up on sessions still there this long after the last deadline.
const GRACE: Duration = Duration::from_secs(10);

/// What the run found.
#[derive(Debug, Default)]
pub struct Enforcement {
    pub sessions: usize,
    pub connected: usize,
    /// First login error, if some sessions could not be opened.
    pub login_error: Option<String>,
    /// Seconds between the last login and the first deadline.
    pub slack_s: f64,
    /// Deadline → client socket closed, ms, per session.
    pub client_ms: Vec<f64>,
    /// Deadline → backend gone from pg_stat_activity, ms, per session.
    pub backend_ms: Vec<f64>,
    /// Sessions whose client socket / backend was still there after the grace period.
    pub client_stuck: usize,
    pub backend_stuck: usize,
    /// Sessions whose announced backend pid never showed up in pg_stat_activity.
    pub backend_unknown: usize,
}

fn ms_since(t: Timestamp, deadline: Timestamp) -> f64 {
    t.duration_since(deadline).as_secs_f64() * 1000.0
}

/// Runs the measurement for `identities` (each `(name, password)`, all in P's config)
/// against jitgate at `proxy`, watching the upstream through `pg_admin` (superuser
/// conninfo).
pub async fn run(
    admin: &AdminClient,
    proxy: SocketAddr,
    identities: &[(String, String)],
    pg_admin: &str,
) -> Result<Enforcement> {
    let n = identities.len();
    let not_before = Timestamp::now();
    let lead = SETTLED_MS + PER_SESSION_MS * n as i64;
    eprintln!(
        "  issuing {n} grants (deadlines {:.1}s from now, {STAGGER_MS} ms apart)…",
        lead as f64 / 1000.0
    );
    let deadlines: Vec<Timestamp> = stream::iter(identities.iter().enumerate())
        .map(|(i, (name, _))| {
            jg::grant(admin, name, Some(not_before), lead + STAGGER_MS * i as i64)
        })
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;

    eprintln!("  logging in {n} sessions…");
    let logins = stream::iter(identities.iter().enumerate())
        .map(|(i, (name, password))| async move {
            let login = Login {
                addr: proxy,
                user: name.clone(),
                password: password.clone(),
                database: jg::TARGET.to_owned(),
                application_name: format!("bench-enforce-{i}"),
            };
            (i, wire::login(&login).await)
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let mut result = Enforcement {
        sessions: n,
        ..Default::default()
    };
    let first_deadline = deadlines.iter().min().copied().unwrap_or(not_before);
    let last_deadline = deadlines.iter().max().copied().unwrap_or(not_before);
    result.slack_s = first_deadline
        .duration_since(Timestamp::now())
        .as_secs_f64();

    let mut closers = Vec::new();
    let mut backend_of: HashMap<i32, usize> = HashMap::new();
    for (i, login) in logins {
        match login {
            Ok(mut session) => {
                result.connected += 1;
                backend_of.insert(session.pid, i);
                closers.push(tokio::spawn(async move {
                    wire::wait_closed(&mut session.stream).await;
                    (i, Timestamp::now())
                }));
            }
            Err(e) => {
                result.login_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    eprintln!(
        "  {} of {n} sessions live; first deadline in {:.1}s, last {:.1}s later",
        result.connected,
        result.slack_s,
        last_deadline.duration_since(first_deadline).as_secs_f64()
    );

    let (client, connection) = tokio_postgres::connect(pg_admin, tokio_postgres::NoTls)
        .await
        .context("connecting to Postgres to watch pg_stat_activity")?;
    let conn_task = tokio::spawn(connection);
    let watch_from = first_deadline - SignedDuration::from_millis(500);
    let wait = watch_from.duration_since(Timestamp::now());
    if wait.is_positive() {
        tokio::time::sleep(wait.unsigned_abs()).await;
    }
    let give_up = last_deadline + SignedDuration::try_from(GRACE)?;
    let mut gone: HashMap<usize, Timestamp> = HashMap::new();
    let mut seen_live: HashSet<i32> = HashSet::new();
    let query = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'";
    while gone.len() < backend_of.len() && Timestamp::now() < give_up {
        let rows = client.query(query, &[]).await?;
        let seen = Timestamp::now();
        let live: HashSet<i32> = rows.iter().map(|r| r.get(0)).collect();
        for (&pid, &i) in &backend_of {
            if live.contains(&pid) {
                seen_live.insert(pid);
            } else if seen_live.contains(&pid) {
                gone.entry(i).or_insert(seen);
            }
        }
        if seen_live.len() < backend_of.len() && Timestamp::now() > first_deadline {
            // A pid we never saw live cannot be told apart from one that is gone: the
            // proxy did not hand out the upstream pid. Stop rather than report nonsense.
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    conn_task.abort();
    result.backend_unknown = backend_of.len() - seen_live.len();
    result.backend_stuck = seen_live.len() - gone.len();
    result.backend_ms = gone
        .iter()
        .map(|(&i, &t)| ms_since(t, deadlines[i]))
        .collect();

    let remaining = give_up.duration_since(Timestamp::now());
    let budget = if remaining.is_positive() {
        remaining.unsigned_abs()
    } else {
        Duration::from_secs(1)
    };
    let mut closed = Vec::new();
    let collect = async {
        for c in closers.iter_mut() {
            if let Ok(v) = c.await {
                closed.push(v);
            }
        }
    };
    let _ = tokio::time::timeout(budget, collect).await;
    for c in &closers {
        c.abort();
    }
    result.client_stuck = result.connected - closed.len();
    result.client_ms = closed
        .iter()
        .map(|&(i, t)| ms_since(t, deadlines[i]))
        .collect();
    Ok(result)
}
