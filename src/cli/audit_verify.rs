//! `jitgate audit verify` and `jitgate audit keygen`: checking that the audit log is
//! exactly what jitgate wrote, and making the key pair that signs its checkpoints.
//!
//! `verify` reads the log directly (no server needed). The public key comes from
//! `--public-key`, else it is derived from the config's `audit.signing_key_file`. The
//! report goes to stdout; any problem makes the command exit 1 with the first bad `seq`
//! and file on stderr.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use jitgate::config;
use jitgate::outln;
use jitgate_audit::{AuditWriter, CutAcknowledgement, PublicKey, VerifyReport};

use super::{AuditAcknowledgeCmd, AuditKeygenCmd, AuditVerifyCmd};

/// `jitgate audit verify`.
pub async fn verify(config_path: &Path, cmd: AuditVerifyCmd) -> Result<()> {
    let (path, key, key_source) = resolve(config_path, &cmd)?;
    let witness = match cmd.witness {
        true => Some(witness(config_path).await?),
        false => None,
    };
    let report = jitgate_audit::verify_with(&path, key.as_ref(), witness.as_ref())
        .with_context(|| format!("cannot verify the audit log {}", path.display()))?;
    if cmd.json {
        jitgate::outln!("{}", serde_json::to_string_pretty(&as_json(&report))?);
    } else {
        jitgate::out!("{}", render(&report, key_source.as_deref()));
    }
    match report.problems.first() {
        None => Ok(()),
        Some(first) => bail!("audit log verification FAILED: {first}"),
    }
}

/// The checkpoints the witness (the PostgreSQL grant store) holds for this log. Failing
/// to read them fails the command: `--witness` asked for that check.
async fn witness(config_path: &Path) -> Result<jitgate_audit::WitnessCheckpoints> {
    let (store, witness) = config::load_witness(config_path)
        .map_err(anyhow::Error::from)
        .context("cannot check against the witness")?;
    let Some(store) = jitgate::witness::connect(&store)
        .await
        .context("cannot reach the witness (the PostgreSQL grant store)")?
    else {
        bail!("--witness needs store.postgres in the config");
    };
    Ok(jitgate::witness::checkpoints(&store, &witness.log).await?)
}

/// The log to verify and the key to check signatures with (and where it came from).
/// With `--public-key` only `audit.path` is read from the config (the private key may be
/// unreadable for whoever verifies); otherwise the key is derived from the config's
/// `audit.signing_key_file`.
fn resolve(
    config_path: &Path,
    cmd: &AuditVerifyCmd,
) -> Result<(PathBuf, Option<PublicKey>, Option<String>)> {
    const NO_LOG: &str = "cannot find the audit log (name it with --file PATH)";
    if let Some(file) = &cmd.public_key {
        let key = PublicKey::load(file)?;
        let path = match &cmd.file.file {
            Some(path) => path.clone(),
            None => config::load_audit_path(config_path)
                .map_err(anyhow::Error::from)
                .context(NO_LOG)?,
        };
        return Ok((
            path,
            Some(key),
            Some(format!("public key {}", file.display())),
        ));
    }
    let audit = match &cmd.file.file {
        None => Some(
            config::load_audit(config_path)
                .map_err(anyhow::Error::from)
                .context(
                    "cannot read the audit settings (to verify without the private key, pass \
                     --public-key FILE)",
                )?,
        ),
        Some(_) if config_path.exists() => match config::load_audit(config_path) {
            Ok(audit) => Some(audit),
            Err(e) => {
                eprintln!("note: no key from {}: {e}", config_path.display());
                None
            }
        },
        Some(_) => None,
    };
    let path = match (&cmd.file.file, &audit) {
        (Some(file), _) => file.clone(),
        (None, Some(audit)) => audit.path.clone(),
        (None, None) => bail!(NO_LOG),
    };
    let key = audit
        .as_ref()
        .and_then(|a| a.signing_key.as_ref())
        .map(|k| k.public());
    let source = key.map(|_| {
        "the public half of audit.signing_key_file; for an independent check pass --public-key"
            .to_owned()
    });
    Ok((path, key, source))
}

fn render(report: &VerifyReport, key_source: Option<&str>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let compressed = report.files.iter().filter(|f| f.compressed).count();
    let _ = writeln!(
        out,
        "audit log {}: {} file(s) read, {compressed} compressed",
        report.live.display(),
        report.files.len()
    );
    for file in &report.files {
        let seqs = file
            .seqs
            .map_or_else(|| "no events".to_owned(), |(a, b)| format!("seq {a}..{b}"));
        let _ = writeln!(out, "  {}  {seqs}", file.path.display());
    }
    match report.seqs {
        Some((first, last)) => {
            let start = if report.from_genesis {
                "chained from the first event (genesis)".to_owned()
            } else {
                format!("chained from seq {first} (earlier files are not present)")
            };
            let _ = writeln!(
                out,
                "events:      {} checked, seq {first}..{last}, {start}",
                report.events
            );
        }
        None => {
            let _ = writeln!(out, "events:      none");
        }
    }
    if report.checkpoints > 0 {
        let signed = match (&report.key, key_source) {
            (Some(key), Some(source)) => format!(
                "{} signature(s) valid with key {key} ({source})",
                report.checkpoints_signed
            ),
            (Some(key), None) => format!(
                "{} signature(s) valid with key {key}",
                report.checkpoints_signed
            ),
            (None, _) => "signatures NOT checked (no public key)".to_owned(),
        };
        let _ = writeln!(
            out,
            "checkpoints: {} in {}; {signed}; {} matched the log, {} cover deleted files",
            report.checkpoints,
            jitgate_audit::checkpoints_path(&report.live).display(),
            report.checkpoints_matched,
            report.checkpoints_retired,
        );
        if let (Some(covered), Some((_, last))) = (report.last_checkpointed, report.seqs) {
            if last > covered {
                let _ = writeln!(
                    out,
                    "             the last checkpoint covers seq {covered}; the {} event(s) after \
                     it are protected by the hash chain only",
                    last - covered
                );
            }
        }
    }
    if let Some((source, count, last)) = &report.witness {
        let _ = writeln!(
            out,
            "witness:     {count} checkpoint(s) in {source}{}",
            last.map(|l| format!(", the newest covering seq {l}"))
                .unwrap_or_default()
        );
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    for note in &report.acknowledged {
        let _ = writeln!(out, "note: {note}");
    }
    if report.is_ok() {
        let _ = writeln!(out, "OK: the audit log is intact");
    } else {
        for problem in &report.problems {
            let _ = writeln!(out, "FAILED: {problem}");
        }
    }
    out
}

fn as_json(report: &VerifyReport) -> serde_json::Value {
    let problems: Vec<_> = report
        .problems
        .iter()
        .map(|p| {
            serde_json::json!({
                "kind": format!("{:?}", p.kind),
                "file": p.file,
                "line": p.line,
                "seq": p.seq,
                "detail": p.detail,
            })
        })
        .collect();
    let files: Vec<_> = report
        .files
        .iter()
        .map(|f| {
            serde_json::json!({
                "path": f.path,
                "first_seq": f.seqs.map(|s| s.0),
                "last_seq": f.seqs.map(|s| s.1),
                "compressed": f.compressed,
            })
        })
        .collect();
    serde_json::json!({
        "ok": report.is_ok(),
        "live": report.live,
        "files": files,
        "events": report.events,
        "first_seq": report.seqs.map(|s| s.0),
        "last_seq": report.seqs.map(|s| s.1),
        "from_genesis": report.from_genesis,
        "checkpoints": report.checkpoints,
        "checkpoints_signed": report.checkpoints_signed,
        "checkpoints_matched": report.checkpoints_matched,
        "checkpoints_retired": report.checkpoints_retired,
        "last_checkpointed": report.last_checkpointed,
        "public_key": report.key.map(|k| k.to_hex()),
        "warnings": report.warnings,
        "acknowledged": report.acknowledged,
        "witness": report.witness.as_ref().map(|(source, count, last)| serde_json::json!({
            "source": source, "checkpoints": count, "last_seq": last,
        })),
        "problems": problems,
    })
}

/// `jitgate audit acknowledge-truncation`: records the operator's acknowledgement of a
/// cut-back log in the log itself (the writer does it when opening the log with it), so
/// `jitgate serve` starts on it again and `verify` reports the loss instead of failing.
pub async fn acknowledge(config_path: &Path, cmd: AuditAcknowledgeCmd) -> Result<()> {
    let reason = cmd.reason.trim();
    if reason.is_empty() {
        bail!("--reason must say why the loss is accepted; it is recorded in the audit log");
    }
    let mut audit = config::load_audit(config_path)
        .map_err(anyhow::Error::from)
        .context("cannot read the audit settings")?;
    let by = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    audit.acknowledge_cut = Some(CutAcknowledgement {
        reason: reason.to_owned(),
        by,
    });
    if let (Ok((store, witness)), Some(key)) =
        (config::load_witness(config_path), &audit.signing_key)
    {
        audit.witnessed = jitgate::witness::newest(&store, &witness, &key.public()).await;
    }
    let path = audit.path.clone();
    let (writer, guard) = AuditWriter::start(audit)?;
    drop(writer);
    guard.close().await?;
    let last = jitgate_audit::read_events(&path)?
        .filter_map(Result::ok)
        .last()
        .map(|e| e.seq);
    outln!(
        "recorded a log_cut_acknowledged event{} in {}; jitgate serve starts on this log again, \
         and `jitgate audit verify` reports the loss",
        last.map(|s| format!(" (seq {s})")).unwrap_or_default(),
        path.display()
    );
    Ok(())
}

/// `jitgate audit keygen`.
pub fn keygen(cmd: AuditKeygenCmd) -> Result<()> {
    let made = jitgate_audit::write_key_pair(&cmd.out)?;
    jitgate::outln!(
        "private key: {} (mode 0600: readable only by the user jitgate runs as)",
        made.private.display()
    );
    jitgate::outln!("public key:  {}", made.public.display());
    jitgate::outln!("key:         {}", made.key);
    jitgate::outln!();
    jitgate::outln!("To sign checkpoints, add to the audit: section of jitgate.yaml:");
    jitgate::outln!("  signing_key_file: {}", made.private.display());
    jitgate::outln!("Give the public key to whoever verifies the log:");
    jitgate::outln!(
        "  jitgate audit verify --public-key {}",
        made.public.display()
    );
    Ok(())
}
