//! `jitgate audit tail` and `jitgate audit replay`: read the audit log directly (no server
//! needed), from the config's `audit.path` or a file named with `--file`.
//!
//! A damaged line is reported on stderr with its line number and reading goes on; the
//! command then exits 1, so a damaged log never passes silently.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use jitgate::config;
use jitgate_audit::AuditError;

use super::{AuditFile, AuditReplayCmd, AuditTailCmd, ReplayFormat};

pub(super) fn log_path(config_path: &Path, file: AuditFile) -> Result<PathBuf> {
    match file.file {
        Some(path) => Ok(path),
        None => config::load_audit_path(config_path)
            .map_err(anyhow::Error::from)
            .context("cannot find the audit log (name it with --file PATH)"),
    }
}

/// Counts unreadable lines, reporting each on stderr.
#[derive(Default)]
struct BadLines(u64);

impl BadLines {
    fn report(&mut self, err: &AuditError) {
        self.0 += 1;
        eprintln!("warning: {err}");
    }

    fn finish(self, path: &Path) -> Result<()> {
        if self.0 > 0 {
            bail!(
                "{} line(s) of {} could not be read (see the warnings above)",
                self.0,
                path.display()
            );
        }
        Ok(())
    }
}

/// `jitgate audit tail`.
pub async fn tail(config_path: &Path, cmd: AuditTailCmd) -> Result<()> {
    let path = log_path(config_path, cmd.file)?;
    let mut bad = BadLines::default();
    let mut stdout = std::io::stdout();
    let json = cmd.json;
    jitgate_audit::tail(&path, cmd.follow, !cmd.new, |item| {
        let event = match item {
            Ok(event) => event,
            Err(err) => {
                bad.report(&err);
                return ControlFlow::Continue(());
            }
        };
        let line = if json {
            serde_json::to_string(&event).unwrap_or_default()
        } else {
            jitgate_audit::format_event_line(&event)
        };
        // A closed stdout (`| head`) ends the command quietly.
        match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    })
    .await?;
    bad.finish(&path)
}

/// `jitgate audit replay`.
pub fn replay(config_path: &Path, cmd: AuditReplayCmd) -> Result<()> {
    let path = log_path(config_path, cmd.file)?;
    let mut bad = BadLines::default();
    let session = cmd.session;
    // The fast scan parses only the lines of this session (see jitgate_audit::query).
    let (events, stats) = jitgate_audit::query::session_events(&path, session)?;
    for err in &stats.problems {
        bad.report(err);
    }
    let out = match cmd.format {
        ReplayFormat::Text => jitgate_audit::transcript(events, session),
        ReplayFormat::Json if events.is_empty() => None,
        ReplayFormat::Json => {
            let mut out = String::new();
            for event in &events {
                out.push_str(&serde_json::to_string(event)?);
                out.push('\n');
            }
            Some(out)
        }
    };
    let Some(out) = out else {
        bad.finish(&path)?;
        bail!("no events of session {session} in {}", path.display());
    };
    let mut stdout = std::io::stdout().lock();
    // Ignore a closed stdout (`| head`): the reader chose to stop.
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush());
    bad.finish(&path)
}
