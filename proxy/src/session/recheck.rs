//! A grant change that landed while the session was logging in.
//!
//! A login reads the grant store, then opens the upstream connection, then registers the
//! session; a revocation or a moved deadline in between found no session to tell. When
//! the registry says a change was applied in that window
//! ([`crate::registry::Registered::stale`]), the session reads its grant again and
//! applies what the store says now, before the relay starts: a revoked grant ends it at
//! once (its client gets the same FATAL as any revoked session).

use jitgate_policy::{Grant, GrantState};

use super::ProxyContext;
use crate::registry::{Revocation, SessionHandle};

/// Who the audit and the client are told ended the session when no person did.
const SYSTEM_ACTOR: &str = "jitgate";

/// Brings the just-registered session in line with its grant as stored now. A store
/// that cannot be read ends the session (fail closed, as at admission).
pub async fn recheck(ctx: &ProxyContext, handle: &SessionHandle, admitted: &Grant) {
    let now = ctx.engine.now();
    let stored = match ctx.engine.get(admitted.id).await {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "grant store unavailable while confirming the grant; ending the session");
            handle.revoke(&Revocation {
                by: SYSTEM_ACTOR.to_owned(),
                reason: Some("the grant store could not be read to confirm the grant".into()),
                at: now,
            });
            return;
        }
    };
    match stored.state {
        GrantState::Approved => {
            if stored.expires_at != admitted.expires_at {
                tracing::info!(expires_at = %stored.expires_at, "the grant's deadline moved during login");
                handle.set_deadline(stored.expires_at);
            }
        }
        // Marked expired by the sweeper: its deadline has passed.
        GrantState::Expired => handle.set_deadline(stored.expires_at.min(now)),
        state => {
            tracing::info!(state = ?state, "the grant was revoked or withdrawn during login");
            handle.revoke(&Revocation {
                by: stored
                    .revoked_by
                    .clone()
                    .unwrap_or_else(|| SYSTEM_ACTOR.to_owned()),
                reason: stored.revoke_reason.clone(),
                at: stored.revoked_at.unwrap_or(now),
            });
        }
    }
}
