//! The request/approval commands: `login`, `logout`, `whoami`, `request`, `requests`,
//! `approve`, `deny`, `cancel`, `extend`, `review`, `policy explain`.
//!
//! They act as the identity stored by `jitgate login` (see [`super::credentials`]); only
//! `cancel --admin` and `policy explain` without a login use the config's admin token.
//! Every answer says what happened and what comes next.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use jiff::Timestamp;
use jitgate::api::{
    AdminClient, Decision, DecisionBody, ExplainQuery, ExtendBody, GrantView, LoginBody,
    OutcomeView, RequestBody, RequestsQuery,
};
use jitgate::config;
use jitgate_policy::GrantState;
use jitgate_proxy::settings::Secret;

use super::credentials::{self, Credentials};
use super::table;
use super::{
    ApproveCmd, CancelCmd, DenyCmd, ExplainCmd, ExtendCmd, JsonFlag, LoginCmd, RequestCmd,
    RequestsCmd,
};

/// `jitgate login`.
pub async fn login(config_path: &Path, cmd: LoginCmd) -> Result<()> {
    let (server, ca_file) = match cmd.server {
        Some(url) => (url, cmd.ca_file),
        None => {
            let endpoint = config::load_admin_endpoint(config_path).with_context(|| {
                "no --server given and the config's admin.listen cannot be read".to_owned()
            })?;
            (endpoint.url, cmd.ca_file.or(endpoint.ca_file))
        }
    };
    // Before the password is asked for: it must not travel in clear text.
    jitgate::api::check_password_transport(&server)?;
    let identity = match cmd.identity {
        Some(identity) => identity,
        None if std::io::stdin().is_terminal() => {
            eprint!("Identity: ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim().to_owned()
        }
        None => bail!("--identity is required when stdin is not a terminal"),
    };
    let password = match super::hash::read_password_once()? {
        Some(piped) => piped,
        None => rpassword::prompt_password(format!("Password for {identity}: "))
            .context("cannot read the password")?,
    };
    let client = AdminClient::with_ca(
        server.clone(),
        Secret::new(String::new()),
        ca_file.as_deref(),
    )?;
    let view = client
        .login(&LoginBody {
            identity: identity.clone(),
            password,
        })
        .await?;
    let path = credentials::save(&Credentials {
        server,
        identity: view.identity.clone(),
        token: view.token,
        expires_at: view.expires_at,
        ca_file: ca_file.map(|p| std::path::absolute(&p).unwrap_or(p)),
    })?;
    jitgate::outln!(
        "logged in as {} until {} ({}); token stored in {}",
        view.identity,
        view.expires_at,
        table::relative(view.expires_at, Timestamp::now()),
        path.display()
    );
    Ok(())
}

/// `jitgate logout`.
pub fn logout() -> Result<()> {
    if credentials::remove()? {
        jitgate::outln!("logged out (stored token removed)");
    } else {
        jitgate::outln!("not logged in");
    }
    Ok(())
}

/// `jitgate whoami`.
pub async fn whoami(cmd: JsonFlag) -> Result<()> {
    let (client, creds) = credentials::client()?;
    let me = client.whoami().await?;
    if cmd.json {
        jitgate::outln!("{}", serde_json::to_string_pretty(&me)?);
        return Ok(());
    }
    jitgate::outln!(
        "{} (identity) at {}",
        me.identity.as_deref().unwrap_or("?"),
        creds.server
    );
    if me.groups.is_empty() {
        jitgate::outln!("  groups: none");
    } else {
        jitgate::outln!("  groups: {}", me.groups.join(", "));
    }
    if let Some(exp) = me.expires_at {
        jitgate::outln!(
            "  login valid until {exp} ({})",
            table::relative(exp, Timestamp::now())
        );
    }
    Ok(())
}

fn humantime(d: std::time::Duration) -> String {
    ::humantime::format_duration(d).to_string()
}

/// Prints what a workflow call did and what comes next.
fn report(view: &OutcomeView, json: bool) -> Result<()> {
    if json {
        jitgate::outln!("{}", serde_json::to_string_pretty(view)?);
        return Ok(());
    }
    let g = &view.grant.grant;
    let now = Timestamp::now();
    let what = if g.extends.is_some() {
        "extension"
    } else {
        "request"
    };
    if view.steps.is_empty() {
        jitgate::outln!(
            "{what} {} unchanged (this was already done): {}",
            g.id,
            g.state
        );
    }
    for step in &view.steps {
        let comment = step
            .comment
            .as_deref()
            .map(|c| format!(" — {c}"))
            .unwrap_or_default();
        jitgate::outln!(
            "{}: {} by {}{comment}",
            step.grant_id,
            step.action,
            step.actor
        );
    }
    jitgate::outln!(
        "{what} {}: {} → {} as {}, state {}",
        g.id,
        g.identity,
        g.target,
        g.role,
        g.state
    );
    match g.state {
        GrantState::Pending => {
            let have = g.human_approvals();
            jitgate::outln!(
                "  waiting for approval ({have} so far) until {}; approvers run: jitgate approve {}",
                g.pending_until.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                g.id
            );
        }
        GrantState::Approved if g.extends.is_some() => {
            jitgate::outln!(
                "  grant {} now ends at {} ({})",
                g.extends.map(|p| p.to_string()).unwrap_or_default(),
                g.expires_at,
                table::relative(g.expires_at, now)
            );
        }
        GrantState::Approved => {
            if g.not_before > now {
                jitgate::outln!(
                    "  starts {} ({})",
                    g.not_before,
                    table::relative(g.not_before, now)
                );
            }
            jitgate::outln!(
                "  expires {} ({}){}",
                g.expires_at,
                table::relative(g.expires_at, now),
                if g.break_glass {
                    "; BREAK-GLASS: flagged for review"
                } else {
                    ""
                }
            );
        }
        _ => {}
    }
    if view.sessions_dropped > 0 {
        jitgate::outln!("  {} live session(s) dropped", view.sessions_dropped);
    }
    Ok(())
}

/// `jitgate request`.
pub async fn request(cmd: RequestCmd) -> Result<()> {
    let (client, _) = credentials::client()?;
    let view = client
        .request_access(
            &RequestBody {
                target: cmd.target,
                role: cmd.role,
                duration: humantime(cmd.duration),
                reason: cmd.reason,
                ticket: cmd.ticket,
                start_at: cmd.start_at.map(|t| t.to_string()),
                break_glass: cmd.break_glass,
            },
            cmd.idempotency_key.as_deref(),
        )
        .await?;
    report(&view, cmd.json)
}

/// `jitgate requests`.
pub async fn requests(cmd: RequestsCmd) -> Result<()> {
    let (client, _) = credentials::client()?;
    let list = client
        .requests(&RequestsQuery {
            pending: cmd.pending.then_some(true),
            mine: cmd.mine.then_some(true),
        })
        .await?;
    if cmd.json {
        jitgate::outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        jitgate::outln!("no requests");
        return Ok(());
    }
    let now = Timestamp::now();
    let rows: Vec<Vec<String>> = list.iter().map(|v| request_row(v, now)).collect();
    jitgate::out!(
        "{}",
        table::render(
            &[
                "ID",
                "KIND",
                "IDENTITY",
                "TARGET",
                "ROLE",
                "FOR",
                "STATE",
                "APPROVALS",
                "RULE",
                "REASON"
            ],
            &rows
        )
    );
    Ok(())
}

fn request_row(view: &GrantView, now: Timestamp) -> Vec<String> {
    let g = &view.grant;
    let kind = match (g.extends, g.break_glass) {
        (Some(_), _) => "extension",
        (None, true) => "break-glass",
        (None, false) => "access",
    };
    let state = match (g.state, g.pending_until) {
        (GrantState::Pending, Some(until)) => {
            format!("pending (lapses {})", table::relative(until, now))
        }
        (state, _) => state.to_string(),
    };
    vec![
        g.id.to_string(),
        kind.to_owned(),
        g.identity.clone(),
        g.target.clone(),
        g.role.clone(),
        table::span(g.duration),
        state,
        g.human_approvals().to_string(),
        g.rule.clone().unwrap_or_default(),
        g.reason.clone(),
    ]
}

/// `jitgate approve`.
pub async fn approve(cmd: ApproveCmd) -> Result<()> {
    let (client, _) = credentials::client()?;
    let view = client
        .decide(
            cmd.id,
            Decision::Approve,
            &DecisionBody {
                comment: cmd.comment,
            },
        )
        .await?;
    report(&view, cmd.json)
}

/// `jitgate review`.
pub async fn review(cmd: ApproveCmd) -> Result<()> {
    let (client, _) = credentials::client()?;
    let view = client
        .decide(
            cmd.id,
            Decision::Review,
            &DecisionBody {
                comment: cmd.comment,
            },
        )
        .await?;
    report(&view, cmd.json)
}

/// `jitgate deny`.
pub async fn deny(cmd: DenyCmd) -> Result<()> {
    let (client, _) = credentials::client()?;
    let view = client
        .decide(
            cmd.id,
            Decision::Deny,
            &DecisionBody {
                comment: Some(cmd.comment),
            },
        )
        .await?;
    report(&view, cmd.json)
}

/// `jitgate cancel`.
pub async fn cancel(config_path: &Path, cmd: CancelCmd) -> Result<()> {
    let client = if cmd.admin {
        AdminClient::from_config(config_path)?
    } else {
        credentials::client()?.0
    };
    let view = client
        .decide(
            cmd.id,
            Decision::Cancel,
            &DecisionBody {
                comment: cmd.comment,
            },
        )
        .await?;
    report(&view, cmd.json)
}

/// `jitgate extend`.
pub async fn extend(cmd: ExtendCmd) -> Result<()> {
    let (client, _) = credentials::client()?;
    let view = client
        .extend(
            cmd.grant_id,
            &ExtendBody {
                duration: humantime(cmd.duration),
                reason: cmd.reason,
                ticket: cmd.ticket,
            },
            cmd.idempotency_key.as_deref(),
        )
        .await?;
    report(&view, cmd.json)
}

/// `jitgate policy explain`: as the logged-in identity, or with the admin token.
pub async fn explain(config_path: &Path, cmd: ExplainCmd) -> Result<()> {
    let client = match credentials::client() {
        Ok((client, _)) => client,
        Err(_) => AdminClient::from_config(config_path)?,
    };
    let view = client
        .explain(&ExplainQuery {
            identity: cmd.identity,
            target: cmd.target,
            role: cmd.role,
        })
        .await?;
    if cmd.json {
        jitgate::outln!("{}", serde_json::to_string_pretty(&view.explanation)?);
    } else {
        jitgate::out!("{}", view.text);
        if !view.text.ends_with('\n') {
            jitgate::outln!();
        }
    }
    Ok(())
}
