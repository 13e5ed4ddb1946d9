//! The admin HTTP API (server) and its client, which the CLI uses.
//!
//! Every change to a grant goes through the running server, so the process that enforces
//! grants learns of a revocation at once and drops the affected sessions.
//!
//! # Routes (JSON; all but health need `Authorization: Bearer <admin token>`)
//! - `POST /v1/grants` — issue; 201 with the grant. Writes `grant_issued` to the audit log
//!   first; if that fails the grant is revoked again and the answer is 503 (fail closed).
//! - `GET /v1/grants?identity=&target=&state=&active=true` — list, newest first.
//! - `GET /v1/grants/{id}` — one grant.
//! - `POST /v1/grants/{id}/revoke` — revoke, drop its live sessions at once, write
//!   `grant_revoked`; 409 when the grant is not revocable (already revoked or expired).
//! - `GET /v1/sessions` — live sessions of this process.
//! - `GET /v1/health` — `{"status":"ok"|"degraded","audit":"ok"|"unavailable"}`,
//!   **unauthenticated** so probes need no secret; it reveals nothing but liveness and
//!   whether the audit log takes events (statements are refused while it does not).
//! - `GET /metrics` — Prometheus text: live sessions, audit health, failed audit writes.
//!
//! Grants are shown with their *effective* `state` at answer time and `remaining_s`.
//! Errors are `{"error": "…"}` with 400 (invalid request), 401 (token), 404 (no such grant
//! or route), 409 (not revocable), 503 (grant store or audit log unavailable).
//!
//! The API is plain HTTP meant for localhost (or a private admin network): bind it to a
//! loopback address.

mod auth;
mod client;
mod error;
mod grants;
pub mod types;

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use jitgate_audit::AuditWriter;
use jitgate_policy::Engine;
use jitgate_proxy::registry::SessionRegistry;
use jitgate_proxy::settings::Secret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use client::AdminClient;
pub use error::ApiError;
pub use types::{
    ErrorBody, GrantList, GrantView, Health, IssueBody, ListQuery, RevokeBody, RevokeView,
    SessionList, SessionView,
};

/// What the admin API works on: the same engine, session registry and audit writer as the
/// proxy, so changes take effect in the enforcing process.
#[derive(Debug)]
pub struct ApiState {
    pub engine: Engine,
    pub registry: Arc<SessionRegistry>,
    pub audit: AuditWriter,
    /// The bearer token every request (except health) must present.
    pub token: Secret,
}

/// The admin API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    let state = Arc::new(state);
    let protected = Router::new()
        .route("/v1/grants", post(grants::issue).get(grants::list))
        .route("/v1/grants/{id}", get(grants::get))
        .route("/v1/grants/{id}/revoke", post(grants::revoke))
        .route("/v1/sessions", get(sessions))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_token,
        ));
    Router::new()
        .route("/v1/health", get(health))
        .merge(protected)
        .fallback(|| async { ApiError::not_found("no such admin API route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this admin API route",
            )
        })
        .with_state(state)
}

/// Serves the admin API on `listener` until `shutdown` is cancelled, then finishes the
/// requests in flight and returns.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// `GET /v1/health`.
async fn health(State(state): State<Arc<ApiState>>) -> Json<Health> {
    let audit = state.audit.health();
    Json(Health {
        status: if audit.healthy { "ok" } else { "degraded" }.to_owned(),
        audit: if audit.healthy { "ok" } else { "unavailable" }.to_owned(),
    })
}

/// `GET /metrics`: Prometheus text format, for the operator's monitoring.
async fn metrics(State(state): State<Arc<ApiState>>) -> impl axum::response::IntoResponse {
    let audit = state.audit.health();
    let body = format!(
        "# HELP jitgate_sessions_live Sessions currently relayed by this process.\n\
         # TYPE jitgate_sessions_live gauge\n\
         jitgate_sessions_live {}\n\
         # HELP jitgate_audit_healthy 1 while the audit log takes events; 0 while statements are refused.\n\
         # TYPE jitgate_audit_healthy gauge\n\
         jitgate_audit_healthy {}\n\
         # HELP jitgate_audit_failed_writes_total Audit writes that failed (each a statement that was not run).\n\
         # TYPE jitgate_audit_failed_writes_total counter\n\
         jitgate_audit_failed_writes_total {}\n",
        state.registry.len(),
        u8::from(audit.healthy),
        audit.failed_writes,
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}

/// `GET /v1/sessions`.
async fn sessions(State(state): State<Arc<ApiState>>) -> Json<SessionList> {
    Json(SessionList {
        sessions: state.registry.list(),
    })
}
