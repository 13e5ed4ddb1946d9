//! Live sessions, and how grant changes reach them.
//!
//! Every admitted session registers here with the grant it is bound to. The admin API
//! (through [`SessionRegistry::revoke_grant`] / [`SessionRegistry::set_grant_deadline`])
//! pushes changes into each session's `watch` channel; the session's task wakes at once
//! and enforces them. Nothing here polls. Each entry also says by when its session must
//! have ended, for the [`crate::backstop`] that ends sessions whose own thread cannot.
//!
//! A session is registered only after its login read the grant store and opened the
//! upstream connection; a change pushed in that window finds no session to tell. So a
//! login holds an [`Admission`] from before it reads the store until it registers: the
//! registry counts every change it applies, and [`Admission::register`] says whether one
//! was applied meanwhile — then the session reads its grant again (`session::recheck`).
//! A session leaves the registry only once its backend is confirmed idle or gone, so a
//! revocation or expiry during its teardown still reaches it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::backstop_handle::BackstopHandle;
use crate::reuse::ParkedUpstreams;

/// How long after it had to end a session may take to begin ending before the backstop
/// cuts it. Sessions on a running thread begin within milliseconds (BENCHMARKS.md,
/// "Enforcement": max 46 ms from the deadline to the backend gone, with 1 000 sessions); the backstop cuts one that does not
/// (`crate::backstop`).
pub const GRACE: Duration = Duration::from_millis(500);

/// How long a session that has begun to end may take to finish. Its teardown waits up to
/// 2 s for the client to take the error while, at the same time, it ends the backend: up
/// to 2 s for an idle one to leave on Terminate, else (or when work is in flight) up to
/// 2 s to open a connection to terminate it and 2 s to see it go (`crate::stop`).
pub const ENDING_GRACE: Duration = Duration::from_secs(8);

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
    /// When the session must have ended: its deadline, or when it was told to end.
    due: Timestamp,
    revoked: bool,
    /// The session has begun to end (its relay returned).
    ending: bool,
    /// Taken by the backstop when it cuts the session.
    handle: Option<BackstopHandle>,
}

impl Entry {
    /// When the backstop cuts this session if it is still here.
    fn cut_at(&self) -> Option<Timestamp> {
        self.handle.as_ref()?;
        let grace = if self.ending { ENDING_GRACE } else { GRACE };
        self.due.checked_add(grace).ok()
    }
}

/// A session the backstop must end from outside (see [`SessionRegistry::overdue`]).
#[derive(Debug)]
pub struct Overdue {
    pub info: SessionInfo,
    /// Why it had to end early, if it was revoked (otherwise its deadline passed).
    pub revocation: Option<Revocation>,
    pub ending: bool,
    pub handle: BackstopHandle,
}

/// The set of live sessions of this proxy process, and the upstream connections parked
/// between sessions (both are bound to grants, so grant changes reach both).
pub struct SessionRegistry {
    sessions: Mutex<HashMap<Uuid, Entry>>,
    parked: ParkedUpstreams,
    /// Wakes the backstop when an entry's cut time is earlier than `backstop_at`.
    backstop: Notify,
    /// When the backstop will look next (Unix ms; `i64::MAX`: not before it is woken).
    /// Read and written only with `sessions` locked, so no change slips between the
    /// backstop's scan and its sleep.
    backstop_at: AtomicI64,
    /// Grant changes applied so far (revocations, moved deadlines), whether or not a
    /// live session was bound to the grant. Written with `sessions` locked.
    changes: AtomicU64,
    /// Logins holding an [`Admission`]: between their grant-store read and registration.
    admitting: AtomicUsize,
}

impl Default for SessionRegistry {
    fn default() -> Self {
        SessionRegistry {
            sessions: Mutex::default(),
            parked: ParkedUpstreams::default(),
            backstop: Notify::new(),
            backstop_at: AtomicI64::new(i64::MAX),
            changes: AtomicU64::new(0),
            admitting: AtomicUsize::new(0),
        }
    }
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

    /// Wakes the backstop if `entry` must be cut before it looks next (`sessions` locked).
    fn nudge(&self, entry: &Entry) {
        if let Some(at) = entry.cut_at() {
            if at.as_millisecond() < self.backstop_at.load(Ordering::Relaxed) {
                self.backstop.notify_one();
            }
        }
    }

    /// Taken by a login before it reads the grant store; see [`Admission`].
    pub fn admission(self: &Arc<Self>) -> Admission {
        self.admitting.fetch_add(1, Ordering::SeqCst);
        Admission {
            registry: Arc::clone(self),
            changes: self.changes.load(Ordering::SeqCst),
        }
    }

    /// Whether some login is between its grant-store read and its registration: a grant
    /// change made elsewhere must then be applied here even if no live session holds the
    /// grant yet (the login learns of it through [`Admission::register`]).
    pub fn admissions_in_progress(&self) -> bool {
        self.admitting.load(Ordering::SeqCst) > 0
    }

    /// Registers a session; it stays listed until the returned handle is dropped.
    /// `handle` lets the backstop end it should its thread stop running.
    pub fn register(
        self: &Arc<Self>,
        info: SessionInfo,
        handle: Option<BackstopHandle>,
    ) -> SessionHandle {
        self.register_since(info, handle, None).0
    }

    /// Registers a session and says whether a grant change was applied since `since`
    /// (a value of `changes`), under the same lock the changes take.
    fn register_since(
        self: &Arc<Self>,
        info: SessionInfo,
        handle: Option<BackstopHandle>,
        since: Option<u64>,
    ) -> (SessionHandle, bool) {
        let (tx, rx) = watch::channel(SessionControl {
            deadline: info.deadline,
            revoked: None,
        });
        let id = info.session_id;
        let entry = Entry {
            due: info.deadline,
            info,
            control: tx,
            revoked: false,
            ending: false,
            handle,
        };
        let mut sessions = self.lock();
        self.nudge(&entry);
        sessions.insert(id, entry);
        let changed = since.is_some_and(|c| self.changes.load(Ordering::SeqCst) != c);
        drop(sessions);
        let handle = SessionHandle {
            registry: Arc::clone(self),
            id,
            control: rx,
        };
        (handle, changed)
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
            let now = Timestamp::now();
            let mut sessions = self.lock();
            self.changes.fetch_add(1, Ordering::SeqCst);
            for entry in sessions
                .values_mut()
                .filter(|e| e.info.grant_id == grant_id)
            {
                self.revoke_entry(entry, &revocation, now);
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
            let now = Timestamp::now();
            let mut sessions = self.lock();
            self.changes.fetch_add(1, Ordering::SeqCst);
            for entry in sessions
                .values_mut()
                .filter(|e| e.info.grant_id == grant_id)
            {
                self.set_entry_deadline(entry, deadline, now);
                told += 1;
            }
        }
        self.parked.set_grant_deadline(grant_id, deadline);
        told
    }

    /// Tells one session to end now (`sessions` locked).
    fn revoke_entry(&self, entry: &mut Entry, revocation: &Revocation, now: Timestamp) {
        entry
            .control
            .send_modify(|c| c.revoked = Some(revocation.clone()));
        entry.revoked = true;
        entry.due = entry.due.min(now);
        self.nudge(entry);
    }

    /// Moves one session's deadline (`sessions` locked).
    fn set_entry_deadline(&self, entry: &mut Entry, deadline: Timestamp, now: Timestamp) {
        entry.info.deadline = deadline;
        entry.control.send_modify(|c| c.deadline = deadline);
        if !entry.revoked {
            // A deadline moved into the past is enforced from now.
            entry.due = deadline.max(now);
            self.nudge(entry);
        }
    }

    fn revoke_session(&self, id: Uuid, revocation: &Revocation) {
        if let Some(entry) = self.lock().get_mut(&id) {
            self.revoke_entry(entry, revocation, Timestamp::now());
        }
    }

    fn set_session_deadline(&self, id: Uuid, deadline: Timestamp) {
        if let Some(entry) = self.lock().get_mut(&id) {
            self.set_entry_deadline(entry, deadline, Timestamp::now());
        }
    }

    fn set_upstream_pid(&self, id: Uuid, pid: i32) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.info.upstream_pid = Some(pid);
        }
    }

    fn remove(&self, id: Uuid) {
        self.lock().remove(&id);
    }

    fn set_ending(&self, id: Uuid) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.ending = true;
        }
    }

    /// For the backstop: takes out the sessions that should have been ended by `now`
    /// (see [`crate::backstop`]) and returns the earliest time another one could be;
    /// the backstop is woken when a change makes that earlier.
    pub fn overdue(&self, now: Timestamp) -> (Vec<Overdue>, Option<Timestamp>) {
        let mut out = Vec::new();
        let mut next: Option<Timestamp> = None;
        let mut sessions = self.lock();
        for entry in sessions.values_mut() {
            let Some(at) = entry.cut_at() else { continue };
            if at > now {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            if let Some(handle) = entry.handle.take() {
                out.push(Overdue {
                    info: entry.info.clone(),
                    revocation: entry.control.borrow().revoked.clone(),
                    ending: entry.ending,
                    handle,
                });
            }
        }
        self.backstop_at.store(
            next.map_or(i64::MAX, |t| t.as_millisecond()),
            Ordering::Relaxed,
        );
        drop(sessions);
        (out, next)
    }

    /// Resolves when a change may have made the backstop's next look earlier.
    pub async fn backstop_woken(&self) {
        self.backstop.notified().await;
    }
}

/// A login between its grant-store read and its registration (see the module doc).
/// Dropping it without registering (a refused login) just ends the window.
pub struct Admission {
    registry: Arc<SessionRegistry>,
    /// The registry's change count before the grant store was read.
    changes: u64,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("changes", &self.changes)
            .finish()
    }
}

/// A session just registered by [`Admission::register`].
pub struct Registered {
    pub handle: SessionHandle,
    /// A grant change was applied between the grant-store read and the registration:
    /// it may concern this session's grant, which must be read again.
    pub stale: bool,
}

impl Admission {
    /// Registers the admitted session (see [`SessionRegistry::register`]).
    pub fn register(self, info: SessionInfo, handle: Option<BackstopHandle>) -> Registered {
        let (handle, stale) = self
            .registry
            .register_since(info, handle, Some(self.changes));
        Registered { handle, stale }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.registry.admitting.fetch_sub(1, Ordering::SeqCst);
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

    /// Ends this session as if its grant had been revoked (a revocation it missed).
    pub fn revoke(&self, revocation: &Revocation) {
        self.registry.revoke_session(self.id, revocation);
    }

    /// Moves this session's deadline (a change of its grant it missed).
    pub fn set_deadline(&self, deadline: Timestamp) {
        self.registry.set_session_deadline(self.id, deadline);
    }

    /// The session has begun to end (its relay returned): the backstop now gives it
    /// [`ENDING_GRACE`] to finish instead of [`GRACE`] to begin.
    pub fn set_ending(&self) {
        self.registry.set_ending(self.id);
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    impl SessionInfo {
        fn clone_with_new_id(&self) -> SessionInfo {
            SessionInfo {
                session_id: Uuid::now_v7(),
                ..self.clone()
            }
        }
    }

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
        let mut a = reg.register(info(g1), None);
        let mut b = reg.register(info(g2), None);
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

    /// A handle over real sockets (a loopback pair per side); the cancel goes nowhere.
    /// Returns the far ends, then the session's own ends (kept open, as a stalled
    /// session would keep them).
    async fn handle() -> (
        BackstopHandle,
        Vec<tokio::net::TcpStream>,
        Vec<ClientOrUpstream>,
    ) {
        handle_with(Arc::new(crate::gate::ClientGate::new(true))).await
    }

    async fn handle_with(
        gate: Arc<crate::gate::ClientGate>,
    ) -> (
        BackstopHandle,
        Vec<tokio::net::TcpStream>,
        Vec<ClientOrUpstream>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut peers = Vec::new();
        let mut ours = Vec::new();
        for _ in 0..2 {
            ours.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            peers.push(listener.accept().await.unwrap().0);
        }
        // No target configured: the backstop falls back to the cancel, which goes nowhere.
        let stop = Arc::new(crate::stop::unconfigured_target());
        let upstream = tokio_util::either::Either::Left(ours.pop().unwrap());
        let client = tokio_util::either::Either::Left(ours.pop().unwrap());
        let handle = BackstopHandle::new(&client, gate, &upstream, stop).unwrap();
        (handle, peers, vec![(client, upstream)])
    }

    type ClientOrUpstream = (
        crate::session::stream::ClientStream,
        crate::session::stream::UpstreamStream,
    );

    fn at(base: Timestamp, d: std::time::Duration) -> Timestamp {
        base.checked_add(d).unwrap()
    }

    #[tokio::test]
    async fn overdue_sessions_are_handed_to_the_backstop_once() {
        let reg = SessionRegistry::new();
        let now = Timestamp::now();
        let (e, _peers, _ours) = handle().await;
        let mut past = info(Uuid::now_v7());
        past.deadline = now - jiff::SignedDuration::from_secs(1);
        let _a = reg.register(past.clone(), Some(e));
        let mut later = info(Uuid::now_v7());
        later.deadline = now + jiff::SignedDuration::from_secs(60);
        let (e, _peers2, _ours2) = handle().await;
        let _b = reg.register(later.clone(), Some(e));
        // Without a handle a session is never cut.
        let _c = reg.register(past.clone_with_new_id(), None);

        let (cut, next) = reg.overdue(now);
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].info.session_id, past.session_id);
        assert_eq!(next, Some(at(later.deadline, GRACE)));
        // Taken: not handed over again.
        let (cut, _) = reg.overdue(now);
        assert!(cut.is_empty());
    }

    #[tokio::test]
    async fn a_session_that_began_to_end_gets_the_longer_grace() {
        let reg = SessionRegistry::new();
        let now = Timestamp::now();
        let (e, _peers, _ours) = handle().await;
        let mut s = info(Uuid::now_v7());
        s.deadline = now;
        let a = reg.register(s, Some(e));
        a.set_ending();
        assert!(reg.overdue(at(now, GRACE * 2)).0.is_empty());
        assert_eq!(reg.overdue(at(now, ENDING_GRACE)).0.len(), 1);
    }

    #[tokio::test]
    async fn revocation_makes_a_session_due_now_and_wakes_the_backstop() {
        let reg = SessionRegistry::new();
        let g = Uuid::now_v7();
        let (e, _peers, _ours) = handle().await;
        let mut s = info(g);
        s.deadline = Timestamp::now() + jiff::SignedDuration::from_secs(3600);
        let _a = reg.register(s, Some(e));
        // The backstop looked and will sleep for an hour.
        let (cut, next) = reg.overdue(Timestamp::now());
        assert!(cut.is_empty() && next.is_some());
        let rev = Revocation {
            by: "admin".into(),
            reason: None,
            at: Timestamp::now(),
        };
        let told = Timestamp::now();
        assert_eq!(reg.revoke_grant(g, rev), 1);
        tokio::time::timeout(std::time::Duration::from_secs(5), reg.backstop_woken())
            .await
            .expect("the backstop is woken");
        assert!(reg.overdue(told).0.is_empty(), "grace first");
        let later = at(Timestamp::now(), GRACE);
        assert_eq!(reg.overdue(later).0.len(), 1);
    }

    /// Everything `peer` receives until the end of its stream.
    async fn read_to_end(peer: &mut tokio::net::TcpStream) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            peer.read_to_end(&mut got),
        )
        .await
        .expect("the peer sees the end")
        .unwrap();
        got
    }

    fn farewell() -> crate::protocol::PgError {
        crate::protocol::PgError::fatal("57P01", "terminating connection: grant expired")
    }

    #[tokio::test]
    async fn the_cut_tells_the_client_and_closes_both_connections() {
        let (e, mut peers, _ours) = handle().await;
        let (told, stopped) = e.cut(&farewell()).await;
        assert!(told, "the client was told");
        // Nothing to terminate it with here: the fallback, and the record says so.
        assert_eq!(stopped.how, jitgate_audit::StopMethod::Cancel);
        assert!(!stopped.backend_gone);
        assert!(stopped.detail.is_some_and(|d| d.contains("pipelined")));
        let client = read_to_end(&mut peers[0]).await;
        let mut expected = bytes::BytesMut::new();
        crate::protocol::backend::error_response(&mut expected, &farewell());
        assert_eq!(client, expected.to_vec(), "one ErrorResponse, then the end");
        assert!(read_to_end(&mut peers[1]).await.is_empty());
    }

    #[tokio::test]
    async fn the_cut_writes_nothing_inside_a_message_or_after_the_sessions_own_error() {
        // The session's last write stopped inside a message.
        let gate = Arc::new(crate::gate::ClientGate::new(true));
        gate.begin().unwrap();
        let (e, mut peers, _ours) = handle_with(Arc::clone(&gate)).await;
        assert!(!e.cut(&farewell()).await.0);
        assert!(read_to_end(&mut peers[0]).await.is_empty());
        assert!(read_to_end(&mut peers[1]).await.is_empty());
        // The session sent its own final error (and is stuck in its teardown).
        let gate = Arc::new(crate::gate::ClientGate::new(true));
        gate.close();
        let (e, mut peers, _ours) = handle_with(gate).await;
        assert!(!e.cut(&farewell()).await.0);
        assert!(read_to_end(&mut peers[0]).await.is_empty());
        // TLS: the record layer is the session's.
        let (e, mut peers, _ours) =
            handle_with(Arc::new(crate::gate::ClientGate::new(false))).await;
        assert!(!e.cut(&farewell()).await.0);
        assert!(read_to_end(&mut peers[0]).await.is_empty());
    }

    #[tokio::test]
    async fn a_change_applied_between_admission_and_registration_is_reported() {
        let reg = SessionRegistry::new();
        let g = Uuid::now_v7();
        let rev = Revocation {
            by: "admin".into(),
            reason: None,
            at: Timestamp::now(),
        };
        // Nothing happened meanwhile: not stale.
        let quiet = reg.admission();
        assert!(reg.admissions_in_progress());
        let r = quiet.register(info(g), None);
        assert!(!r.stale);
        assert!(!reg.admissions_in_progress());
        // A revocation while the login was between the store and registration reaches no
        // session (there is none yet) — but the registration says so.
        let racing = reg.admission();
        assert_eq!(reg.revoke_grant(Uuid::now_v7(), rev.clone()), 0);
        let mut r2 = racing.register(info(g), None);
        assert!(r2.stale);
        // The session applies what it missed to itself only.
        r2.handle.revoke(&rev);
        assert_eq!(r2.handle.control().borrow().revoked, Some(rev));
        let mut first = r.handle;
        assert!(!first.control().has_changed().unwrap());
        // A refused login just ends its window.
        drop(reg.admission());
        assert!(!reg.admissions_in_progress());
    }

    #[tokio::test]
    async fn deadline_change_updates_listing_and_channel() {
        let reg = SessionRegistry::new();
        let g = Uuid::now_v7();
        let mut a = reg.register(info(g), None);
        let later = Timestamp::now() + jiff::SignedDuration::from_secs(60);
        assert_eq!(reg.set_grant_deadline(g, later), 1);
        a.control().changed().await.unwrap();
        assert_eq!(a.control().borrow().deadline, later);
        assert_eq!(reg.list()[0].deadline, later);
        a.set_upstream_pid(42);
        assert_eq!(reg.list()[0].upstream_pid, Some(42));
    }
}
