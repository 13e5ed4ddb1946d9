//! `POST /v1/login` and `GET /v1/whoami`: identities prove who they are with the same
//! password they use for psql, and get a short-lived token for the workflow routes.
//!
//! The password is checked against the identity's SCRAM verifier from the config (the
//! same PBKDF2 the proxy's login uses). An unknown identity runs the same computation
//! against a stand-in verifier and fails with the same message, so the answer does not
//! reveal which identities exist. Every failure is an `auth_failure` audit event,
//! written like the proxy's pre-authentication refusals (names cut, rate-limited, see
//! `jitgate_proxy::limits::refusals`). Attempts are rate-limited per client address and
//! per identity ([`super::throttle`]): 429 with `Retry-After` before any PBKDF2.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::{Extension, Json};
use jitgate_audit::{Event, EventBody};
use jitgate_proxy::auth::ScramVerifier;

use super::auth::{token_matches, Caller};
use super::error::ApiError;
use super::throttle::Throttled;
use super::types::{LoginBody, LoginView, WhoAmI};
use super::ApiState;

/// Whether `password` matches `verifier` (constant-time comparison of the StoredKey).
fn password_matches(verifier: &ScramVerifier, password: &str) -> bool {
    let candidate = ScramVerifier::from_password_with_salt(
        password.as_bytes(),
        &verifier.salt,
        verifier.iterations,
    );
    token_matches(&candidate.stored_key, &verifier.stored_key)
}

/// `POST /v1/login` → a token for the identity.
pub(crate) async fn login(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Result<Json<LoginView>, ApiError> {
    let Json(body) = body?;
    let identity = body.identity.trim().to_owned();
    if let Err(throttled) = state.login_limits.check(peer.ip(), &identity) {
        let (wait, setting, whom) = match throttled {
            Throttled::PerIp(w) => (w, "client_limits.api_logins_per_ip", "from this address"),
            Throttled::PerIdentity(w) => (
                w,
                "client_limits.api_logins_per_identity",
                "for this identity",
            ),
        };
        tracing::warn!(identity, %peer, setting, "API login rate-limited");
        audit_failure(
            &state,
            peer,
            &identity,
            &format!("API login: rate limit ({setting})"),
        )
        .await;
        return Err(ApiError::too_many_requests(
            format!(
                "too many login attempts {whom}; try again in {} s (limit: {setting} per minute)",
                wait.as_secs().max(1)
            ),
            wait,
        ));
    }
    let verifier = state
        .identities
        .get(&identity)
        .cloned()
        .unwrap_or_else(|| ScramVerifier::mock(&identity, &state.mock_secret));
    let password = body.password;
    // PBKDF2 takes milliseconds: keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || password_matches(&verifier, &password))
        .await
        .unwrap_or(false);
    let known = state.identities.contains_key(&identity);
    if !(ok && known) {
        let reason = if known {
            "API login: wrong password"
        } else {
            "API login: unknown identity"
        };
        tracing::warn!(identity, %peer, reason, "login refused");
        audit_failure(&state, peer, &identity, reason).await;
        return Err(ApiError::unauthorized(
            "login failed: wrong identity or password",
        ));
    }
    let (token, expires_at) = state
        .login_keys
        .issue(&identity, state.lifecycle.engine.now());
    tracing::info!(identity, %peer, %expires_at, "identity logged in to the API");
    Ok(Json(LoginView {
        identity,
        token,
        expires_at,
    }))
}

/// Records a failed or refused login (through the proxy's refusal audit: names cut,
/// rate-limited, counted when not written).
async fn audit_failure(state: &ApiState, peer: SocketAddr, identity: &str, reason: &str) {
    let event = Event::new(EventBody::AuthFailure {
        client_addr: peer.to_string(),
        reason: reason.to_owned(),
    })
    .with_identity(identity);
    if let Err(e) = state
        .refusal_audit
        .write(&state.lifecycle.audit, peer.ip(), event)
        .await
    {
        tracing::error!(error = %e, "failed login could not be audited");
    }
}

/// `GET /v1/whoami`.
pub(crate) async fn whoami(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Json<WhoAmI> {
    Json(match caller {
        Caller::Admin => WhoAmI {
            identity: None,
            kind: "admin".into(),
            groups: Vec::new(),
            expires_at: None,
        },
        Caller::Identity { name, expires_at } => WhoAmI {
            groups: state.lifecycle.engine.rules().groups_of(&name),
            identity: Some(name),
            kind: "identity".into(),
            expires_at: Some(expires_at),
        },
    })
}
