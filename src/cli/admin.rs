//! `grant`, `revoke`, `grants`, `sessions`: clients of the running server's admin API.
//!
//! They need only the config's `admin:` section (address and token), so they work on a
//! machine without the upstream passwords.

use std::path::Path;

use anyhow::Result;
use jiff::Timestamp;
use jitgate::api::{AdminClient, GrantView, IssueBody, ListQuery, RevokeBody, SessionView};
use jitgate_policy::GrantState;

use super::table;
use super::{GrantCmd, GrantsCmd, RevokeCmd, SessionsCmd};

fn client(config_path: &Path) -> Result<AdminClient> {
    Ok(AdminClient::from_config(config_path)?)
}

/// `jitgate grant`.
pub async fn grant(config_path: &Path, cmd: GrantCmd) -> Result<()> {
    let client = client(config_path)?;
    let view = client
        .issue(&IssueBody {
            identity: cmd.identity,
            target: cmd.target,
            role: cmd.role,
            duration: humantime::format_duration(cmd.duration).to_string(),
            reason: cmd.reason,
            not_before: cmd.not_before.map(|t| t.to_string()),
            issued_by: cmd.issued_by,
        })
        .await?;
    let g = &view.grant;
    let now = Timestamp::now();
    jitgate::outln!("grant {}", g.id);
    jitgate::outln!("  {} → {} as {}", g.identity, g.target, g.role);
    if g.not_before > now {
        jitgate::outln!(
            "  starts  {} ({})",
            g.not_before,
            table::relative(g.not_before, now)
        );
    }
    jitgate::outln!(
        "  expires {} ({})",
        g.expires_at,
        table::relative(g.expires_at, now)
    );
    Ok(())
}

/// `jitgate revoke`.
pub async fn revoke(config_path: &Path, cmd: RevokeCmd) -> Result<()> {
    let client = client(config_path)?;
    let view = client
        .revoke(
            cmd.grant_id,
            &RevokeBody {
                reason: cmd.reason,
                revoked_by: cmd.revoked_by,
            },
        )
        .await?;
    let n = view.sessions_dropped;
    jitgate::outln!(
        "revoked grant {}; {n} live session{} dropped",
        view.grant.grant.id,
        if n == 1 { "" } else { "s" }
    );
    Ok(())
}

/// Whether a grant can still admit sessions now or later.
fn is_current(view: &GrantView) -> bool {
    matches!(view.grant.state, GrantState::Pending | GrantState::Approved)
}

/// `jitgate grants`.
pub async fn grants(config_path: &Path, cmd: GrantsCmd) -> Result<()> {
    let client = client(config_path)?;
    let mut grants = client
        .list(&ListQuery {
            identity: cmd.identity,
            target: cmd.target,
            ..ListQuery::default()
        })
        .await?;
    if !cmd.all {
        grants.retain(is_current);
    }
    if cmd.json {
        jitgate::outln!("{}", serde_json::to_string_pretty(&grants)?);
        return Ok(());
    }
    if grants.is_empty() {
        jitgate::outln!("no {}grants", if cmd.all { "" } else { "current " });
        return Ok(());
    }
    let now = Timestamp::now();
    let rows: Vec<Vec<String>> = grants.iter().map(|v| grant_row(v, now)).collect();
    jitgate::out!(
        "{}",
        table::render(
            &[
                "ID",
                "IDENTITY",
                "TARGET",
                "ROLE",
                "STATE",
                "REMAINING",
                "EXPIRES_AT"
            ],
            &rows
        )
    );
    Ok(())
}

fn grant_row(view: &GrantView, now: Timestamp) -> Vec<String> {
    let g = &view.grant;
    let remaining = match view.remaining_s {
        Some(secs) => table::span(jiff::SignedDuration::from_secs(secs)),
        None if is_current(view) && g.not_before > now => {
            format!("starts {}", table::relative(g.not_before, now))
        }
        None => "-".to_owned(),
    };
    vec![
        g.id.to_string(),
        g.identity.clone(),
        g.target.clone(),
        g.role.clone(),
        g.state.to_string(),
        remaining,
        table::time(g.expires_at),
    ]
}

/// `jitgate sessions`.
pub async fn sessions(config_path: &Path, cmd: SessionsCmd) -> Result<()> {
    let client = client(config_path)?;
    let sessions = client.sessions().await?;
    if cmd.json {
        jitgate::outln!("{}", serde_json::to_string_pretty(&sessions)?);
        return Ok(());
    }
    if sessions.is_empty() {
        jitgate::outln!("no live sessions");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = sessions.iter().map(session_row).collect();
    jitgate::out!(
        "{}",
        table::render(
            &["SESSION", "IDENTITY", "TARGET", "ROLE", "GRANT", "CLIENT", "STARTED", "DEADLINE"],
            &rows
        )
    );
    Ok(())
}

fn session_row(s: &SessionView) -> Vec<String> {
    vec![
        s.session_id.to_string(),
        s.identity.clone(),
        s.target.clone(),
        s.role.clone(),
        s.grant_id.to_string(),
        if s.tls {
            format!("{} (tls)", s.client_addr)
        } else {
            s.client_addr.clone()
        },
        table::time(s.started_at),
        table::time(s.deadline),
    ]
}
