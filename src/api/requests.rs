//! The request/approval workflow routes: request, list, approve, deny, cancel, extend,
//! review, and `policy/explain`.
//!
//! Requesters and approvers are identities logged in with `jitgate login`; the rules
//! decide what each may do. The administrator (admin token) may list everything, cancel
//! and revoke, but approving stays a person's decision. Creating a request or an
//! extension honours an `Idempotency-Key` header: a retry returns the first answer's
//! record instead of filing a second request. Repeating a decision already taken returns
//! the record with no new steps.
//!
//! Every step is audited before the answer; if the audit log refuses, access that was
//! just approved is taken back (fail closed) and the answer is 503.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use jitgate_policy::{AccessRequest, Action, ExtensionRequest, GrantFilter, GrantState, Outcome};

use super::auth::Caller;
use super::error::ApiError;
use super::grants::{grant_id, non_blank, parse_duration, parse_timestamp, DEFAULT_ACTOR};
use super::types::{
    DecisionBody, ExplainQuery, ExplainView, ExtendBody, GrantView, OutcomeView, RequestBody,
    RequestList, RequestsQuery, StepView,
};
use super::ApiState;

/// Header carrying the client's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Longest accepted idempotency key.
const MAX_KEY_LEN: usize = 200;

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?
        .trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ApiError::bad_request(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

fn identity_of(caller: &Caller, what: &str) -> Result<String, ApiError> {
    match caller {
        Caller::Identity { name, .. } => Ok(name.clone()),
        Caller::Admin => Err(ApiError::forbidden(format!(
            "{what} is done by a logged-in identity (`jitgate login`), not with the admin \
             token; administrators issue grants directly with `jitgate grant`"
        ))),
    }
}

/// Records the outcome's steps (sessions, audit, webhooks) and builds the answer.
pub(crate) async fn finish(state: &ApiState, outcome: Outcome) -> Result<OutcomeView, ApiError> {
    let now = state.lifecycle.engine.now();
    match state.lifecycle.record(&outcome.transitions).await {
        Ok(dropped) => Ok(OutcomeView {
            steps: outcome
                .transitions
                .iter()
                .map(|t| StepView {
                    action: t.action.as_str().to_owned(),
                    actor: t.actor.clone(),
                    grant_id: t.grant.id,
                    from: t.from,
                    to: t.to,
                    comment: t.comment.clone(),
                })
                .collect(),
            grant: GrantView::at(outcome.grant, now),
            sessions_dropped: dropped,
        }),
        Err(err) => {
            let granted = outcome.transitions.iter().find(|t| {
                matches!(t.action, Action::Approved | Action::BreakGlass)
                    && t.grant.extends.is_none()
            });
            if let Some(t) = granted {
                return Err(ApiError::unavailable(
                    state.lifecycle.undo_unaudited(&t.grant, &err).await,
                ));
            }
            let steps: Vec<&str> = outcome
                .transitions
                .iter()
                .map(|t| t.action.as_str())
                .collect();
            Err(ApiError::unavailable(format!(
                "the change was made ({}) on {}, but the audit log could not record it: {err}; \
                 fix the audit log — the jitgate server log has the details",
                steps.join(", "),
                outcome.grant.id
            )))
        }
    }
}

fn created(view: OutcomeView) -> (StatusCode, Json<OutcomeView>) {
    let status = if view.steps.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, Json(view))
}

/// `POST /v1/requests` → 201 with the request (pending, or approved when the rules need
/// no approver); 200 with the original for a retried `Idempotency-Key`.
pub(crate) async fn create(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Json<RequestBody>, JsonRejection>,
) -> Result<(StatusCode, Json<OutcomeView>), ApiError> {
    let Json(body) = body?;
    let identity = identity_of(&caller, "requesting access")?;
    let duration = parse_duration("duration", &body.duration)?;
    let start_at = body
        .start_at
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_timestamp("start_at", s))
        .transpose()?;
    let outcome = state
        .lifecycle
        .engine
        .request(AccessRequest {
            identity,
            target: body.target,
            role: body.role,
            duration,
            start_at,
            reason: body.reason,
            ticket: body.ticket,
            break_glass: body.break_glass,
            idempotency_key: idempotency_key(&headers)?,
        })
        .await?;
    Ok(created(finish(&state, outcome).await?))
}

/// Whether `caller` may see `grant`: administrators everything; identities their own
/// records and the requests they could decide on.
fn visible(state: &ApiState, caller: &Caller, grant: &jitgate_policy::Grant) -> bool {
    match caller {
        Caller::Admin => true,
        Caller::Identity { name, .. } => {
            grant.identity == *name
                || grant.issued_by == *name
                || grant.rule.as_deref().is_some_and(|rule| {
                    state
                        .lifecycle
                        .engine
                        .rules()
                        .approvers(rule, &grant.identity)
                        .iter()
                        .any(|a| a == name)
                })
        }
    }
}

/// `GET /v1/requests?pending=&mine=` → requests (records made under a rule), newest first.
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<RequestsQuery>, QueryRejection>,
) -> Result<Json<RequestList>, ApiError> {
    let Query(query) = query?;
    let mut filter = GrantFilter::default();
    if query.pending == Some(true) {
        filter.state = Some(GrantState::Pending);
    }
    if query.mine == Some(true) {
        filter.identity = Some(identity_of(&caller, "listing your own requests")?);
    }
    let now = state.lifecycle.engine.now();
    let requests = state
        .lifecycle
        .engine
        .list(&filter)
        .await?
        .into_iter()
        .filter(|g| g.rule.is_some() && visible(&state, &caller, g))
        .map(|g| GrantView::at(g, now))
        .collect();
    Ok(Json(RequestList { requests }))
}

/// `GET /v1/requests/{id}`.
pub(crate) async fn get(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<GrantView>, ApiError> {
    let id = grant_id(path)?;
    let grant = state.lifecycle.engine.get(id).await?;
    if !visible(&state, &caller, &grant) {
        // Same answer as a missing record: ids of others' requests are not confirmed.
        return Err(jitgate_policy::PolicyError::NotFound(id).into());
    }
    Ok(Json(GrantView::at(grant, state.lifecycle.engine.now())))
}

fn decision(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<DecisionBody, ApiError> {
    let body = body.map_err(|e| ApiError::bad_request(format!("unreadable body: {e}")))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecisionBody::default());
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// `POST /v1/requests/{id}/approve`.
pub(crate) async fn approve(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<OutcomeView>, ApiError> {
    let id = grant_id(path)?;
    let body = decision(body)?;
    let approver = identity_of(&caller, "approving")?;
    let outcome = state
        .lifecycle
        .engine
        .approve(id, &approver, body.comment.as_deref())
        .await?;
    Ok(Json(finish(&state, outcome).await?))
}

/// `POST /v1/requests/{id}/deny` (comment required).
pub(crate) async fn deny(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<OutcomeView>, ApiError> {
    let id = grant_id(path)?;
    let body = decision(body)?;
    let approver = identity_of(&caller, "denying")?;
    let outcome = state
        .lifecycle
        .engine
        .deny(id, &approver, body.comment.as_deref().unwrap_or_default())
        .await?;
    Ok(Json(finish(&state, outcome).await?))
}

/// `POST /v1/requests/{id}/cancel` (the requester, or an administrator).
pub(crate) async fn cancel(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<OutcomeView>, ApiError> {
    let id = grant_id(path)?;
    let body = decision(body)?;
    let outcome = state
        .lifecycle
        .engine
        .cancel(id, &caller.actor(DEFAULT_ACTOR), body.comment.as_deref())
        .await?;
    Ok(Json(finish(&state, outcome).await?))
}

/// `POST /v1/grants/{id}/review` (break-glass grants; a member of the rule's `review_by`).
pub(crate) async fn review(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<OutcomeView>, ApiError> {
    let id = grant_id(path)?;
    let body = decision(body)?;
    let reviewer = identity_of(&caller, "reviewing break-glass access")?;
    let outcome = state
        .lifecycle
        .engine
        .review(id, &reviewer, body.comment.as_deref())
        .await?;
    Ok(Json(finish(&state, outcome).await?))
}

/// `POST /v1/grants/{id}/extend` → 201 with the extension request (approved at once when
/// the rules need no approver; then the grant's live sessions already run to the new end).
pub(crate) async fn extend(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<ExtendBody>, JsonRejection>,
) -> Result<(StatusCode, Json<OutcomeView>), ApiError> {
    let id = grant_id(path)?;
    let Json(body) = body?;
    let identity = identity_of(&caller, "asking for an extension")?;
    let duration = parse_duration("duration", &body.duration)?;
    let outcome = state
        .lifecycle
        .engine
        .extend(ExtensionRequest {
            grant: id,
            identity,
            duration,
            reason: non_blank(body.reason),
            ticket: non_blank(body.ticket),
            idempotency_key: idempotency_key(&headers)?,
        })
        .await?;
    Ok(created(finish(&state, outcome).await?))
}

/// `GET /v1/policy/explain?identity=&target=&role=`.
pub(crate) async fn explain(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<ExplainQuery>, QueryRejection>,
) -> Result<Json<ExplainView>, ApiError> {
    let Query(q) = query?;
    let explanation = state.lifecycle.engine.rules().explain(
        &q.identity,
        &q.target,
        &q.role,
        state.lifecycle.engine.now(),
    );
    let text = explanation.to_string();
    let explanation = serde_json::to_value(&explanation)
        .map_err(|e| ApiError::unavailable(format!("cannot encode the explanation: {e}")))?;
    Ok(Json(ExplainView { explanation, text }))
}
