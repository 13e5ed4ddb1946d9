//! The admin HTTP API (server) and its client, which the CLI uses.
//!
//! Every change to a grant goes through the running server, so the process that enforces
//! grants learns of a revocation at once and drops the affected sessions.
//!
//! The full reference, with every body and answer, is `docs/openapi.yaml`.
//!
//! # Routes (JSON)
//! No token: `GET /v1/health`, `POST /v1/login`.
//!
//! Admin token (`Authorization: Bearer <admin token>`):
//! - `POST /v1/grants` — issue; 201 with the grant. Writes `grant_issued` to the audit log
//!   first; if that fails the grant is revoked again and the answer is 503 (fail closed).
//! - `GET /v1/grants?identity=&target=&state=&active=true` — list, newest first.
//! - `GET /v1/grants/{id}` — one grant.
//! - `GET /v1/sessions` — live sessions of this process.
//!
//! Admin token or a `jitgate login` token (the rules decide what an identity may do):
//! - `GET /v1/whoami`;
//! - `POST /v1/requests` (identity; `Idempotency-Key` honoured), `GET /v1/requests?pending=&mine=`,
//!   `GET /v1/requests/{id}`, `POST /v1/requests/{id}/approve|deny|cancel`;
//! - `POST /v1/grants/{id}/extend` (the holder; `Idempotency-Key` honoured),
//!   `POST /v1/grants/{id}/review` (break-glass), `POST /v1/grants/{id}/revoke` (admin:
//!   any grant; identity: its own) — drops live sessions at once;
//! - `GET /v1/policy/explain?identity=&target=&role=`.
//! - `GET /v1/health` — `{"status":"ok"|"degraded","audit":"ok"|"unavailable"}`,
//!   **unauthenticated** so probes need no secret; it reveals nothing but liveness and
//!   whether the audit log takes events (statements are refused while it does not).
//! - `GET /metrics` (admin token) — Prometheus text: live sessions, audit health, failed
//!   audit writes, webhook deliveries.
//!
//! Grants are shown with their *effective* `state` at answer time and `remaining_s`.
//! Errors are `{"error": "…"}` with 400 (invalid request), 401 (token), 403 (the rules or
//! the caller's kind do not allow it), 404 (no such grant or route), 409 (the record's
//! state does not allow it: already denied, expired, not revocable…), 503 (grant store or
//! audit log unavailable).
//!
//! The API is plain HTTP meant for localhost, or HTTPS (`admin.tls`, see [`tls`]) for
//! anything else: `jitgate login` refuses to send a password over plain HTTP to a host
//! that is not loopback.

mod auth;
mod client;
mod error;
mod grants;
mod login;
mod requests;
mod throttle;
pub mod tls;
pub mod token;
pub mod types;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use jitgate_proxy::auth::ScramVerifier;
use jitgate_proxy::settings::Secret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::Caller;
pub use client::{check_password_transport, AdminClient, Decision};
pub use error::ApiError;
pub use requests::IDEMPOTENCY_KEY;
pub use throttle::LoginLimits;
pub use token::TokenKeys;
pub use types::{
    DecisionBody, ErrorBody, ExplainQuery, ExplainView, ExtendBody, GrantList, GrantView, Health,
    IssueBody, ListQuery, LoginBody, LoginView, OutcomeView, RequestBody, RequestList,
    RequestsQuery, RevokeBody, RevokeView, SessionList, SessionView, StepView, WhoAmI,
};

use jitgate_proxy::limits::RefusalAudit;

use crate::lifecycle::Lifecycle;

/// What the API works on: the same engine, session registry, audit writer and notifier
/// as the proxy, so changes take effect in the enforcing process.
pub struct ApiState {
    pub lifecycle: Lifecycle,
    /// The administrator's bearer token.
    pub token: Secret,
    /// Signs and checks `jitgate login` tokens.
    pub login_keys: TokenKeys,
    /// Identities' password verifiers (the proxy's), for `POST /v1/login`.
    pub identities: Arc<HashMap<String, ScramVerifier>>,
    /// Stand-in verifiers for unknown identities derive from this (the proxy's
    /// `unknown_identity_key`).
    pub mock_secret: [u8; 32],
    /// Rate limits of `POST /v1/login`, per client address and per identity.
    pub login_limits: LoginLimits,
    /// Failed logins are audited through this (names cut, rate-limited); the proxy's.
    pub refusal_audit: Arc<RefusalAudit>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("lifecycle", &self.lifecycle)
            .field("identities", &self.identities.len())
            .finish_non_exhaustive()
    }
}

/// Who may call a route: the token its guard demands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token (`/v1/health`, `/v1/login`).
    Public,
    /// The admin token only (`auth::require_admin`): a login token gets 403.
    Admin,
    /// The admin token or a `jitgate login` token (`auth::require_caller`); the rules
    /// decide what an identity may do.
    Caller,
}

/// One route the admin API serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// The path as the router matches it (`{id}` for a path parameter).
    pub path: &'static str,
    pub access: Access,
}

/// Every route with its handler: the one list the router is built from and the
/// documentation is checked against ([`routes`]).
fn table() -> Vec<(Route, MethodRouter<Arc<ApiState>>)> {
    use Access::{Admin, Caller, Public};
    let route = |method, path, access| Route {
        method,
        path,
        access,
    };
    vec![
        (route(Method::Get, "/v1/health", Public), get(health)),
        (route(Method::Post, "/v1/login", Public), post(login::login)),
        (
            route(Method::Post, "/v1/grants", Admin),
            post(grants::issue),
        ),
        (route(Method::Get, "/v1/grants", Admin), get(grants::list)),
        (
            route(Method::Get, "/v1/grants/{id}", Admin),
            get(grants::get),
        ),
        (route(Method::Get, "/v1/sessions", Admin), get(sessions)),
        (route(Method::Get, "/metrics", Admin), get(metrics)),
        (route(Method::Get, "/v1/whoami", Caller), get(login::whoami)),
        (
            route(Method::Post, "/v1/requests", Caller),
            post(requests::create),
        ),
        (
            route(Method::Get, "/v1/requests", Caller),
            get(requests::list),
        ),
        (
            route(Method::Get, "/v1/requests/{id}", Caller),
            get(requests::get),
        ),
        (
            route(Method::Post, "/v1/requests/{id}/approve", Caller),
            post(requests::approve),
        ),
        (
            route(Method::Post, "/v1/requests/{id}/deny", Caller),
            post(requests::deny),
        ),
        (
            route(Method::Post, "/v1/requests/{id}/cancel", Caller),
            post(requests::cancel),
        ),
        (
            route(Method::Post, "/v1/grants/{id}/extend", Caller),
            post(requests::extend),
        ),
        (
            route(Method::Post, "/v1/grants/{id}/review", Caller),
            post(requests::review),
        ),
        (
            route(Method::Post, "/v1/grants/{id}/revoke", Caller),
            post(grants::revoke),
        ),
        (
            route(Method::Get, "/v1/policy/explain", Caller),
            get(requests::explain),
        ),
    ]
}

/// The routes the admin API serves, with the token each demands.
pub fn routes() -> Vec<Route> {
    table().into_iter().map(|(route, _)| route).collect()
}

/// The admin API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    let state = Arc::new(state);
    let mut router = Router::new();
    for (route, handler) in table() {
        let guarded = match route.access {
            Access::Public => handler,
            Access::Admin => handler.route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                auth::require_admin,
            )),
            Access::Caller => handler.route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                auth::require_caller,
            )),
        };
        // Two methods of one path are merged into one method router.
        router = router.route(route.path, guarded);
    }
    router
        .fallback(|| async { ApiError::not_found("no such admin API route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this admin API route",
            )
        })
        .with_state(state)
}

/// An HTTP method of a [`Route`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    /// The method's name, upper case (`GET`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// Serves the admin API on `listener` until `shutdown` is cancelled, then finishes the
/// requests in flight and returns.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

/// Like [`serve`], over HTTPS with `config` (`admin.tls`).
pub async fn serve_tls(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // `tap_io` gives the listener axum's `ConnectInfo<SocketAddr>` (the peer's address).
    let listener = tls::TlsListener::new(listener, config)?.tap_io(|_| {});
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

/// `GET /v1/health`: `degraded` while the audit log refuses events or the grant store
/// does not answer (then no session is admitted and statements are refused).
async fn health(State(state): State<Arc<ApiState>>) -> Json<Health> {
    let audit = state.lifecycle.audit.health();
    let store_ok = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.lifecycle.engine.store().ping(),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    Json(Health {
        status: if audit.healthy && store_ok {
            "ok"
        } else {
            "degraded"
        }
        .to_owned(),
        audit: if audit.healthy { "ok" } else { "unavailable" }.to_owned(),
        store: if store_ok { "ok" } else { "unavailable" }.to_owned(),
    })
}

/// `GET /metrics`: Prometheus text format, for the operator's monitoring.
async fn metrics(State(state): State<Arc<ApiState>>) -> impl axum::response::IntoResponse {
    let audit = state.lifecycle.audit.health();
    let hooks = state.lifecycle.notifier.stats();
    let body = format!(
        "# HELP jitgate_sessions_live Sessions currently relayed by this process.\n\
         # TYPE jitgate_sessions_live gauge\n\
         jitgate_sessions_live {}\n\
         # HELP jitgate_audit_healthy 1 while the audit log takes events; 0 while statements are refused.\n\
         # TYPE jitgate_audit_healthy gauge\n\
         jitgate_audit_healthy {}\n\
         # HELP jitgate_audit_failed_writes_total Audit events the log refused (a refused query event is a statement that was not run).\n\
         # TYPE jitgate_audit_failed_writes_total counter\n\
         jitgate_audit_failed_writes_total {}\n\
         # HELP jitgate_webhook_deliveries_total Webhook deliveries by final outcome.\n\
         # TYPE jitgate_webhook_deliveries_total counter\n\
         jitgate_webhook_deliveries_total{{outcome=\"delivered\"}} {}\n\
         jitgate_webhook_deliveries_total{{outcome=\"failed\"}} {}\n\
         jitgate_webhook_deliveries_total{{outcome=\"dropped\"}} {}\n\
         # HELP jitgate_webhook_pending Webhook deliveries queued or being retried.\n\
         # TYPE jitgate_webhook_pending gauge\n\
         jitgate_webhook_pending {}\n",
        state.lifecycle.registry.len(),
        u8::from(audit.healthy),
        audit.failed_writes,
        hooks.delivered,
        hooks.failed,
        hooks.dropped,
        hooks.pending,
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
        sessions: state
            .lifecycle
            .registry
            .list()
            .into_iter()
            .map(SessionView::from)
            .collect(),
    })
}
