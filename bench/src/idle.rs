//! Memory per idle session: a proxy's RSS with 0, 100 and 500 logged-in idle sessions, and
//! the slope in KiB per session.

use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::matrix::Target;
use crate::procs;
use crate::wire::{self, Login, Session};

/// Logins in flight at once while opening sessions.
const LOGIN_CONCURRENCY: usize = 16;
/// Let the proxy finish per-session setup work (and the allocator settle) before reading RSS.
const SETTLE: Duration = Duration::from_secs(1);

/// RSS (KiB) at each session count, and the slope.
#[derive(Debug, Clone)]
pub struct RssRow {
    pub label: &'static str,
    /// `(sessions, RSS KiB)`.
    pub points: Vec<(usize, u64)>,
}

impl RssRow {
    /// KiB per session between the first and last point.
    pub fn slope(&self) -> Option<f64> {
        let (&(n0, r0), &(n1, r1)) = (self.points.first()?, self.points.last()?);
        (n1 > n0).then(|| (r1 as f64 - r0 as f64) / (n1 - n0) as f64)
    }
}

/// Opens sessions through the proxy `pid` listens for, up to each of `counts` in turn,
/// reading its RSS at each step; closes them all at the end.
pub async fn measure(
    label: &'static str,
    pid: u32,
    login: &Login,
    counts: &[usize],
) -> Result<RssRow> {
    let mut sessions: Vec<Session> = Vec::new();
    let mut points = Vec::new();
    for &target in counts {
        let more = target.saturating_sub(sessions.len());
        let opened: Vec<Session> = stream::iter(0..more)
            .map(|_| wire::login(login))
            .buffer_unordered(LOGIN_CONCURRENCY)
            .try_collect()
            .await
            .with_context(|| format!("{label}: opening {target} idle sessions"))?;
        sessions.extend(opened);
        tokio::time::sleep(SETTLE).await;
        let rss = procs::rss_kib(pid).with_context(|| format!("{label}: reading RSS"))?;
        points.push((sessions.len(), rss));
    }
    drop(sessions);
    tokio::time::sleep(SETTLE).await;
    Ok(RssRow { label, points })
}

/// Session counts at which RSS is read.
pub const COUNTS: [usize; 3] = [0, 100, 500];

/// Measures the proxies among `targets` (R, B, P: fresh processes, before any load) with
/// logins as `user`; returns the rows, and a note for each proxy that could not be measured.
pub async fn measure_proxies(
    targets: &[Target],
    user: &str,
    password: &str,
    database: &str,
) -> (Vec<RssRow>, Vec<String>) {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for t in targets
        .iter()
        .filter(|t| matches!(t.label, "R" | "B" | "P"))
    {
        let Some(pid) = t.pid else { continue };
        let login = Login {
            addr: procs::loopback(t.port),
            user: user.to_owned(),
            password: password.to_owned(),
            database: database.to_owned(),
            application_name: "bench-idle".into(),
        };
        match measure(t.label, pid, &login, &COUNTS).await {
            Ok(row) => {
                let slope = row.slope().unwrap_or(f64::NAN);
                eprintln!("  {}: {:?} → {slope:.1} KiB/session", t.label, row.points);
                rows.push(row);
            }
            Err(e) => {
                eprintln!("  {}: {e:#}", t.label);
                notes.push(format!(
                    "Idle-session memory of {} was not measured: {e:#}",
                    t.label
                ));
            }
        }
    }
    (rows, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_from_first_to_last() {
        let row = RssRow {
            label: "P",
            points: vec![(0, 10_000), (100, 12_000), (500, 20_000)],
        };
        assert_eq!(row.slope(), Some(20.0));
        let flat = RssRow {
            label: "P",
            points: vec![(0, 1)],
        };
        assert_eq!(flat.slope(), None);
    }
}
