//! The report's "First login with ephemeral users" section: connect
//! latency of a grant's first and second login through Pe (per-grant roles) and P (the
//! shared role), and what Pe's admin role sent the server per first login.

use std::fmt::Write as _;

use crate::firstlogin::{FirstLogins, Phase};
use crate::serverlog::{self, Tally};

/// What a phase's row is called.
fn what(p: &Phase) -> String {
    let kind = match (p.label, p.login) {
        ("Pe", "first") => "creates the grant's role",
        ("Pe", _) => "role exists",
        _ => "shared role",
    };
    format!("{} {} login ({kind})", p.label, p.login)
}

fn ms3(v: Option<(f64, f64, f64)>) -> [String; 3] {
    match v {
        Some((a, b, c)) => [a, b, c].map(|x| format!("{x:.2}")),
        None => ["—".into(), "—".into(), "—".into()],
    }
}

/// Whether the admin statements of the first logins keep the promise: at most one Query
/// message per first login, no extended-protocol steps, no errors, every role made.
pub fn met(f: &FirstLogins) -> bool {
    let a = &f.admin_first;
    f.n > 0
        && a.queries.len() <= f.n
        && a.extended == 0
        && a.errors == 0
        && f.admin_second.queries.is_empty()
        && f.admin_second.extended == 0
        && f.roles_on_server == f.n as i64
}

fn admin_row(o: &mut String, logins: &str, n: usize, t: &Tally) {
    let mut shapes: Vec<String> = t.queries.iter().map(|q| serverlog::shape(q)).collect();
    shapes.sort();
    shapes.dedup();
    let per = |x: f64| format!("{:.2}", x / n.max(1) as f64);
    let _ = writeln!(
        o,
        "| {logins} ({n}) | {} | {} | {} | {} | {} | {} | {} |",
        t.queries.len(),
        per(t.queries.len() as f64),
        if shapes.is_empty() {
            "—".to_owned()
        } else {
            format!("`{}`", shapes.join("`, `"))
        },
        t.extended,
        t.errors,
        t.pids.len(),
        if t.queries.is_empty() && t.extended == 0 {
            "—".to_owned()
        } else {
            format!("{} ms", per(t.server_ms))
        },
    );
}

/// Median of `a[i] - b[i]` (µs) in ms: logins of one identity paired.
fn paired_median_ms(a: &[u64], b: &[u64]) -> Option<f64> {
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64) / 1000.0)
        .collect();
    crate::stats::spread(&d).map(|s| s.median)
}

/// Writes the section.
pub fn section(o: &mut String, f: &FirstLogins) {
    let _ = writeln!(
        o,
        "## First login with ephemeral users\n\n{n} identities, each with its own grant on P \
         (shared role) and on Pe (`provisioning: ephemeral`), log in one at a time, P and Pe \
         alternating, each running `SELECT 1` and disconnecting; then each logs in a second \
         time on both (Pe's per-grant role exists by then). First logins open a new \
         upstream connection on both; second logins take the one the first left parked \
         (`upstream_reuse`, on by default), so they show jitgate's own login path. Connect \
         = TCP connect to ReadyForQuery, without the client's own PBKDF2, ms; jitgate CPU \
         per login from /proc/PID/stat over the phase (10 ms ticks).\n",
        n = f.n
    );
    let _ = writeln!(
        o,
        "| login | connect p50 | p99 | max | `SELECT 1` p50 | jitgate CPU / login |\n\
         |---|---|---|---|---|---|"
    );
    let mut phases: Vec<&Phase> = f.phases.iter().collect();
    phases.sort_by_key(|p| (p.login, p.label));
    for p in phases {
        let [c50, c99, cmax] = ms3(p.connect_ms());
        let q50 = p
            .query_ms()
            .map_or("—".into(), |(a, _, _)| format!("{a:.2}"));
        let cpu = p.cpu_us.map_or("—".into(), |c| format!("{c:.0} µs"));
        let _ = writeln!(
            o,
            "| {} | {c50} | {c99} | {cmax} | {q50} | {cpu} |",
            what(p)
        );
    }
    let p50 = |label: &str, login: &str| Some(f.phase(label, login)?.connect_ms()?.0);
    if let (Some(pe1), Some(p1)) = (p50("Pe", "first"), p50("P", "first")) {
        let paired = match (f.phase("Pe", "first"), f.phase("P", "first")) {
            (Some(pe), Some(p)) => paired_median_ms(&pe.connect_us, &p.connect_us),
            _ => None,
        };
        let _ = writeln!(
            o,
            "\nWhat provisioning adds to a first login, Pe's first login against P's: {:.2} ms \
             between the p50s; {} as the median of the differences identity by identity (the \
             two logins of an identity ran back to back).",
            pe1 - p1,
            paired.map_or("—".into(), |d| format!("{d:.2} ms"))
        );
    }
    let _ = writeln!(
        o,
        "\nWhat Pe's admin role sent on its provisioning connection, read from the server's \
         log (`log_min_duration_statement = 0` for that role; one line per completed Query \
         message, whatever it holds, or per Parse/Bind/Execute):\n"
    );
    let _ = writeln!(
        o,
        "| logins | Query messages | per login | statements in them | extended-protocol steps | errors | connections | server time per login |\n\
         |---|---|---|---|---|---|---|---|"
    );
    admin_row(o, "first", f.n, &f.admin_first);
    admin_row(o, "second", f.n, &f.admin_second);
    let _ = writeln!(
        o,
        "\nPer-grant roles of these identities on the server afterwards (`pg_roles`): {} of {}. \
         Statements of Pe's sweeper meanwhile (its own connection, on no login's path): {}.\n",
        f.roles_on_server, f.n, f.sweep_queries
    );
    let _ = writeln!(
        o,
        "Target: provisioning adds at most one round trip to a grant's first login — {}.\n",
        if met(f) { "met" } else { "**not met**" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(queries: usize) -> Tally {
        Tally {
            queries: vec!["CREATE ROLE \"x\" LOGIN; COMMENT ON ROLE \"x\" IS E'm'".into(); queries],
            server_ms: 3.0 * queries as f64,
            pids: [7].into_iter().collect(),
            ..Tally::default()
        }
    }

    fn result(per_login: usize) -> FirstLogins {
        FirstLogins {
            n: 2,
            phases: vec![Phase {
                label: "Pe",
                login: "first",
                connect_us: vec![1000, 3000],
                query_us: vec![100, 200],
                cpu_us: Some(50.0),
            }],
            admin_first: tally(2 * per_login),
            admin_second: Tally::default(),
            sweep_queries: 0,
            roles_on_server: 2,
        }
    }

    #[test]
    fn one_query_per_first_login_is_met_two_are_not() {
        assert!(met(&result(1)));
        assert!(!met(&result(2)));
        let mut missing = result(1);
        missing.roles_on_server = 1;
        assert!(!met(&missing));
    }

    #[test]
    fn the_section_shows_statements_per_login_and_their_shape() {
        let mut o = String::new();
        section(&mut o, &result(1));
        assert!(
            o.contains(
                "| first (2) | 2 | 1.00 | `CREATE ROLE; COMMENT ON` | 0 | 0 | 1 | 3.00 ms |"
            ),
            "{o}"
        );
        assert!(
            o.contains("| second (2) | 0 | 0.00 | — | 0 | 0 | 0 | — |"),
            "{o}"
        );
        assert!(
            o.contains(
                "| Pe first login (creates the grant's role) | 1.00 | 3.00 | 3.00 | 0.10 | 50 µs |"
            ),
            "{o}"
        );
        assert!(o.contains("— met."), "{o}");
    }

    #[test]
    fn differences_are_paired_by_identity() {
        assert_eq!(
            paired_median_ms(&[5000, 1000, 9000], &[1000, 1000, 1000]),
            Some(4.0)
        );
        assert_eq!(paired_median_ms(&[], &[]), None);
    }
}
