//! `/v1/grants` handlers: issue, list, get, revoke.
//!
//! Issue and revoke write their audit event (`grant_issued`, `grant_revoked`) before
//! answering. Both fail closed on the audit log:
//! - issue: if `grant_issued` cannot be written, the grant is revoked again (and any session
//!   that raced in is dropped) and the caller gets 503 — no usable grant without its record;
//! - revoke: the revocation and the session drops happen first (removing access must not
//!   wait on the disk); if `grant_revoked` then cannot be written the caller gets 503 saying
//!   the grant *is* revoked but unrecorded, so the operator knows to look at the audit log.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use jiff::{SignedDuration, Timestamp};
use jitgate_audit::{Event, EventBody};
use jitgate_policy::{Actor, Grant, GrantFilter, GrantState, IssueRequest};
use jitgate_proxy::registry::Revocation;
use serde::Deserialize;
use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::types::{GrantList, GrantView, IssueBody, RevokeBody, RevokeView};
use super::ApiState;

/// Who a change is attributed to when the request does not say.
pub(crate) const DEFAULT_ACTOR: &str = "admin";
/// Who the automatic revocation after a failed audit write is attributed to.
const SYSTEM_ACTOR: &str = "jitgate";

/// A grant duration from a request ([`jitgate_policy::parse_duration`]).
pub(crate) fn parse_duration(field: &str, text: &str) -> Result<SignedDuration, ApiError> {
    jitgate_policy::parse_duration(text)
        .map_err(|why| ApiError::bad_request(format!("{field}: {why}")))
}

pub(crate) fn parse_timestamp(field: &str, text: &str) -> Result<Timestamp, ApiError> {
    text.trim().parse().map_err(|e| {
        ApiError::bad_request(format!(
            "{field}: {text:?} is not an RFC 3339 timestamp ({e}); example: 2026-01-31T14:00:00Z"
        ))
    })
}

/// `Some(trimmed)` unless blank.
pub(crate) fn non_blank(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn grant_event(body: EventBody, grant: &Grant) -> Event {
    Event::new(body)
        .with_identity(grant.identity.as_str())
        .with_target(grant.target.as_str())
        .with_role(grant.role.as_str())
        .with_grant(grant.id)
}

/// `POST /v1/grants` → 201 and the grant.
pub(crate) async fn issue(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<IssueBody>, JsonRejection>,
) -> Result<(StatusCode, Json<GrantView>), ApiError> {
    let Json(body) = body?;
    let duration = parse_duration("duration", &body.duration)?;
    let not_before = body
        .not_before
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_timestamp("not_before", s))
        .transpose()?;
    let issued_by = non_blank(body.issued_by).unwrap_or_else(|| DEFAULT_ACTOR.to_owned());
    let grant = state
        .lifecycle
        .engine
        .issue(IssueRequest {
            identity: body.identity,
            target: body.target,
            role: body.role,
            duration,
            not_before,
            reason: body.reason,
            issued_by,
        })
        .await?;

    let event = grant_event(
        EventBody::GrantIssued {
            not_before: grant.not_before,
            expires_at: grant.expires_at,
            reason: grant.reason.clone(),
            issued_by: grant.issued_by.clone(),
        },
        &grant,
    );
    if let Err(err) = state.lifecycle.audit.write(event).await {
        tracing::error!(grant_id = %grant.id, error = %err,
            "audit log unavailable: revoking the grant just issued");
        return Err(undo_issue(&state, &grant, &err.to_string()).await);
    }
    let now = state.lifecycle.engine.now();
    Ok((StatusCode::CREATED, Json(GrantView::at(grant, now))))
}

/// Takes back a grant whose `grant_issued` event could not be recorded.
async fn undo_issue(state: &ApiState, grant: &Grant, audit_error: &str) -> ApiError {
    let reason = "audit log unavailable when the grant was issued";
    let actor = Actor::Admin(SYSTEM_ACTOR.to_owned());
    match state
        .lifecycle
        .engine
        .revoke(grant.id, &actor, Some(reason))
        .await
    {
        Ok(outcome) => {
            let revoked = outcome.grant;
            state.lifecycle.registry.revoke_grant(
                grant.id,
                Revocation {
                    by: SYSTEM_ACTOR.to_owned(),
                    reason: Some(reason.to_owned()),
                    at: revoked
                        .revoked_at
                        .unwrap_or_else(|| state.lifecycle.engine.now()),
                },
            );
            ApiError::unavailable(format!(
                "the grant was not issued: the audit log cannot be written ({audit_error}); \
                 fix the audit log and try again"
            ))
        }
        Err(err) => {
            tracing::error!(grant_id = %grant.id, error = %err,
                "could not revoke a grant whose issue was not audited");
            ApiError::unavailable(format!(
                "the audit log cannot be written ({audit_error}) and grant {} could not be \
                 revoked again ({}); revoke it with `jitgate revoke {}` once the store works",
                grant.id,
                err.client_message(),
                grant.id
            ))
        }
    }
}

/// Query string of `GET /v1/grants`; empty values mean "no filter".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListQuery {
    identity: Option<String>,
    target: Option<String>,
    state: Option<String>,
    active: Option<String>,
}

fn parse_bool(field: &str, text: &str) -> Result<bool, ApiError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "{field}: expected true or false, got {text:?}"
        ))),
    }
}

/// `GET /v1/grants` → matching grants, newest first.
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<RawListQuery>, QueryRejection>,
) -> Result<Json<GrantList>, ApiError> {
    let Query(query) = query?;
    let grant_state = non_blank(query.state)
        .map(|s| {
            s.parse::<GrantState>()
                .map_err(|e| ApiError::bad_request(format!("state: {e}")))
        })
        .transpose()?;
    let active = match non_blank(query.active) {
        Some(text) => parse_bool("active", &text)?,
        None => false,
    };
    let now = state.lifecycle.engine.now();
    let filter = GrantFilter {
        identity: non_blank(query.identity),
        target: non_blank(query.target),
        state: grant_state,
        active_at: active.then_some(now),
        ..GrantFilter::default()
    };
    let grants = state.lifecycle.engine.list(&filter).await?;
    Ok(Json(GrantList {
        grants: grants.into_iter().map(|g| GrantView::at(g, now)).collect(),
    }))
}

pub(crate) fn grant_id(path: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    let Path(text) = path?;
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("{text:?} is not a grant id (a UUID)")))
}

/// `GET /v1/grants/{id}`.
pub(crate) async fn get(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<GrantView>, ApiError> {
    let id = grant_id(path)?;
    let grant = state.lifecycle.engine.get(id).await?;
    let now = state.lifecycle.engine.now();
    Ok(Json(GrantView::at(grant, now)))
}

/// `POST /v1/grants/{id}/revoke` → the revoked grant and how many sessions were dropped.
/// The body is optional (no body, or `{}`, revokes as `admin` without a reason). The
/// administrator may revoke any grant; a logged-in identity only its own (giving access
/// back early). Revoking a revoked grant again answers with it and drops nothing.
/// Removing access never waits on the disk: sessions are dropped before the audit event
/// is written; if that write fails the answer is 503 saying the grant *is* revoked.
pub(crate) async fn revoke(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<RevokeView>, ApiError> {
    let id = grant_id(path)?;
    let body: RevokeBody = if body.iter().all(u8::is_ascii_whitespace) {
        RevokeBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid revoke request body: {e}")))?
    };
    let actor = match &caller {
        Caller::Admin => {
            Actor::Admin(non_blank(body.revoked_by).unwrap_or_else(|| DEFAULT_ACTOR.to_owned()))
        }
        Caller::Identity { name, .. } => Actor::Identity(name.clone()),
    };
    let reason = non_blank(body.reason);
    // This replica's own change: its sessions are dropped (and counted) by `record`.
    let _changing = state.lifecycle.changing(id);
    let outcome = state
        .lifecycle
        .engine
        .revoke(id, &actor, reason.as_deref())
        .await?;
    let dropped = state
        .lifecycle
        .record(&outcome.transitions)
        .await
        .map_err(|err| {
            ApiError::unavailable(format!(
                "grant {id} is revoked and its live sessions were dropped, but the audit log \
                 could not record it: {err}"
            ))
        })?;
    let now = state.lifecycle.engine.now();
    Ok(Json(RevokeView {
        grant: GrantView::at(outcome.grant, now),
        sessions_dropped: dropped,
    }))
}
