//! Who is calling: bearer-token checks in front of every route except `/v1/health` and
//! `/v1/login`.
//!
//! Two kinds of callers:
//! - the **administrator**, with the configured admin token: issue/revoke/list grants,
//!   sessions, metrics, cancel anything — but never approve (approvals are people's
//!   decisions, authorised by the policy rules);
//! - an **identity**, with a token from `jitgate login`: request, approve, deny, extend,
//!   cancel and review, as the rules allow.
//!
//! [`require_admin`] guards admin routes, [`require_caller`] the workflow routes; both
//! put the [`Caller`] into the request's extensions. The admin token is compared by
//! hashing both sides with SHA-256 and folding the digests without branches, so neither
//! the token's content nor its length shows in the response time; login tokens are
//! checked with a constant-time HMAC comparison.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::ApiState;

/// Whether `presented` equals `expected`, in time independent of where they differ.
pub(crate) fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(presented);
    let b = Sha256::digest(expected);
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Who is making a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Caller {
    /// The holder of the admin token.
    Admin,
    /// An identity logged in with `jitgate login`.
    Identity {
        name: String,
        /// When the login token ends.
        expires_at: jiff::Timestamp,
    },
}

impl Caller {
    /// The engine's view of the caller; an administrator acts under `admin_name`.
    pub fn actor(&self, admin_name: &str) -> jitgate_policy::Actor {
        match self {
            Caller::Admin => jitgate_policy::Actor::Admin(admin_name.to_owned()),
            Caller::Identity { name, .. } => jitgate_policy::Actor::Identity(name.clone()),
        }
    }
}

fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

/// The caller behind `token`, if it is the admin token or a valid login token.
fn identify(state: &ApiState, token: &str) -> Option<Caller> {
    if super::token::is_login_token(token) {
        let claims = state
            .login_keys
            .verify(token, state.lifecycle.engine.now())?;
        // A token of an identity removed from the config no longer works.
        state
            .lifecycle
            .engine
            .catalog()
            .identities
            .contains(&claims.identity)
            .then_some(Caller::Identity {
                name: claims.identity,
                expires_at: claims.expires_at,
            })
    } else if token_matches(token.as_bytes(), state.token.expose().as_bytes()) {
        Some(Caller::Admin)
    } else {
        None
    }
}

/// Middleware: 401 unless `Authorization: Bearer <admin token>`; 403 for a login token.
pub(crate) async fn require_admin(
    State(state): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(token) = bearer(&request) else {
        return ApiError::unauthorized(
            "missing admin token: send `Authorization: Bearer <token>` (the token configured \
             under admin: in the jitgate config)",
        )
        .into_response();
    };
    match identify(&state, token) {
        Some(Caller::Admin) => {
            request.extensions_mut().insert(Caller::Admin);
            next.run(request).await
        }
        Some(Caller::Identity { name, .. }) => ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            format!(
                "{name} is logged in as an identity; this is an administrator operation \
                 (it needs the admin token)"
            ),
        )
        .into_response(),
        None => {
            tracing::warn!("admin API: request with a wrong admin token refused");
            ApiError::unauthorized("invalid admin token").into_response()
        }
    }
}

/// Middleware: 401 unless the admin token or a valid `jitgate login` token.
pub(crate) async fn require_caller(
    State(state): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(token) = bearer(&request) else {
        return ApiError::unauthorized(
            "not logged in: run `jitgate login` (or send `Authorization: Bearer <token>`)",
        )
        .into_response();
    };
    match identify(&state, token) {
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => ApiError::unauthorized("invalid or expired token: run `jitgate login` again")
            .into_response(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::token_matches;

    #[test]
    fn compares_exactly() {
        assert!(token_matches(b"secret-token-123", b"secret-token-123"));
        assert!(!token_matches(b"secret-token-124", b"secret-token-123"));
        assert!(!token_matches(b"secret-token-12", b"secret-token-123"));
        assert!(!token_matches(b"", b"secret-token-123"));
    }
}
