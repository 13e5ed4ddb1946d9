//! Live sessions, and how grant changes reach them.
//!
//! Every admitted session registers here with the grant it is bound to. The admin API
//! (through [`SessionRegistry::revoke_grant`] / [`SessionRegistry::set_grant_deadline`])
//! pushes changes into each session's `watch` channel; the session's task wakes at once
//! and enforces them. Nothing here polls.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use crate::reuse::ParkedUpstreams;

/// What `jitgate sessions` shows about one live session.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionInfo {
    pub session_id: Uuid,
    pub identity: String,
    pub target: String,
    pub role: String,
    pub grant_id: Uuid,
    pub client_addr: String,
    pub tls: bool,
    pub started_at: Timestamp,
    /// The grant's absolute expiry: the session is dropped at this instant.
    pub deadline: Timestamp,
    /// Upstream backend process id (also what the client was told).
    pub upstream_pid: Option<i32>,
}

/// Why a session must end before its deadline, pushed by the admin side.
#[derive(Clone, Debug, PartialEq)]
pub struct Revocation {
    pub by: String,
    pub reason: Option<String>,
    pub at: Timestamp,
}

/// The state a session enforces; changes arrive through a `watch` channel.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionControl {
    pub deadline: Timestamp,
    pub revoked: Option<Revocation>,
}

struct Entry {
    info: SessionInfo,
    control: watch::Sender<SessionControl>,
}

/// The set of live sessions of this proxy process, and the upstream connections parked
/// between sessions (both are bound to grants, so grant changes reach both).
#[derive(Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<Uuid, Entry>>,
    parked: ParkedUpstreams,
}

impl std::fmt::Debug for SessionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRegistry")
            .field("sessions", &self.len())
            .field("parked", &self.parked.len())
            .finish()
    }
}

impl SessionRegistry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A poisoned lock only means another thread panicked mid-update of a plain map;
    /// the map itself is still consistent, so keep serving.
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a session; it stays listed until the returned handle is dropped.
    pub fn register(self: &Arc<Self>, info: SessionInfo) -> SessionHandle {
        let (tx, rx) = watch::channel(SessionControl {
            deadline: info.deadline,
            revoked: None,
        });
        let id = info.session_id;
        self.lock().insert(id, Entry { info, control: tx });
        SessionHandle {
            registry: Arc::clone(self),
            id,
            control: rx,
        }
    }

    /// Live sessions, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut out: Vec<SessionInfo> = self.lock().values().map(|e| e.info.clone()).collect();
        out.sort_by_key(|s| (s.started_at, s.session_id));
        out
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Every grant this process holds something for: a live session or a parked
    /// upstream connection (what a change made elsewhere must be applied to).
    pub fn grant_ids(&self) -> BTreeSet<Uuid> {
        let mut ids: BTreeSet<Uuid> = self.lock().values().map(|e| e.info.grant_id).collect();
        ids.extend(self.parked.grant_ids());
        ids
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Upstream connections parked between sessions.
    pub fn parked(&self) -> &ParkedUpstreams {
        &self.parked
    }

    /// Tells every session bound to `grant_id` to end now, and closes the connections
    /// parked under it. Returns how many sessions were told.
    ///
    /// Sessions are told first: a session that is parking its connection checks for a
    /// revocation after parking it, so either it sees this one or its connection is
    /// already parked when the parked ones are closed below.
    pub fn revoke_grant(&self, grant_id: Uuid, revocation: Revocation) -> usize {
        let mut told = 0;
        {
            let sessions = self.lock();
            for entry in sessions.values().filter(|e| e.info.grant_id == grant_id) {
                entry
                    .control
                    .send_modify(|c| c.revoked = Some(revocation.clone()));
                told += 1;
            }
        }
        let closed = self.parked.close_grant(grant_id);
        if closed > 0 {
            tracing::info!(grant = %grant_id, closed, "closed parked upstream connections of a revoked grant");
        }
        told
    }

    /// Moves the deadline of every session bound to `grant_id` (grant extended or shortened).
    /// Parked connections of the grant follow it (after the sessions, as for revocation).
    pub fn set_grant_deadline(&self, grant_id: Uuid, deadline: Timestamp) -> usize {
        let mut told = 0;
        {
            let mut sessions = self.lock();
            for entry in sessions
                .values_mut()
                .filter(|e| e.info.grant_id == grant_id)
            {
                entry.info.deadline = deadline;
                entry.control.send_modify(|c| c.deadline = deadline);
                told += 1;
            }
        }
        self.parked.set_grant_deadline(grant_id, deadline);
        told
    }

    fn set_upstream_pid(&self, id: Uuid, pid: i32) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.info.upstream_pid = Some(pid);
        }
    }

    fn remove(&self, id: Uuid) {
        self.lock().remove(&id);
    }
}

/// A session's membership in the registry; dropping it deregisters the session.
pub struct SessionHandle {
    registry: Arc<SessionRegistry>,
    id: Uuid,
    control: watch::Receiver<SessionControl>,
}

impl SessionHandle {
    /// The channel the session `select!`s on for revocation and deadline changes.
    pub fn control(&mut self) -> &mut watch::Receiver<SessionControl> {
        &mut self.control
    }

    pub fn set_upstream_pid(&self, pid: i32) {
        self.registry.set_upstream_pid(self.id, pid);
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(grant: Uuid) -> SessionInfo {
        SessionInfo {
            session_id: Uuid::now_v7(),
            identity: "alice".into(),
            target: "prod".into(),
            role: "ro".into(),
            grant_id: grant,
            client_addr: "127.0.0.1:1".into(),
            tls: false,
            started_at: Timestamp::now(),
            deadline: Timestamp::now(),
            upstream_pid: None,
        }
    }

    #[tokio::test]
    async fn revoke_reaches_only_sessions_of_that_grant() {
        let reg = SessionRegistry::new();
        let g1 = Uuid::now_v7();
        let g2 = Uuid::now_v7();
        let mut a = reg.register(info(g1));
        let mut b = reg.register(info(g2));
        let rev = Revocation {
            by: "admin".into(),
            reason: None,
            at: Timestamp::now(),
        };
        assert_eq!(reg.revoke_grant(g1, rev.clone()), 1);
        a.control().changed().await.unwrap();
        assert_eq!(a.control().borrow().revoked, Some(rev));
        assert!(!b.control().has_changed().unwrap());
        drop(a);
        assert_eq!(reg.len(), 1);
        drop(b);
        assert!(reg.is_empty());
    }

    #[tokio::test]
    async fn deadline_change_updates_listing_and_channel() {
        let reg = SessionRegistry::new();
        let g = Uuid::now_v7();
        let mut a = reg.register(info(g));
        let later = Timestamp::now() + jiff::SignedDuration::from_secs(60);
        assert_eq!(reg.set_grant_deadline(g, later), 1);
        a.control().changed().await.unwrap();
        assert_eq!(a.control().borrow().deadline, later);
        assert_eq!(reg.list()[0].deadline, later);
        a.set_upstream_pid(42);
        assert_eq!(reg.list()[0].upstream_pid, Some(42));
    }
}
