//! Bearer-token check in front of every admin route except `/v1/health`.
//!
//! The presented token and the configured one are both hashed with SHA-256 and the digests
//! compared with a branch-free fold, so neither the token's content nor its length shows in
//! the response time.

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

/// Middleware: 401 unless `Authorization: Bearer <admin token>`.
pub(crate) async fn require_token(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        None => ApiError::unauthorized(
            "missing admin token: send `Authorization: Bearer <token>` (the token configured \
             under admin: in the jitgate config)",
        )
        .into_response(),
        Some(token) if token_matches(token.as_bytes(), state.token.expose().as_bytes()) => {
            next.run(request).await
        }
        Some(_) => {
            tracing::warn!("admin API: request with a wrong admin token refused");
            ApiError::unauthorized("invalid admin token").into_response()
        }
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
