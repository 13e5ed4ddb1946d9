//! What the server's own log says one role's connections with one `application_name`
//! ran: every Query message, every extended-protocol step, every error, which backends,
//! and the server's time. The bench cluster's `log_line_prefix` names user and
//! application (see `cluster`), and the role being watched has
//! `log_min_duration_statement = 0`, so the server logs each statement it completed.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result};

/// The statements of one role and application seen in a stretch of the log.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Text of each simple-protocol Query message (one round trip each, however many
    /// statements it holds).
    pub queries: Vec<String>,
    /// Extended-protocol steps (Parse, Bind, Execute lines).
    pub extended: usize,
    /// `ERROR:` lines.
    pub errors: usize,
    /// Backend pids the lines came from: the connections used.
    pub pids: BTreeSet<u32>,
    /// Sum of the logged durations, ms (server time).
    pub server_ms: f64,
}

/// The log from byte `offset` to its current end, and the new end.
pub fn read_from(path: &Path, offset: u64) -> Result<(String, u64)> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let end = offset + bytes.len() as u64;
    Ok((String::from_utf8_lossy(&bytes).into_owned(), end))
}

/// The current length of the log (where a stretch starts).
pub fn end_of(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}

/// Tallies the lines of `text` written by `user`'s connections named `app`
/// (prefix `%m [%p] %q%u@%a: `).
pub fn tally(text: &str, user: &str, app: &str) -> Tally {
    let who = format!("] {user}@{app}: ");
    let mut t = Tally::default();
    for line in text.lines() {
        let Some(at) = line.find(&who) else { continue };
        let pid = line[..at]
            .rsplit('[')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        let rest = &line[at + who.len()..];
        if rest.starts_with("ERROR:") {
            t.errors += 1;
        } else if let Some(d) = rest.strip_prefix("LOG:  duration: ") {
            let Some((ms, what)) = d.split_once(" ms  ") else {
                continue;
            };
            t.server_ms += ms.parse::<f64>().unwrap_or(0.0);
            if let Some(sql) = what.strip_prefix("statement: ") {
                t.queries.push(sql.to_owned());
            } else if ["parse ", "bind ", "execute "]
                .iter()
                .any(|k| what.starts_with(k))
            {
                t.extended += 1;
            } else {
                continue;
            }
        } else {
            continue;
        }
        t.pids.extend(pid);
    }
    t
}

/// The statements of a Query message by their first two words (`CREATE ROLE; COMMENT
/// ON`): what a round trip did, without names or the password verifier. Splits at every
/// `;` (jitgate's provisioning SQL has none inside its literals: names, a base64
/// verifier, a timestamp).
pub fn shape(sql: &str) -> String {
    sql.split(';')
        .map(|s| {
            s.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
                .to_uppercase()
        })
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-12-07 19:00:00.001 UTC [101] bench_admin@jitgate: provisioning: LOG:  duration: 4.500 ms  statement: CREATE ROLE \"jit_a_1\" LOGIN PASSWORD E'x'; COMMENT ON ROLE \"jit_a_1\" IS E'm'
2026-12-07 19:00:00.002 UTC [102] bench_admin@jitgate: sweeping per-grant roles: LOG:  duration: 1.000 ms  statement: SELECT 1
2026-12-07 19:00:00.003 UTC [101] bench_admin@jitgate: provisioning: LOG:  duration: 0.500 ms  parse <unnamed>: SELECT $1
2026-12-07 19:00:00.004 UTC [101] bench_admin@jitgate: provisioning: LOG:  duration: 0.100 ms  execute <unnamed>: SELECT $1
2026-12-07 19:00:00.005 UTC [103] bench_admin@jitgate: provisioning: ERROR:  role \"jit_a_1\" already exists
2026-12-07 19:00:00.006 UTC [104] bench@pgbench: LOG:  duration: 9.000 ms  statement: SELECT 1
2026-12-07 19:00:00.007 UTC [105] LOG:  checkpoint starting: time
";

    #[test]
    fn counts_only_the_watched_role_and_application() {
        let t = tally(LOG, "bench_admin", "jitgate: provisioning");
        assert_eq!(t.queries.len(), 1);
        assert_eq!(t.extended, 2);
        assert_eq!(t.errors, 1);
        assert_eq!(t.pids.iter().copied().collect::<Vec<_>>(), vec![101, 103]);
        assert!((t.server_ms - 5.1).abs() < 1e-9);
        let sweep = tally(LOG, "bench_admin", "jitgate: sweeping per-grant roles");
        assert_eq!(sweep.queries, vec!["SELECT 1".to_owned()]);
    }

    #[test]
    fn shape_names_each_statement_of_a_query() {
        assert_eq!(
            shape("CREATE ROLE \"x\" LOGIN; COMMENT ON ROLE \"x\" IS E'm'"),
            "CREATE ROLE; COMMENT ON"
        );
        assert_eq!(shape("select 1"), "SELECT 1");
    }
}
